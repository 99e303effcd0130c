package client_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// BenchmarkProduce measures the end-to-end produce rate of 1 KiB messages
// against a real node (file storage and grpc transport in their own
// processes), under flush: async and flush: sync, for each send mode:
//
//	sync-1     one producer calling SendSync in a loop (rate, p50/p99 latency)
//	sync-16    16 goroutines calling SendSync
//	async-256  SendAsync with a window of 256 messages (rate, p50/p99 from
//	           SendAsync to callback), Flush at the end
//	oneway     SendOneway, timed until the broker has stored them all
//
//	go test -run '^$' -bench Produce -count 5 ./core/client/
func BenchmarkProduce(b *testing.B) {
	for _, flush := range []string{"async", "sync"} {
		b.Run("flush="+flush, func(b *testing.B) {
			e, _ := startProdNode(b, b.TempDir(), ferrytest.FreeAddr(b), flush)
			c := dialProdNode(b, e.Address())
			body := make([]byte, 1024)
			msg := client.Message{Topic: "t", Body: body}

			b.Run("sync-1", func(b *testing.B) {
				p := c.NewProducer(client.ProducerOptions{})
				ctx := context.Background()
				lat := make([]time.Duration, 0, b.N)
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					t0 := time.Now()
					if _, err := p.SendSync(ctx, msg); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				reportRate(b, start)
				reportLatency(b, lat)
			})

			b.Run("sync-16", func(b *testing.B) {
				p := c.NewProducer(client.ProducerOptions{})
				ctx := context.Background()
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for g := range 16 {
					n := b.N / 16
					if g < b.N%16 {
						n++
					}
					wg.Go(func() {
						for range n {
							if _, err := p.SendSync(ctx, msg); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				reportRate(b, start)
			})

			b.Run("async-256", func(b *testing.B) {
				p := c.NewProducer(client.ProducerOptions{MaxInflight: 256})
				ctx := context.Background()
				lat := make([]time.Duration, b.N)
				var failed sync.Once
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					t0 := time.Now()
					err := p.SendAsync(ctx, msg, func(_ client.Result, err error) {
						lat[i] = time.Since(t0)
						if err != nil {
							failed.Do(func() { b.Error(err) })
						}
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				if err := p.Close(ctx); err != nil {
					b.Fatal(err)
				}
				reportRate(b, start)
				reportLatency(b, lat)
			})

			b.Run("oneway", func(b *testing.B) {
				p := c.NewProducer(client.ProducerOptions{})
				ctx := context.Background()
				before := storedTotal(b, c)
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					if _, err := p.SendOneway(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}
				// End to end: until the broker stored them all.
				deadline := time.Now().Add(time.Minute)
				for storedTotal(b, c) < before+int64(b.N) {
					if time.Now().After(deadline) {
						b.Fatalf("oneway: %d of %d stored after a minute", storedTotal(b, c)-before, b.N)
					}
					time.Sleep(time.Millisecond)
				}
				reportRate(b, start)
			})
		})
	}
}

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-us")
	b.ReportMetric(q(0.99), "p99-us")
}

// storedTotal sums the messages of topic t on the client's broker.
func storedTotal(b *testing.B, c *client.Client) int64 {
	var refs []*ferryv1.QueueRef
	for q := range int32(prodQueues) {
		refs = append(refs, &ferryv1.QueueRef{Topic: "t", Queue: q})
	}
	offs, err := c.GetOffsets(context.Background(), "", refs)
	if err != nil {
		b.Fatal(fmt.Errorf("get offsets: %w", err))
	}
	var n int64
	for _, o := range offs {
		n += o.End - o.Start
	}
	return n
}
