package natsbench_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferrymq/ferry/bench/natsbench"
	"github.com/ferrymq/ferry/core/bench"
)

// A tiny run of each workload on an embedded JetStream, at both durability
// levels: every message counted OK, latencies where they should be.
func TestWorkloads(t *testing.T) {
	for _, syncAlways := range []bool{false, true} {
		srv, err := natsbench.StartServer(natsbench.ServerOptions{SyncAlways: syncAlways, StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		s, err := natsbench.Connect(ctx, "jetstream", srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			w       bench.Workload
			latency bool
		}{
			{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Sync, Count: 100}, true},
			{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Sync, Producers: 4, Count: 101}, true},
			{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Async, Inflight: 16, Count: 300}, true},
			{bench.Workload{Kind: bench.Consume, Topic: "events", Count: 500, Preload: true}, false},
			{bench.Workload{Kind: bench.Consume, Topic: "events", Count: 400, Delivery: bench.Push, Consumers: 2}, false},
			{bench.Workload{Kind: bench.EndToEnd, Topic: "events", Mode: bench.Async, Count: 200}, true},
		} {
			w := c.w.WithDefaults()
			r, err := s.Run(ctx, w, bench.NewRecorder())
			if err != nil {
				t.Fatalf("%s: %v", w.Name, err)
			}
			if r.Messages != w.Count || r.Failed() != 0 || r.Rate <= 0 {
				t.Errorf("sync always %v, %s: %d messages of %d, rate %v, errors %s", syncAlways, w.Name, r.Messages, w.Count, r.Rate, r.Errors())
			}
			if (r.Latency != nil) != c.latency {
				t.Errorf("%s: latency %+v", w.Name, r.Latency)
			}
		}
		if _, err := s.Run(ctx, bench.Workload{Kind: bench.Produce, Topic: "t", Mode: bench.Oneway}.WithDefaults(), bench.NewRecorder()); err == nil {
			t.Error("oneway: no error")
		}
		cancel()
		s.Close()
		srv.Close()
	}
}
