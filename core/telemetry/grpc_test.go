package telemetry

import (
	"strings"
	"testing"

	"google.golang.org/grpc/stats"
)

// The plugin plumbing's RPCs get no span unless debug_plumbing asks for
// them; the long data streams never do; other calls do.
func TestTracedRPC(t *testing.T) {
	defer debugPlumbing.Store(false)
	cases := []struct {
		method        string
		traced, debug bool
	}{
		{"/ferry.v1.Plugin/Configure", false, true},
		{"/ferry.v1.Plugin/Validate", false, true},
		{"/ferry.v1.Plugin/Health", false, true},
		{"/grpc.health.v1.Health/Check", false, true},
		{"/plugin.GRPCController/Shutdown", false, true},
		{"/plugin.GRPCStdio/StreamStdio", false, false},
		{"/ferry.v1.Storage/GetOffsets", false, true},
		{"/ferry.v1.Storage/CommitOffsets", false, true},
		{"/ferry.v1.Storage/Append", false, false},
		{"/ferry.v1.Transport/Connect", false, false},
		{"/ferry.v1.Broker/Fetch", true, true},
		{"/ferry.v1.ReplicaLink/Promote", true, true},
	}
	for _, debug := range []bool{false, true} {
		debugPlumbing.Store(debug)
		for _, c := range cases {
			want := c.traced
			if debug {
				want = c.debug
			}
			if got := TracedRPC(&stats.RPCTagInfo{FullMethodName: c.method}); got != want {
				t.Errorf("debug_plumbing=%v: TracedRPC(%s) = %v, want %v", debug, c.method, got, want)
			}
		}
	}
}

// debug_plumbing reaches plugin processes through the environment.
func TestEnvDebugPlumbing(t *testing.T) {
	for _, want := range []bool{false, true} {
		for _, kv := range EnvFor(Tracing{Exporter: ExporterStdout, DebugPlumbing: want}, "storage/file") {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		cfg, _, err := FromEnv()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.DebugPlumbing != want {
			t.Errorf("DebugPlumbing through the environment = %v, want %v", cfg.DebugPlumbing, want)
		}
	}
	t.Setenv(EnvDebugPlumbing, "maybe")
	if _, _, err := FromEnv(); err == nil {
		t.Errorf("FromEnv accepted %s=maybe", EnvDebugPlumbing)
	}
}
