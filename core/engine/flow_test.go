package engine_test

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/stage"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// dedupe is a custom stage, registered here and nowhere in core: it drops a
// message whose content (key, or body when by: body) was already processed
// successfully within the last window messages. It proves that a stage needs
// no change to the broker, the consumer or the config schema.
func init() {
	stage.Register("dedupe", func(cfg map[string]any) (stage.Stage, error) {
		c := struct {
			By     string `json:"by"`
			Window int    `json:"window"`
		}{By: "key", Window: 1000}
		if ps := stage.Decode(cfg, &c); ps != nil {
			return nil, ps
		}
		var ps sdk.Problems
		if c.By != "key" && c.By != "body" {
			ps = append(ps, sdk.Problem{Path: "by", Message: fmt.Sprintf("must be key or body, got %q", c.By)})
		}
		if c.Window < 1 {
			ps = append(ps, sdk.Problem{Path: "window", Message: fmt.Sprintf("must be at least 1, got %d", c.Window)})
		}
		if ps != nil {
			return nil, ps
		}
		var mu sync.Mutex
		order := list.New()
		seen := map[string]*list.Element{}
		return func(next stage.Handler) stage.Handler {
			return func(ctx context.Context, d *client.Delivery) error {
				k := d.Message.Key
				if c.By == "body" {
					sum := sha256.Sum256(d.Message.Body)
					k = string(sum[:])
				}
				mu.Lock()
				_, dup := seen[k]
				mu.Unlock()
				if dup {
					return nil // acknowledged without reaching the sink
				}
				if err := next(ctx, d); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				if _, ok := seen[k]; !ok {
					seen[k] = order.PushBack(k)
					if order.Len() > c.Window {
						delete(seen, order.Remove(order.Front()).(string))
					}
				}
				return nil
			}
		}, nil
	})
}

// loadPipeline loads a pipeline written in a test, on a free port and a temp
// data dir, with the plugins in-process.
func loadPipeline(t *testing.T, yaml string) *config.Pipeline {
	t.Helper()
	cfg, err := config.LoadBytes("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("pipeline:\n%v", err)
	}
	cfg.Node.DataDir = t.TempDir()
	cfg.Plugins.Mode = "inprocess"
	cfg.Plugins.Transport.Config = map[string]any{"listen": ferrytest.FreeAddr(t)}
	return cfg
}

func startPipeline(t *testing.T, yaml string) (*engine.Engine, *config.Pipeline) {
	t.Helper()
	cfg := loadPipeline(t, yaml)
	return start(t, cfg), cfg
}

func dialEngine(t *testing.T, e *engine.Engine) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), e.Address())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A flow whose sink always fails: each message is tried max_attempts times
// through the retry topic and ends in the group's DLQ, and the run finishes.
func TestFlowDeadLettersFailingSink(t *testing.T) {
	e, _ := startPipeline(t, `
name: dlq
topics: [{name: orders, queues: 2}]
generators: [{name: g, topic: orders, count: 20, size: 16}]
flows:
  - name: failing
    topic: orders
    group: billing
    concurrency: 4
    stages:
      - type: retry
        config: {max_attempts: 3, delays: [50ms, 100ms]}
      - type: dlq
    sink: {type: exec, command: sh, args: ["-c", "echo refused >&2; exit 7"]}
`)
	s := runPipeline(t, e, 30*time.Second)
	f := s.Flows[0]
	if !s.OK() || f.Unique != 20 || f.Delivered != 60 || f.DeadLettered != 20 || f.Retried != 40 {
		t.Fatalf("flow %+v; want 20 messages delivered 3 times each, 40 retries, 20 dead-lettered", f)
	}
	c := dialEngine(t, e)
	dls, st, err := c.DeadLetters(context.Background(), "billing", 0)
	if err != nil || len(dls) != 20 || st.Depth() != 20 {
		t.Fatalf("DLQ: %d, %+v, %v", len(dls), st, err)
	}
	dl := dls[0]
	if dl.Reason != "max attempts (3) reached" || dl.Attempts != 3 || !strings.Contains(dl.LastError, "exit status 7: refused") || dl.Topic != "orders" {
		t.Errorf("dead letter %+v", dl)
	}
}

// The custom dedupe stage, configured in YAML: 30 messages with the same
// body reach the sink once; the others are acknowledged by the stage.
func TestFlowCustomStage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.jsonl")
	e, _ := startPipeline(t, fmt.Sprintf(`
name: dedupe
topics: [{name: orders, queues: 3}]
generators: [{name: g, topic: orders, count: 30, size: 64}]
flows:
  - name: once
    topic: orders
    stages:
      - type: dedupe
        config: {by: body, window: 100}
    sink: {type: file, path: %q}
`, out))
	s := runPipeline(t, e, 30*time.Second)
	if f := s.Flows[0]; !s.OK() || f.Unique != 30 || f.DeadLettered != 0 {
		t.Fatalf("flow %+v", f)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("\n")); n != 1 {
		t.Fatalf("the sink got %d messages, want 1 (the generator's bodies are all equal)", n)
	}
	// Its config is checked like any stage's.
	_, err = config.LoadBytes("x.yaml", []byte(`
name: x
topics: [{name: orders}]
flows: [{name: f, topic: orders, stages: [{type: dedupe, config: {by: colour, window: 0}}], sink: {type: discard}}]
`))
	if err == nil || !strings.Contains(err.Error(), `flows[0].stages[0].config.by: must be key or body, got "colour"`) ||
		!strings.Contains(err.Error(), "flows[0].stages[0].config.window: must be at least 1, got 0") {
		t.Errorf("bad dedupe config: %v", err)
	}
}

