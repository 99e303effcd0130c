package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/bench"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// startBroker starts pipelines/broker.yaml embedded (file storage, flush
// async) and returns a Ferry system on it.
func startBroker(t *testing.T, mode string) *bench.Ferry {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "..", "pipelines", "broker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	opts := bench.EmbeddedOptions{
		Registry: builtin.Registry(), Mode: mode, DataDir: t.TempDir(),
		Storage: map[string]any{"flush": "async"},
		Logger:  hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: io.Discard}),
	}
	if mode == pluginhost.ModeSubprocess {
		opts.PluginExe = ferrytest.Binary(t)
	}
	e, err := bench.StartEmbedded(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	c, err := client.Dial(context.Background(), e.Address())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &bench.Ferry{Client: c}
}

func run(t *testing.T, s bench.System, w bench.Workload) *bench.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w = w.WithDefaults()
	t0 := time.Now()
	r, err := s.Run(ctx, w, bench.NewRecorder())
	t.Logf("%s took %v", w.Name, time.Since(t0))
	if err != nil {
		t.Fatalf("%s: %v", w.Name, err)
	}
	var out bytes.Buffer
	_ = bench.WriteTable(&out, []*bench.Result{r})
	t.Logf("%s\n%s", w.Name, out.String())
	return r
}

// A tiny run of each workload against an embedded broker: every message is
// counted OK, rates are positive, latencies are measured where they should.
func TestWorkloadsEmbedded(t *testing.T) {
	f := startBroker(t, pluginhost.ModeInProcess)
	cases := []struct {
		w       bench.Workload
		want    int64
		latency bool
	}{
		{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Sync, Count: 200}, 200, true},
		{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Sync, Producers: 4, Count: 203}, 203, true},
		{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Async, Inflight: 32, Count: 500}, 500, true},
		{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Oneway, Count: 300}, 300, false},
		{bench.Workload{Kind: bench.Produce, Topic: "orders", Mode: bench.Async, Duration: 200 * time.Millisecond}, -1, true},
		{bench.Workload{Kind: bench.Consume, Topic: "events", Count: 700, Preload: true, Delivery: bench.Pull}, 700, false},
		{bench.Workload{Kind: bench.Consume, Topic: "events", Count: 500, Delivery: bench.Push, Consumers: 2}, 500, false},
		{bench.Workload{Kind: bench.EndToEnd, Topic: "events", Mode: bench.Async, Count: 400, Delivery: bench.Pull}, 400, true},
		{bench.Workload{Kind: bench.EndToEnd, Topic: "orders", Mode: bench.Sync, Producers: 2, Count: 100, Delivery: bench.Push}, 100, true},
	}
	for _, c := range cases {
		r := run(t, f, c.w)
		name := c.w.WithDefaults().Name
		if c.want >= 0 && r.Messages != c.want {
			t.Errorf("%s: %d messages counted, want %d (statuses %v)", name, r.Messages, c.want, r.Statuses)
		}
		if r.Messages == 0 || r.Rate <= 0 || r.MBps <= 0 {
			t.Errorf("%s: messages %d, rate %v, MB/s %v", name, r.Messages, r.Rate, r.MBps)
		}
		if r.Failed() != 0 {
			t.Errorf("%s: failures: %s", name, r.Errors())
		}
		if got := r.Latency != nil; got != c.latency {
			t.Errorf("%s: latency measured %v, want %v", name, got, c.latency)
		}
		if l := r.Latency; l != nil && !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("%s: percentiles out of order: %+v", name, l)
		}
	}
}

// The subprocess build runs the workloads too (one of each kind).
func TestWorkloadsSubprocess(t *testing.T) {
	f := startBroker(t, pluginhost.ModeSubprocess)
	for _, w := range []bench.Workload{
		{Kind: bench.Produce, Topic: "orders", Mode: bench.Async, Count: 300},
		{Kind: bench.Consume, Topic: "orders", Count: 300},
		{Kind: bench.EndToEnd, Topic: "orders", Mode: bench.Sync, Count: 50},
	} {
		if r := run(t, f, w); r.Messages != w.Count || r.Failed() != 0 {
			t.Errorf("%s: %d messages, statuses %v", w.WithDefaults().Name, r.Messages, r.Statuses)
		}
	}
}

// Errors a user makes are reported before anything runs.
func TestRunErrors(t *testing.T) {
	f := startBroker(t, pluginhost.ModeInProcess)
	ctx := context.Background()
	for _, c := range []struct {
		w    bench.Workload
		want string
	}{
		{bench.Workload{Kind: bench.Produce, Topic: "nope"}, `topic "nope": not found: the broker has events, orders`},
		{bench.Workload{Kind: "fly", Topic: "orders"}, "kind must be produce, consume or e2e"},
		{bench.Workload{Kind: bench.Consume, Topic: "orders", Duration: time.Second}, "consume takes a count"},
		{bench.Workload{Kind: bench.EndToEnd, Topic: "orders", Mode: bench.Oneway}, "e2e needs acks"},
		{bench.Workload{Kind: bench.EndToEnd, Topic: "orders", Size: 8}, "at least 16 bytes"},
		{bench.Workload{Kind: bench.Consume, Topic: "events", Count: 1 << 40}, "fewer than the 1099511627776 to consume (preload them)"},
	} {
		_, err := f.Run(ctx, c.w.WithDefaults(), bench.NewRecorder())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to contain %q", c.w, err, c.want)
		}
	}
}

