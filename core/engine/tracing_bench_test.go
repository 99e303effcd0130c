package engine_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// BenchmarkTracingOverhead measures async produce throughput (1 KiB, memory
// storage, plugins in their own processes) with tracing off, sampled at 1 %
// and at 100 %, exporting to a real Jaeger (FERRY_OTLP_ENDPOINT; the sampled
// cases skip without one):
//
//	eval "$(scripts/jaeger.sh start)"
//	go test -run '^$' -bench TracingOverhead -count 5 ./core/engine/
func BenchmarkTracingOverhead(b *testing.B) {
	for _, c := range []struct {
		name  string
		ratio float64
	}{{"off", -1}, {"sampled=1%", 0.01}, {"sampled=100%", 1}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := quickstart(b, pluginhost.ModeSubprocess, 1)
			cfg.Generators, cfg.Flows = nil, nil
			if c.ratio >= 0 {
				if os.Getenv(jaegertest.EnvOTLP) == "" {
					b.Skip("no Jaeger: set " + jaegertest.EnvOTLP)
				}
				cfg.Tracing.Exporter, cfg.Tracing.Endpoint = "otlp", os.Getenv(jaegertest.EnvOTLP)
				cfg.Tracing.SampleRatio, cfg.Tracing.ServiceName = c.ratio, "ferry-bench"
			}
			e := start(b, cfg)
			ctx := context.Background()
			cl, err := client.Dial(ctx, e.Address())
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			p := cl.NewProducer(client.ProducerOptions{})
			body := make([]byte, 1024)
			var wg sync.WaitGroup
			var failed error
			var mu sync.Mutex
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				wg.Add(1)
				err := p.SendAsync(ctx, client.Message{Topic: "orders", Body: body}, func(_ client.Result, err error) {
					if err != nil {
						mu.Lock()
						failed = err
						mu.Unlock()
					}
					wg.Done()
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer()
			if failed != nil {
				b.Fatal(failed)
			}
		})
	}
}
