// Package sdktest holds the conformance suites every implementation of an SDK
// interface runs from its own tests, built in or third party:
//
//	func TestConformance(t *testing.T) {
//		sdktest.TestStorage(t, func(t *testing.T, dir string) sdk.Storage { return mystore.New() },
//			sdktest.StorageFeatures{Durable: true})
//	}
//
// Every case runs on the implementation called directly and through the real
// plugin boundary (go-plugin's gRPC transport, served in-process in go-plugin's
// test mode, on gRPC and on the shared-memory rings), so that what the broker
// sees across the process boundary is what is checked. The cases themselves
// (StorageCases, TransportCases, ReplicationCases) are funcs of a harness
// returning an error; `ferry plugin test` runs the same ones against a plugin
// executable (core/plugintest). TestTransport and TestReplication serve the
// plugin a test core that plays the broker (transport_core.go,
// ReplicaTestCore).
package sdktest

import (
	"bytes"
	"syscall"

	"github.com/ferrymq/ferry/core/ring"

	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferrymq/ferry/core/sdk"
)

// TestWriter returns a writer that sends lines to t.Log (shown when the test
// fails or with -v) until the test's cleanup ends, and drops them after that,
// so that loggers of goroutines that outlive a test are safe to point at it.
func TestWriter(t testing.TB) io.Writer {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// dropClosedListener drops the log line of a plugin server whose listener was
// closed by the host's stop, and passes every other line on.
type dropClosedListener struct{ w io.Writer }

func (d dropClosedListener) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("grpc server")) && bytes.Contains(p, []byte("use of closed network connection")) {
		return len(p), nil
	}
	return d.w.Write(p)
}

// servedLog wraps the writer of a served plugin's logger (a test takes the
// filter out, as its control).
var servedLog = func(w io.Writer) io.Writer { return dropClosedListener{w} }

// ServeStorage serves impl over go-plugin's gRPC transport inside the test
// process (go-plugin's test mode) and returns the host's client for it, as the
// broker would get it from a plugin process. stop ends the connection and the
// server; it does not Close impl. stop is also registered with t.Cleanup and
// may be called more than once.
func ServeStorage(t testing.TB, impl sdk.Storage) (client *sdk.StorageClient, stop func()) {
	return serveStorage(t, impl, false)
}

// ServeStorageRing is ServeStorage with the shared-memory data plane: the
// client offers a ring segment at Configure and the served plugin takes it,
// so that Append, Read, CommitOffsets and GetOffsets cross the rings as they
// do between a host and a plugin process.
func ServeStorageRing(t testing.TB, impl sdk.Storage) (client *sdk.StorageClient, stop func()) {
	return serveStorage(t, impl, true)
}

func serveStorage(t testing.TB, impl sdk.Storage, withRing bool) (client *sdk.StorageClient, stop func()) {
	t.Helper()
	raw, seg, stop := servePlugin(t, sdk.ServeOpts{Storage: impl}, sdk.KindStorage, withRing)
	sc, ok := raw.(*sdk.StorageClient)
	if !ok {
		stop()
		t.Fatalf("dispense %s: got %T, want *sdk.StorageClient", sdk.KindStorage, raw)
	}
	if seg != nil {
		sc.UseRing(seg, func(err error) { t.Errorf("storage plugin broke the ring protocol: %v", err) })
	}
	return sc, stop
}

// ServeTransport serves impl over go-plugin's gRPC transport inside the test
// process, as ServeStorage does, and returns the host's client for it; with
// withRing the client offers the shared-memory data plane at Configure.
func ServeTransport(t testing.TB, impl sdk.Transport, withRing bool) (client *sdk.TransportClient, stop func()) {
	t.Helper()
	raw, seg, stop := servePlugin(t, sdk.ServeOpts{Transport: impl}, sdk.KindTransport, withRing)
	tc, ok := raw.(*sdk.TransportClient)
	if !ok {
		stop()
		t.Fatalf("dispense %s: got %T, want *sdk.TransportClient", sdk.KindTransport, raw)
	}
	if seg != nil {
		tc.UseRing(seg, func(err error) { t.Errorf("transport plugin broke the ring protocol: %v", err) })
	}
	return tc, stop
}

// ServeReplication serves impl like ServeTransport and returns the host's
// client for it.
func ServeReplication(t testing.TB, impl sdk.Replication, withRing bool) (client *sdk.ReplicationClient, stop func()) {
	t.Helper()
	raw, seg, stop := servePlugin(t, sdk.ServeOpts{Replication: impl}, sdk.KindReplication, withRing)
	rc, ok := raw.(*sdk.ReplicationClient)
	if !ok {
		stop()
		t.Fatalf("dispense %s: got %T, want *sdk.ReplicationClient", sdk.KindReplication, raw)
	}
	if seg != nil {
		rc.UseRing(seg, func(err error) { t.Errorf("replication plugin broke the ring protocol: %v", err) })
	}
	return rc, stop
}

// servePlugin serves the plugin of opts (kind) in go-plugin's test mode and
// returns the host's dispensed client, the ring segment to hand it (nil
// without withRing) and what stops both.
func servePlugin(t testing.TB, opts sdk.ServeOpts, kind string, withRing bool) (raw any, seg *ring.Segment, stop func()) {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Name: "sdktest", Output: TestWriter(t), Level: hclog.Warn})
	// go-plugin's server logs the normal end of its listener in test mode
	// (stop closes it) as an ERROR "grpc server: ... use of closed network
	// connection"; the served side's logger drops that one line.
	opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "sdktest", Output: servedLog(TestWriter(t)), Level: hclog.Warn})
	if withRing {
		var err error
		if seg, err = ring.Create(ring.MinRingSize); err != nil {
			t.Fatalf("ring segment: %v", err)
		}
		// The plugin's side gets files of its own, as a process would.
		for _, f := range seg.Files() {
			fd, err := syscall.Dup(int(f.Fd()))
			if err != nil {
				t.Fatalf("dup ring file: %v", err)
			}
			opts.RingFDs = append(opts.RingFDs, fd)
		}
	}
	cfg, _, err := sdk.NewServeConfig(opts)
	if err != nil {
		t.Fatalf("sdk.NewServeConfig: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	cfg.Test = &plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: reattach, CloseCh: closed}
	go plugin.Serve(cfg)

	var rc *plugin.ReattachConfig
	select {
	case rc = <-reattach:
	case <-closed:
		cancel()
		t.Fatal("plugin.Serve ended before it was ready")
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("plugin.Serve did not start within 10s")
	}
	host := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.PluginSets(),
		// A reattached client dispenses from Plugins: go-plugin picks
		// from VersionedPlugins only when it starts the process itself.
		Plugins:          sdk.PluginSets()[rc.ProtocolVersion],
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		Logger:           logger,
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if c, ok := raw.(interface{ Close() error }); ok {
				_ = c.Close()
			}
			host.Kill() // test mode: closes the connection, kills nothing
			cancel()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Error("plugin server did not stop within 10s")
			}
		})
	}
	t.Cleanup(stop)
	rpc, err := host.Client()
	if err != nil {
		stop()
		t.Fatalf("connect to plugin: %v", err)
	}
	raw, err = rpc.Dispense(kind)
	if err != nil {
		stop()
		t.Fatalf("dispense %s: %v", kind, err)
	}
	return raw, seg, stop
}