func TestLabel(t *testing.T) {
	for _, c := range []struct {
		w    bench.Workload
		want string
	}{
		{bench.Workload{Kind: bench.Produce}, "produce sync"},
		{bench.Workload{Kind: bench.Produce, Producers: 16}, "produce sync x16"},
		{bench.Workload{Kind: bench.Produce, Mode: bench.Async, Inflight: 256}, "produce async w256"},
		{bench.Workload{Kind: bench.Consume, Delivery: bench.Push, Consumers: 2}, "consume push x2"},
		{bench.Workload{Kind: bench.EndToEnd, Mode: bench.Async}, "e2e async w256 / pull"},
	} {
		if got := c.w.WithDefaults().Name; got != c.want {
			t.Errorf("%+v: label %q, want %q", c.w, got, c.want)
		}
	}
}

// The recorder's percentiles come from an HDR histogram (within 0.1%), and
// statuses other than OK and SENT are failures.
func TestRecorder(t *testing.T) {
	rec := bench.NewRecorder()
	for i := 1; i <= 1000; i++ {
		rec.Record(bench.StatusOK, 100, time.Duration(i)*time.Microsecond)
	}
	rec.Record("UNAVAILABLE", 100, 0)
	rec.Record("FLUSH_TIMEOUT", 100, 0)
	rec.Record("UNAVAILABLE", 100, 0)
	r := rec.Result("s", bench.Workload{Name: "w", Kind: bench.Produce, Size: 100}, time.Second)
	if r.Messages != 1000 || r.Bytes != 100000 || r.Rate != 1000 || r.MBps != 0.1 {
		t.Errorf("messages %d bytes %d rate %v MB/s %v", r.Messages, r.Bytes, r.Rate, r.MBps)
	}
	near := func(got, want time.Duration) bool { return got >= want && got <= want+want/500 }
	l := r.Latency
	if !near(l.P50, 500*time.Microsecond) || !near(l.P90, 900*time.Microsecond) || !near(l.P99, 990*time.Microsecond) ||
		!near(l.P999, 999*time.Microsecond) || !near(l.Max, time.Millisecond) || l.Count != 1000 {
		t.Errorf("latency %+v", l)
	}
	if got := r.Errors(); got != "FLUSH_TIMEOUT 1, UNAVAILABLE 2" {
		t.Errorf("errors %q", got)
	}
	if r.Failed() != 3 {
		t.Errorf("failed %d", r.Failed())
	}
}

// Tables print every column a user reads; JSON round-trips with the
// latencies in microseconds.
func TestOutput(t *testing.T) {
	r := &bench.Result{
		Workload: "produce sync", Kind: bench.Produce, Size: 1024, Messages: 58760, Bytes: 58760 * 1024,
		Elapsed: 10 * time.Second, Rate: 5876, MBps: 6.017,
		Latency:  &bench.Latency{Count: 58760, P50: 147 * time.Microsecond, P90: 201 * time.Microsecond, P99: 358 * time.Microsecond, P999: 1200 * time.Microsecond, Max: 12 * time.Millisecond, Mean: 150 * time.Microsecond},
		Statuses: map[string]int64{"OK": 58760, "UNAVAILABLE": 2},
	}
	var tab bytes.Buffer
	if err := bench.WriteTable(&tab, []*bench.Result{r, {Workload: "consume pull", Messages: 5, Elapsed: time.Second, Rate: 5}}); err != nil {
		t.Fatal(err)
	}
	want := `workload       msgs   time  msgs/s  MB/s    p50    p90    p99   p99.9     max  errors
produce sync  58760  10.0s   5,876   6.0  147µs  201µs  358µs  1.20ms  12.0ms  UNAVAILABLE 2
consume pull      5  1.00s       5   0.0      -      -      -       -       -  0
`
	if got := tab.String(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
	var js bytes.Buffer
	if err := bench.WriteJSON(&js, []*bench.Result{r}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"p50_us": 147`, `"p99_9_us": 1200`, `"msgs_per_sec": 5876`, `"elapsed_s": 10`, `"UNAVAILABLE": 2`} {
		if !strings.Contains(js.String(), s) {
			t.Errorf("JSON lacks %s:\n%s", s, js.String())
		}
	}
	var back struct{ Results []*bench.Result }
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Results[0]; got.Elapsed != r.Elapsed || *got.Latency != *r.Latency || got.Rate != r.Rate {
		t.Errorf("round trip: %+v", got)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 57871.4: "57,871", 1234567: "1,234,567", -1500: "-1,500"} {
		if got := bench.FormatCount(n); got != want {
			t.Errorf("FormatCount(%v) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{147 * time.Microsecond: "147µs", 1500 * time.Nanosecond: "1.50µs", 4300 * time.Microsecond: "4.30ms", 12 * time.Second: "12.0s"} {
		if got := bench.FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// A consume run whose messages are gone (the store dropped them) ends after
// DrainTimeout without progress and counts what it did not get.
func TestConsumeStall(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.LoadBytes(filepath.Join(dir, "p.yaml"), []byte(`name: stall
plugins:
  mode: inprocess
  storage: {type: memory, config: {max_messages: 10}}
  transport: {type: grpc}
topics: [{name: t, queues: 1}]
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := bench.StartEmbedded(context.Background(), cfg, bench.EmbeddedOptions{Registry: builtin.Registry(), DataDir: dir,
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: io.Discard})})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	c, err := client.Dial(context.Background(), e.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := bench.Workload{Kind: bench.Consume, Topic: "t", Count: 50, Preload: true, DrainTimeout: 300 * time.Millisecond}
	r := run(t, &bench.Ferry{Client: c}, w)
	if r.Messages != 10 || r.Statuses["NOT_CONSUMED"] != 40 {
		t.Errorf("%d consumed, statuses %v; want 10 and NOT_CONSUMED 40", r.Messages, r.Statuses)
	}
}
