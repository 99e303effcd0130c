package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Every metric the broker, engine and plugin host record shows on
// /metrics with its labels and value, beside the Go runtime's.
func TestMetricsEndpoint(t *testing.T) {
	m := NewMetrics(prometheus.Labels{"pipeline": "quickstart"})
	m.Appended("orders", 3)
	m.Appended("orders", 2)
	m.Appended("orders", 0)
	m.AppendLatency(3 * time.Millisecond)
	m.Consumed("orders", "counters", 4)
	m.Flushed(2 * time.Millisecond)
	m.Flushed(40 * time.Millisecond)
	m.SetReplicationLag("node-2", 17)
	m.SetConsumerLag("orders", "counters", 1)
	m.Retried("counters", 2)
	m.SetDLQDepth("counters", 1)
	m.PluginRestarted("storage", "file")
	m.PluginRestarted("storage", "file")
	m.OffsetReplicationFailed("counters")

	srv := httptest.NewServer(Handler(Options{Metrics: m}))
	defer srv.Close()
	code, body := get(t, srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{
		`ferry_append_messages_total{pipeline="quickstart",topic="orders"} 5`,
		`ferry_consume_messages_total{group="counters",pipeline="quickstart",topic="orders"} 4`,
		`ferry_flush_seconds_count{pipeline="quickstart"} 2`,
		`ferry_flush_seconds_bucket{pipeline="quickstart",le="+Inf"} 2`,
		`ferry_append_seconds_count{pipeline="quickstart"} 1`,
		`ferry_replication_lag_messages{pipeline="quickstart",replica="node-2"} 17`,
		`ferry_consumer_lag_messages{group="counters",pipeline="quickstart",topic="orders"} 1`,
		`ferry_retries_total{group="counters",pipeline="quickstart"} 2`,
		`ferry_dlq_depth{group="counters",pipeline="quickstart"} 1`,
		`ferry_plugin_restarts_total{kind="storage",pipeline="quickstart",type="file"} 2`,
		`ferry_offset_replication_failures_total{group="counters",pipeline="quickstart"} 1`,
		`# TYPE ferry_flush_seconds histogram`,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
	// Exactly the metrics promised, nothing failing to lint.
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "ferry_") {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
}

// A nil *Metrics is a valid, silent sink: components given none need no
// checks.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Appended("t", 1)
	m.AppendLatency(time.Millisecond)
	m.Consumed("t", "g", 1)
	m.Flushed(time.Millisecond)
	m.SetReplicationLag("r", 1)
	m.SetConsumerLag("t", "g", 1)
	m.Retried("g", 1)
	m.SetDLQDepth("g", 1)
	m.PluginRestarted("storage", "file")
	m.OffsetReplicationFailed("g")
	if m.Registry() != nil {
		t.Fatal("nil Metrics has a registry")
	}
}

// Two nodes in one process (tests, benchmarks) keep separate counts.
func TestMetricsPerNode(t *testing.T) {
	a, b := NewMetrics(nil), NewMetrics(nil)
	a.Appended("orders", 1)
	if got := testutil.ToFloat64(b.appended.WithLabelValues("orders")); got != 0 {
		t.Fatalf("node b counted node a's append: %v", got)
	}
	if got := testutil.ToFloat64(a.appended.WithLabelValues("orders")); got != 1 {
		t.Fatalf("node a: %v appends, want 1", got)
	}
}

// /healthz answers while the process runs; /readyz follows Ready.
func TestProbes(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	srv := httptest.NewServer(Handler(Options{Ready: func(context.Context) error {
		if down.Load() {
			return errors.New("storage plugin restarting")
		}
		return nil
	}}))
	defer srv.Close()

	if code, body := get(t, srv.URL+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	code, body := get(t, srv.URL+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "storage plugin restarting") {
		t.Fatalf("/readyz while not ready: %d %q, want 503 with the reason", code, body)
	}
	down.Store(false)
	if code, body := get(t, srv.URL+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("/readyz when ready: %d %q", code, body)
	}
	down.Store(true)
	if code, _ := get(t, srv.URL+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after becoming unready again: %d, want 503", code)
	}
	// No Ready func: always ready. No metrics: no /metrics.
	bare := httptest.NewServer(Handler(Options{}))
	defer bare.Close()
	if code, _ := get(t, bare.URL+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz without a Ready func: %d", code)
	}
	if code, _ := get(t, bare.URL+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("/metrics without Metrics: %d, want 404", code)
	}
}

// A Ready check that hangs makes the node unready, not the probe hang.
func TestReadyTimeout(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Ready: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}}))
	defer srv.Close()
	start := time.Now()
	code, body := get(t, srv.URL+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "deadline") {
		t.Fatalf("/readyz with a hanging check: %d %q", code, body)
	}
	if d := time.Since(start); d > readyTimeout+time.Second {
		t.Fatalf("/readyz took %v", d)
	}
}

func TestPprofOffByDefault(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{}))
	defer srv.Close()
	if code, _ := get(t, srv.URL+"/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("/debug/pprof/ without Pprof: %d, want 404", code)
	}
}

func TestPprof(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{Pprof: true}))
	defer srv.Close()
	code, body := get(t, srv.URL+"/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/: %d", code)
	}
	code, body = get(t, srv.URL+"/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("/debug/pprof/goroutine: %d", code)
	}
	if code, _ := get(t, srv.URL+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Fatalf("/debug/pprof/cmdline: %d", code)
	}
}

// Serve binds at once (a taken port is an error at start-up), serves on the
// port it got, and stops when its context ends.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Serve(ctx, "127.0.0.1:0", Options{Metrics: NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, "http://"+s.Addr()+"/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics on %s: %d", s.Addr(), code)
	}
	if _, err := Serve(ctx, s.Addr(), Options{}); err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Fatalf("second Serve on %s: err %v, want a bind error", s.Addr(), err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := http.Get("http://" + s.Addr() + "/healthz"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("admin server still answers after its context ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after ctx end: %v", err)
	}
}