// The timeout stage bounds an attempt; a sink slower than it is retried and
// dead-lettered with the timeout as its last error.
func TestFlowTimeoutStage(t *testing.T) {
	e, _ := startPipeline(t, `
name: slow
topics: [{name: orders, queues: 1}]
generators: [{name: g, topic: orders, count: 3, size: 8}]
flows:
  - name: slow
    topic: orders
    concurrency: 3
    stages:
      - type: retry
        config: {max_attempts: 2, delays: [10ms]}
      - type: timeout
        config: {after: 150ms}
    sink: {type: exec, command: sleep, args: ["5"]}
`)
	start := time.Now()
	s := runPipeline(t, e, 30*time.Second)
	if f := s.Flows[0]; f.DeadLettered != 3 || f.Delivered != 6 {
		t.Fatalf("flow %+v; want 3 dead-lettered after 2 attempts each", f)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("took %v: the timeout did not cut the 5s command", took)
	}
	dls, _, err := dialEngine(t, e).DeadLetters(context.Background(), "slow", 0)
	if err != nil || len(dls) != 3 || dls[0].LastError != "timed out after 150ms" {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
}

// A webhook sink: 503 is retried (after Retry-After), 2xx acknowledges, a
// 4xx goes straight to the DLQ with reason "permanent error".
func TestFlowWebhook(t *testing.T) {
	var mu sync.Mutex
	calls := map[string][]string{} // id → attempts
	rejected := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, attempt := r.Header.Get("Ferry-Id"), r.Header.Get("Ferry-Attempt")
		mu.Lock()
		calls[id] = append(calls[id], attempt)
		n := len(calls)
		mu.Unlock()
		switch {
		case n%5 == 0 && attempt == "1":
			mu.Lock()
			rejected[id] = true
			mu.Unlock()
			http.Error(w, "unknown customer", http.StatusUnprocessableEntity)
		case attempt == "1":
			w.Header().Set("Retry-After", "0")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	e, _ := startPipeline(t, fmt.Sprintf(`
name: hook
topics: [{name: orders, queues: 2}]
generators: [{name: g, topic: orders, count: 20, size: 32}]
flows:
  - name: hook
    topic: orders
    concurrency: 4
    sink: {type: webhook, url: %q, timeout: 2s, headers: {X-Token: secret}}
`, srv.URL))
	s := runPipeline(t, e, 30*time.Second)
	mu.Lock()
	nRejected := len(rejected)
	mu.Unlock()
	f := s.Flows[0]
	if !s.OK() || f.Unique != 20 || f.DeadLettered != nRejected || nRejected == 0 || f.Retried != 20-nRejected {
		t.Fatalf("flow %+v with %d rejected by the server", f, nRejected)
	}
	for id, attempts := range calls {
		want := "[1 2]"
		if rejected[id] {
			want = "[1]"
		}
		if fmt.Sprint(attempts) != want {
			t.Errorf("%s: attempts %v, want %s", id, attempts, want)
		}
	}
	dls, _, _ := dialEngine(t, e).DeadLetters(context.Background(), "hook", 0)
	for _, dl := range dls {
		if !rejected[dl.ID] || dl.Reason != "permanent error" || !strings.Contains(dl.LastError, "422 Unprocessable Entity: unknown customer") {
			t.Errorf("dead letter %+v", dl)
		}
	}
}

// Pull delivery and orderly push run the quickstart to the end.
func TestFlowPullAndOrderly(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"pull", "delivery: pull\n    concurrency: 8"},
		{"orderly", "orderly: true\n    concurrency: 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := startPipeline(t, `
name: q
topics: [{name: orders, queues: 4}]
generators: [{name: g, topic: orders, count: 3000, size: 100, mode: async}]
flows:
  - name: f
    topic: orders
    `+tc.extra+`
    sink: {type: count}
`)
			checkAllDelivered(t, runPipeline(t, e, 60*time.Second), 3000)
		})
	}
}

// ack before_process is at-most-once: a failing sink loses its messages
// (no retry, no dead letter), as documented.
func TestFlowAckBeforeProcess(t *testing.T) {
	e, _ := startPipeline(t, `
name: amo
topics: [{name: orders, queues: 1}]
generators: [{name: g, topic: orders, count: 10, size: 8}]
flows:
  - name: f
    topic: orders
    stages: [{type: ack, config: {mode: before_process}}]
    sink: {type: exec, command: "false"}
`)
	s := runPipeline(t, e, 30*time.Second)
	if f := s.Flows[0]; f.Delivered != 10 || f.Retried != 0 || f.DeadLettered != 0 {
		t.Fatalf("flow %+v; want each message once, nothing retried or dead-lettered", f)
	}
}
