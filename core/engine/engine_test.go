package engine_test

import (
	"bytes"
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// quickstart loads pipelines/quickstart.yaml on a free port and a temp dir.
func quickstart(t testing.TB, mode string, count int) *config.Pipeline {
	t.Helper()
	cfg, err := config.Load(filepath.Join("..", "..", "pipelines", "quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.DataDir = t.TempDir()
	cfg.Plugins.Mode = mode
	cfg.Plugins.Transport.Config = map[string]any{"listen": ferrytest.FreeAddr(t)}
	cfg.Generators[0].Count = count
	return cfg
}

func start(t testing.TB, cfg *config.Pipeline) *engine.Engine {
	t.Helper()
	return startWith(t, cfg, ferrytest.Binary(t))
}

// startWith starts cfg with exe (a ferry binary) as its plugins.
func startWith(t testing.TB, cfg *config.Pipeline, exe string) *engine.Engine {
	t.Helper()
	e, err := engine.Start(context.Background(), cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: exe, Record: true,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Warn, Output: testWriter{t}}),
	})
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
	return e
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func runPipeline(t *testing.T, e *engine.Engine, within time.Duration) *engine.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out bytes.Buffer
	s, err := e.Run(ctx, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	var sum bytes.Buffer
	s.Print(&sum, "test")
	t.Log(sum.String())
	return s
}

func checkAllDelivered(t *testing.T, s *engine.Summary, want int) {
	t.Helper()
	if !s.OK() {
		t.Errorf("summary not OK")
	}
	if g := s.Generators[0]; g.Sent != want || g.Errors != 0 {
		t.Errorf("generator sent %d with %d errors, want %d and 0", g.Sent, g.Errors, want)
	}
	if f := s.Flows[0]; f.Unique != want || f.Missing != 0 {
		t.Errorf("flow consumed %d unique, %d missing; want %d and 0", f.Unique, f.Missing, want)
	}
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// The quickstart runs end to end with each plugin in its own process.
func TestQuickstartSubprocess(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 5000)
	e := start(t, cfg)
	for _, inst := range []*pluginhost.Instance{e.Storage(), e.Transport()} {
		if pid := inst.Pid(); !alive(pid) || pid == syscall.Getpid() {
			t.Fatalf("%s/%s: pid %d is not a separate live process", inst.Kind(), inst.Type(), pid)
		}
	}
	checkAllDelivered(t, runPipeline(t, e, 60*time.Second), 5000)
}

// The same pipeline with the built-in plugins linked in-process.
func TestQuickstartInProcess(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeInProcess, 5000)
	e := start(t, cfg)
	if pid := e.Storage().Pid(); pid != 0 {
		t.Fatalf("in-process storage has pid %d", pid)
	}
	checkAllDelivered(t, runPipeline(t, e, 60*time.Second), 5000)
}

// killDuringRun SIGKILLs the plugin process of inst once the flow is under
// way and checks that a new process serves, on fresh rings. How long that
// took is logged (usually well under a second), not asserted: the machine
// may be loaded.
func killDuringRun(t *testing.T, e *engine.Engine, inst *pluginhost.Instance, after time.Duration) {
	t.Helper()
	time.Sleep(after)
	if dp := inst.DataPlane(); dp != sdk.DataPlaneRing {
		t.Errorf("%s plugin runs on data plane %q before the kill, want %s", inst.Kind(), dp, sdk.DataPlaneRing)
	}
	pid := inst.Pid()
	_, gen, _ := inst.Current()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill %d: %v", pid, err)
		return
	}
	killed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, _, err := inst.Next(ctx, gen); err != nil {
		t.Errorf("%s plugin did not come back: %v", inst.Kind(), err)
		return
	}
	took := time.Since(killed)
	t.Logf("%s plugin pid %d killed; pid %d serving after %v on data plane %s", inst.Kind(), pid, inst.Pid(), took, inst.DataPlane())
	if dp := inst.DataPlane(); dp != sdk.DataPlaneRing {
		t.Errorf("restarted %s plugin runs on data plane %q, want %s", inst.Kind(), dp, sdk.DataPlaneRing)
	}
	if inst.Restarts() < 1 {
		t.Errorf("restarts = %d", inst.Restarts())
	}
}

// kill -9 of the transport plugin mid-flow: clients reconnect to the new
// process and every acknowledged message is consumed, where its ack said,
// once per position, each queue in order (the flow is orderly).
func TestKillTransportDuringFlow(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 6000)
	cfg.Generators[0].Rate = 3000
	cfg.Flows[0].Orderly = true
	e := start(t, cfg)
	done := make(chan struct{})
	go func() { defer close(done); killDuringRun(t, e, e.Transport(), 700*time.Millisecond) }()
	s := runPipeline(t, e, 90*time.Second)
	<-done
	checkAllDelivered(t, s, 6000)
	checkEachMessage(t, s)
}

// kill -9 of the file storage plugin (fsync before ack) mid-flow: appends of
// unknown outcome are re-sent in order to the new process, nothing acked is
// lost and nothing is stored twice.
func TestKillStorageDuringFlow(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 6000)
	cfg.Plugins.Storage.Type = "file"
	cfg.Plugins.Storage.Config = map[string]any{"flush": "sync"}
	cfg.Generators[0].Rate = 3000
	e := start(t, cfg)
	done := make(chan struct{})
	go func() { defer close(done); killDuringRun(t, e, e.Storage(), 700*time.Millisecond) }()
	s := runPipeline(t, e, 90*time.Second)
	<-done
	checkAllDelivered(t, s, 6000)
	checkEachMessage(t, s)
	if f := s.Flows[0]; f.Delivered != f.Unique {
		t.Logf("%d redeliveries (at-least-once)", f.Delivered-f.Unique)
	}
	// Every queue's offsets are dense: nothing was stored twice.
	stored := storedCount(t, e, "orders")
	if stored != 6000 {
		t.Errorf("storage holds %d messages, want exactly 6000 (no duplicates)", stored)
	}
}

// storedCount sums end - start over a topic's queues, read through a client.
func storedCount(t *testing.T, e *engine.Engine, topic string) int64 {
	t.Helper()
	cl, err := client.Dial(context.Background(), e.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var refs []*ferryv1.QueueRef
	for q := int32(0); q < 4; q++ {
		refs = append(refs, &ferryv1.QueueRef{Topic: topic, Queue: q})
	}
	offs, err := cl.GetOffsets(context.Background(), "", refs)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, o := range offs {
		n += o.End - o.Start
	}
	return n
}
