package engine_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// BenchmarkConsume measures how fast one consumer gets and acknowledges
// (one ack per message, offsets committed every 100ms) 200,000 messages of
// 1 KiB already stored in a node's memory store, over the grpc transport on
// loopback: push (Consume, the consumer fetches ahead) and pull (Fetch
// batches, Ack each). Each iteration is a new group reading the whole topic.
// Plugins in-process and as subprocesses (the default deployment). Run:
//
//	go test -run '^$' -bench Consume -benchtime 1x -count 5 ./core/engine/
//
// FERRY_BENCH_MESSAGES changes the message count.
func BenchmarkConsume(b *testing.B) {
	total := 200_000
	if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_MESSAGES")); err == nil && v > 0 {
		total = v
	}
	for _, mode := range []string{"inprocess", "subprocess"} {
		b.Run("plugins="+mode, func(b *testing.B) {
			cfg, err := config.LoadBytes("bench.yaml", []byte(`
name: bench
topics: [{name: t, queues: 4}]
`))
			if err != nil {
				b.Fatal(err)
			}
			cfg.Node.DataDir = b.TempDir()
			cfg.Plugins.Mode = mode
			cfg.Plugins.Transport.Config = map[string]any{"listen": ferrytest.FreeAddr(b)}
			e, err := engine.Start(context.Background(), cfg, engine.Options{Registry: builtin.Registry(), PluginExe: ferrytest.Binary(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close(context.Background())
			c, err := client.Dial(context.Background(), e.Address())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			fill(b, c, total)
			for _, delivery := range []string{"push", "pull"} {
				b.Run("delivery="+delivery, func(b *testing.B) {
					var rates []float64
					for i := 0; b.Loop(); i++ {
						group := fmt.Sprintf("bench-%s-%d-%d", delivery, time.Now().UnixNano(), i)
						start := time.Now()
						if delivery == "push" {
							consumePush(b, c, group, total)
						} else {
							consumePull(b, c, group, total)
						}
						rates = append(rates, float64(total)/time.Since(start).Seconds())
					}
					var sum float64
					for _, r := range rates {
						sum += r
					}
					b.ReportMetric(sum/float64(len(rates)), "msgs/s")
				})
			}
		})
	}
}

// fill stores n messages of 1 KiB in topic t.
func fill(b *testing.B, c *client.Client, n int) {
	b.Helper()
	p := c.NewProducer(client.ProducerOptions{})
	body := make([]byte, 1024)
	const batch = 1000
	msgs := make([]client.Message, batch)
	for i := range msgs {
		msgs[i] = client.Message{Topic: "t", Body: body}
	}
	for sent := 0; sent < n; sent += batch {
		if _, err := p.SendBatchSync(context.Background(), msgs[:min(batch, n-sent)]); err != nil {
			b.Fatal(err)
		}
	}
}

func consumePush(b *testing.B, c *client.Client, group string, n int) {
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: group})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var got atomic.Int64
	err = cons.Consume(ctx, func(context.Context, *client.Delivery) error {
		if got.Add(1) == int64(n) {
			cancel()
		}
		return nil // acknowledges this message
	})
	if err != nil || got.Load() < int64(n) {
		b.Fatalf("push: %d of %d, %v", got.Load(), n, err)
	}
}

func consumePull(b *testing.B, c *client.Client, group string, n int) {
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: group})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := cons.Start(ctx); err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < n {
		ds, err := cons.Fetch(ctx, 1024)
		if err != nil {
			b.Fatalf("pull: %d of %d, %v", got, n, err)
		}
		for _, d := range ds {
			d.Ack()
		}
		got += len(ds)
	}
	if err := cons.Close(); err != nil {
		b.Fatal(err)
	}
}
