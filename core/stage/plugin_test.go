package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
)

var (
	exampleOnce sync.Once
	exampleDir  string
	exampleErr  error
)

// buildExample builds examples/plugins/go-stage as ferry-stage-example into a
// plugin directory shared by the tests of this package.
func buildExample(t *testing.T) string {
	t.Helper()
	exampleOnce.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			exampleErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "ferry-stage-example"), ".")
		cmd.Dir = filepath.Join("..", "..", "examples", "plugins", "go-stage")
		if out, err := cmd.CombinedOutput(); err != nil {
			exampleErr = errors.New("build examples/plugins/go-stage: " + err.Error() + "\n" + string(out))
			return
		}
		exampleDir = dir
	})
	if exampleErr != nil {
		t.Fatal(exampleErr)
	}
	return exampleDir
}

// startExample runs the example stage plugin under a real plugin host.
func startExample(t *testing.T, config string) (*pluginhost.Instance, Stage) {
	t.Helper()
	return startExampleWith(t, config, PluginStageConfig{})
}

// startExampleWith is startExample with the stage's batching and deadline.
func startExampleWith(t *testing.T, config string, c PluginStageConfig) (*pluginhost.Instance, Stage) {
	t.Helper()
	h, err := pluginhost.New(pluginhost.NewRegistry(), pluginhost.Options{Dirs: []string{buildExample(t)}, DataPlane: pluginhost.DataPlaneGRPC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inst, err := h.Start(ctx, sdk.KindStage, "example", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	return inst, FromPlugin(inst, c)
}

type sinkRecord struct {
	mu     sync.Mutex
	bodies []string
}

func (r *sinkRecord) handler(_ context.Context, d *client.Delivery) error {
	r.mu.Lock()
	r.bodies = append(r.bodies, string(d.Message.Body))
	r.mu.Unlock()
	return nil
}

func delivery(action, body string) *client.Delivery {
	h := map[string]string{}
	if action != "" {
		h["x-stage"] = action
	}
	return &client.Delivery{Message: &sdk.Message{Id: "m-" + body, Topic: "t", Headers: h, Body: []byte(body)}, ID: "m-" + body, Attempt: 1, Group: "g"}
}

// Every verdict of a real stage plugin maps to the chain's outcome: pass
// (transformed) reaches the sink, retry is a retryable error with the
// plugin's delay, dlq a permanent one with its reason, drop an ack that
// never reaches the sink.
func TestStagePluginVerdicts(t *testing.T) {
	_, st := startExample(t, `{"upper": true, "retry_delay_ms": 1500}`)
	var sink sinkRecord
	h := st(sink.handler)
	ctx := context.Background()

	if err := h(ctx, delivery("", "hello")); err != nil {
		t.Fatalf("pass: %v", err)
	}
	if err := h(ctx, delivery("drop", "gone")); err != nil {
		t.Fatalf("drop: %v, want nil (acked)", err)
	}
	err := h(ctx, delivery("retry", "later"))
	if err == nil || client.IsPermanent(err) || !strings.Contains(err.Error(), "x-stage asked for it") {
		t.Fatalf("retry: %v, want a retryable error with the plugin's reason", err)
	}
	if !strings.Contains(err.Error(), "retry after 1.5s") {
		t.Fatalf("retry: %v, want the plugin's delay 1.5s", err)
	}
	err = h(ctx, delivery("dlq", "bad"))
	if !client.IsPermanent(err) || !strings.Contains(err.Error(), "x-stage asked for it") {
		t.Fatalf("dlq: %v, want a permanent error with the plugin's reason", err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.bodies) != 1 || sink.bodies[0] != "HELLO" {
		t.Fatalf("sink saw %q, want only the transformed [HELLO]", sink.bodies)
	}
}

// A stage plugin that lies (answers for a delivery it was not given, or
// answers fewer) fails the delivery with a retryable error naming the
// breach, so it is delivered again and never acked; the plugin is not
// killed for it. The control: the same plugin honest passes.
func TestStagePluginLies(t *testing.T) {
	for _, c := range []struct{ lie, want string }{
		{"extra", "which it was not given"},
		{"fewer", "answered 0 of 1 deliveries"},
	} {
		t.Run(c.lie, func(t *testing.T) {
			inst, st := startExample(t, `{"lie": "`+c.lie+`"}`)
			var sink sinkRecord
			h := st(sink.handler)
			pid := inst.Pid()
			for range 3 {
				err := h(context.Background(), delivery("", "x"))
				if err == nil || client.IsPermanent(err) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("lying plugin: %v, want a retryable error with %q", err, c.want)
				}
			}
			if len(sink.bodies) != 0 {
				t.Fatalf("sink saw %q from a lying plugin", sink.bodies)
			}
			if inst.Pid() != pid || inst.Restarts() != 0 {
				t.Fatalf("the lying plugin was restarted (pid %d -> %d, %d restarts)", pid, inst.Pid(), inst.Restarts())
			}
		})
	}
	t.Run("control", func(t *testing.T) {
		_, st := startExample(t, `{}`)
		var sink sinkRecord
		if err := st(sink.handler)(context.Background(), delivery("", "x")); err != nil {
			t.Fatalf("honest plugin: %v", err)
		}
	})
}

// kill -9 of a stage plugin holding a delivery: the delivery fails with a
// retryable error (redelivered, never acked), the host restarts the plugin
// and the next delivery passes. The control is the first half: a held
// delivery does not come back by itself.
func TestStagePluginKill9(t *testing.T) {
	inst, st := startExample(t, `{}`)
	var sink sinkRecord
	h := st(sink.handler)
	pid := inst.Pid()
	if pid == 0 {
		t.Fatal("stage plugin runs in-process")
	}
	done := make(chan error, 1)
	go func() { done <- h(context.Background(), delivery("hold", "held")) }()
	select {
	case err := <-done:
		t.Fatalf("held delivery returned before the kill: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || client.IsPermanent(err) {
			t.Fatalf("held delivery after kill -9: %v, want a retryable error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("held delivery did not fail within 60s of kill -9")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, gen, _ := inst.Current()
	if _, _, err := inst.Next(ctx, gen-1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		err := h(context.Background(), delivery("", "after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no delivery passed within 60s of the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if inst.Restarts() < 1 || inst.Pid() == pid {
		t.Fatalf("plugin not restarted: %d restarts, pid %d (was %d)", inst.Restarts(), inst.Pid(), pid)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.bodies) != 1 || sink.bodies[0] != "after" {
		t.Fatalf("sink saw %q, want [after] only (the held message must not be acked)", sink.bodies)
	}
}

// Config errors of the plugin stage type name the key.
func TestStagePluginConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{}, "plugin: is required"},
		{map[string]any{"plugin": "Bad-Name"}, "is not a type name"},
		{map[string]any{"plugin": "example", "bogus": 1}, "bogus"},
		{map[string]any{"plugin": "example"}, "no plugin host"},
		{map[string]any{"plugin": "example", "max_batch": 0}, "max_batch: must be between 1 and 10000, got 0"},
		{map[string]any{"plugin": "example", "linger": "2s"}, "linger: must be between 0s and 1s, got 2s"},
		{map[string]any{"plugin": "example", "timeout": "1ms"}, "timeout: must be between 10ms and 1h, got 1ms"},
		{map[string]any{"plugin": "example", "timeout": 5}, "timeout"},
	} {
		_, err := New("plugin", c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %v: %v, want an error with %q", c.cfg, err, c.want)
		}
	}
}

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "ferry-stage-test-") }

func TestMain(m *testing.M) {
	code := m.Run()
	if exampleDir != "" {
		_ = os.RemoveAll(exampleDir)
	}
	os.Exit(code)
}

// ferry validate checks a plugin stage's config without starting it.
func TestStagePluginCheck(t *testing.T) {
	if ps := Check("plugin", map[string]any{"plugin": "example", "config": map[string]any{"upper": true}}); ps != nil {
		t.Fatalf("good config: %v", ps)
	}
	ps := Check("plugin", map[string]any{"config": map[string]any{}})
	if len(ps) != 1 || ps[0].Path != "plugin" {
		t.Fatalf("config without plugin: %v, want one problem at plugin", ps)
	}
}

// logRecorder makes slog's default logger write to a buffer for one test.
type logRecorder struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func recordLogs(t *testing.T) *logRecorder {
	l := &logRecorder{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(l, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return l
}

// Deliveries handled at once reach the plugin in one call, up to max_batch,
// and each gets its own verdict: 8 concurrent deliveries with max_batch 4
// (and a linger far longer than the test) are two calls of 4, mixing pass,
// drop, retry and dlq. The negative control is max_batch 1 (or the host of
// before, which sent one delivery per call): the batch tags would read 1.
func TestStagePluginBatches(t *testing.T) {
	_, st := startExampleWith(t, `{"tag_batch": true}`, PluginStageConfig{MaxBatch: 4, Linger: sdk.Duration(60 * time.Second)})
	var mu sync.Mutex
	batchOf := map[string]string{}
	h := st(func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		batchOf[string(d.Message.Body)] = d.Message.Headers["x-stage-batch"]
		mu.Unlock()
		return nil
	})
	actions := []string{"", "drop", "", "retry", "", "dlq", "", ""}
	errs := make([]error, len(actions))
	var wg sync.WaitGroup
	for i, a := range actions {
		wg.Go(func() { errs[i] = h(context.Background(), delivery(a, fmt.Sprint("b", i))) })
	}
	wg.Wait()
	for i, a := range actions {
		err := errs[i]
		switch a {
		case "", "drop":
			if err != nil {
				t.Errorf("delivery %d (%q): %v, want nil", i, a, err)
			}
		case "retry":
			if err == nil || client.IsPermanent(err) {
				t.Errorf("delivery %d (retry): %v, want a retryable error", i, err)
			}
		case "dlq":
			if !client.IsPermanent(err) {
				t.Errorf("delivery %d (dlq): %v, want a permanent error", i, err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(batchOf) != 5 {
		t.Fatalf("sink saw %v, want the 5 passed deliveries", batchOf)
	}
	for body, n := range batchOf {
		if n != "4" {
			t.Errorf("%s came in a call of %s deliveries, want 4", body, n)
		}
	}
}

// A call that misses its deadline fails its deliveries with a retryable
// error (redelivered, never acked) and is logged; a plugin that still
// answers an empty batch is slow on that message only and is not
// restarted: the next delivery passes through the same process. The
// plugin sleeps an hour deaf to the deadline, so without the deadline the
// test fails at its own 60 s wait.
func TestStagePluginSlowMessage(t *testing.T) {
	logs := recordLogs(t)
	inst, st := startExampleWith(t, `{}`, PluginStageConfig{Timeout: sdk.Duration(2 * time.Second)})
	var sink sinkRecord
	h := st(sink.handler)
	pid := inst.Pid()
	done := make(chan error, 1)
	go func() { done <- h(context.Background(), delivery("sleep", "slow")) }()
	select {
	case err := <-done:
		if err == nil || client.IsPermanent(err) || !strings.Contains(err.Error(), "no answer within its call timeout 2s") {
			t.Fatalf("slow delivery: %v, want a retryable error naming the timeout", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("slow delivery held for 60s: no deadline")
	}
	if !waitFor(60*time.Second, func() bool { return strings.Contains(logs.String(), "keeps running") }) {
		t.Fatalf("no probe verdict logged; logs:\n%s", logs)
	}
	if l := logs.String(); !strings.Contains(l, "missed its call deadline") || !strings.Contains(l, "m-slow") {
		t.Fatalf("the missed deadline is not logged with the message; logs:\n%s", l)
	}
	if err := h(context.Background(), delivery("", "next")); err != nil {
		t.Fatalf("next delivery: %v", err)
	}
	if inst.Pid() != pid || inst.Restarts() != 0 {
		t.Fatalf("a plugin slow on one message was restarted (pid %d -> %d, %d restarts)", pid, inst.Pid(), inst.Restarts())
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.bodies) != 1 || sink.bodies[0] != "next" {
		t.Fatalf("sink saw %q, want [next] only", sink.bodies)
	}
}

// A plugin that hangs for good (it answers neither the call nor the empty
// probe after it) is restarted by the host; the held message fails with a
// retryable error, never acked, and the new process passes the next
// delivery. The negative control is the slow-message test: the same
// deadline without the hang leaves the plugin running.
func TestStagePluginHung(t *testing.T) {
	logs := recordLogs(t)
	inst, st := startExampleWith(t, `{}`, PluginStageConfig{Timeout: sdk.Duration(2 * time.Second)})
	var sink sinkRecord
	h := st(sink.handler)
	pid := inst.Pid()
	done := make(chan error, 1)
	go func() { done <- h(context.Background(), delivery("freeze", "stuck")) }()
	select {
	case err := <-done:
		if err == nil || client.IsPermanent(err) {
			t.Fatalf("frozen delivery: %v, want a retryable error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("frozen delivery held for 60s: no deadline")
	}
	if !waitFor(60*time.Second, func() bool { return inst.Restarts() >= 1 && inst.Pid() != pid && inst.Pid() != 0 }) {
		t.Fatalf("hung plugin not restarted within 60s (%d restarts, pid %d, was %d); logs:\n%s", inst.Restarts(), inst.Pid(), pid, logs)
	}
	if !strings.Contains(logs.String(), "does not answer an empty batch either; restarting it") {
		t.Fatalf("the restart's reason is not logged; logs:\n%s", logs)
	}
	var err error
	if !waitFor(60*time.Second, func() bool { err = h(context.Background(), delivery("", "after")); return err == nil }) {
		t.Fatalf("no delivery passed within 60s of the restart: %v", err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.bodies) != 1 || sink.bodies[0] != "after" {
		t.Fatalf("sink saw %q, want [after] only (the frozen message must not be acked)", sink.bodies)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
