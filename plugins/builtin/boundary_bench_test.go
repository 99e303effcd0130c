package builtin_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// BenchmarkStorageAppend measures appends of 1 KiB messages through the
// storage boundary, the plugin linked in-process against the same plugin in
// its own process on the ring data plane (subprocess) and on gRPC
// (subprocess-grpc), at several batch sizes. It drives the store as the
// broker does: one goroutine issues appends in order, each append's
// durability is awaited on its own goroutine, 64 in flight; inflight=1 is
// one append at a time (a sync producer's round trip).
//
// The memory store costs almost nothing in-process, so its ratio is the
// boundary's cost alone; the file store (flush: async) is the realistic one.
//
//	go test -run '^$' -bench StorageAppend -count 5 ./plugins/builtin/
func BenchmarkStorageAppend(b *testing.B) {
	stores := []struct{ typ, config string }{
		{"memory", `{"max_messages": 65536}`},
		{"file", `{"flush": "async", "segment_bytes": "256MiB", "retention_bytes": "1GiB"}`},
	}
	for _, st := range stores {
		for _, shape := range []struct{ batch, inflight int }{{1, 1}, {1, 64}, {16, 64}, {256, 64}} {
			for _, mode := range []string{pluginhost.ModeInProcess, pluginhost.ModeSubprocess, "subprocess-grpc"} {
				name := fmt.Sprintf("%s/batch=%d", st.typ, shape.batch)
				if shape.inflight != 64 {
					name += fmt.Sprintf("/inflight=%d", shape.inflight)
				}
				b.Run(name+"/"+mode, func(b *testing.B) {
					benchAppend(b, mode, st.typ, st.config, shape.batch, shape.inflight)
				})
			}
		}
	}
}

// startStorage starts a storage plugin of typ in mode (or on gRPC:
// "subprocess-grpc") for a benchmark, stopped at its end.
func startStorage(b *testing.B, mode, typ, config string) sdk.Storage {
	dataPlane := pluginhost.DataPlaneRing
	if mode == "subprocess-grpc" {
		mode, dataPlane = pluginhost.ModeSubprocess, pluginhost.DataPlaneGRPC
	}
	host, err := pluginhost.New(builtin.Registry(), pluginhost.Options{
		Mode: mode, DataPlane: dataPlane, Exe: ferrytest.Binary(b), Logger: hclog.NewNullLogger(),
		Env: &sdk.Environment{Pipeline: "bench", Node: "bench", DataDir: b.TempDir()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(host.Close)
	inst, err := host.Start(context.Background(), sdk.KindStorage, typ, []byte(config))
	if err != nil {
		b.Fatal(err)
	}
	impl, _, _ := inst.Current()
	return impl.(sdk.Storage)
}

func benchAppend(b *testing.B, mode, typ, config string, batch, inflight int) {
	st := startStorage(b, mode, typ, config)
	body := make([]byte, 1024)
	ctx := context.Background()
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var failed error
	var failMu sync.Mutex
	b.SetBytes(int64(batch * len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	id := 0
	for i := 0; i < b.N; i++ {
		msgs := make([]*sdk.Message, batch)
		for j := range msgs {
			id++
			msgs[j] = &sdk.Message{Id: "b-" + strconv.Itoa(id), Topic: "bench", Queue: int32(j % 4), Body: body}
		}
		sem <- struct{}{}
		wait, err := st.Append(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := wait(ctx); err != nil {
				failMu.Lock()
				failed = err
				failMu.Unlock()
			}
			<-sem
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "msgs/s")
}

// BenchmarkStorageRead measures reads of 1 KiB messages, 100 a read, through
// the storage boundary, the plugin linked in-process against the same plugin
// in its own process on the ring data plane (subprocess) and on gRPC
// (subprocess-grpc): four readers, one per queue, each reading its queue
// from the start again and again, as consumers catching up do. The file
// store answers reads on the ring in wire form (sdk.WireReader).
//
//	go test -run '^$' -bench StorageRead -count 5 ./plugins/builtin/
func BenchmarkStorageRead(b *testing.B) {
	const perQueue, queues, batch = 5000, 4, 100
	for _, st := range []struct{ typ, config string }{
		{"memory", `{"max_messages": 65536}`},
		{"file", `{"flush": "async", "segment_bytes": "256MiB", "retention_bytes": "1GiB"}`},
	} {
		for _, mode := range []string{pluginhost.ModeInProcess, pluginhost.ModeSubprocess, "subprocess-grpc"} {
			b.Run(st.typ+"/"+mode, func(b *testing.B) {
				st := startStorage(b, mode, st.typ, st.config)
				ctx := context.Background()
				body := make([]byte, 1024)
				for q := range queues {
					for i := 0; i < perQueue; i += batch {
						msgs := make([]*sdk.Message, batch)
						for j := range msgs {
							msgs[j] = &sdk.Message{Id: fmt.Sprintf("r-%d-%d", q, i+j), Topic: "bench", Queue: int32(q), Body: body}
						}
						wait, err := st.Append(ctx, msgs)
						if err != nil {
							b.Fatal(err)
						}
						if _, err := wait(ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.SetBytes(int64(batch * len(body)))
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				var failed error
				var failMu sync.Mutex
				var read int64
				for q := range queues {
					n := b.N / queues
					if q < b.N%queues {
						n++
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						off := int64(0)
						for range n {
							resp, err := st.Read(ctx, &sdk.ReadRequest{Topic: "bench", Queue: int32(q), Offset: off, MaxMessages: batch})
							if err == nil && len(resp.Messages) != batch {
								err = fmt.Errorf("read %d messages at %d, want %d", len(resp.Messages), off, batch)
							}
							if err != nil {
								failMu.Lock()
								failed = err
								failMu.Unlock()
								return
							}
							failMu.Lock()
							read += batch
							failMu.Unlock()
							off = (off + batch) % perQueue
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if failed != nil {
					b.Fatal(failed)
				}
				b.ReportMetric(float64(read)/elapsed.Seconds(), "msgs/s")
			})
		}
	}
}
