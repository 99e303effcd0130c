package engine_test

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// startFaulty starts cfg with the fault-injection build of ferry for its
// plugins (go build -tags ferry_faults).
func startFaulty(t *testing.T, cfg *config.Pipeline) *engine.Engine {
	t.Helper()
	return startWith(t, cfg, ferrytest.BinaryWithTags(t, "ferry_faults"))
}

// The kill -9 tests and these run their plugins on the ring data plane.
func requireRing(t *testing.T, insts ...*pluginhost.Instance) {
	t.Helper()
	for _, inst := range insts {
		if dp := inst.DataPlane(); dp != sdk.DataPlaneRing {
			t.Fatalf("%s plugin runs on data plane %q, want %s", inst.Kind(), dp, sdk.DataPlaneRing)
		}
	}
}

// waitRestarted waits until inst was replaced at least once and the new
// process serves on fresh rings.
func waitRestarted(t *testing.T, inst *pluginhost.Instance) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for inst.Restarts() < 1 || inst.DataPlane() == "" {
		if time.Now().After(deadline) {
			t.Fatalf("%s plugin was not replaced (restarts %d)", inst.Kind(), inst.Restarts())
		}
		time.Sleep(10 * time.Millisecond)
	}
	requireRing(t, inst)
}

// durableUnderLoad is the quickstart with plugins in processes, the file
// store with fsync before the ack, and count messages sent at 3000/s. A send
// waits up to 30 s: through a fault's detection and the plugin's restart, as
// it would through a slow disk.
func durableUnderLoad(t *testing.T, count int) *config.Pipeline {
	cfg := quickstart(t, pluginhost.ModeSubprocess, count)
	cfg.Plugins.Storage.Type = "file"
	cfg.Plugins.Storage.Config = map[string]any{"flush": "sync"}
	cfg.Generators[0].Rate = 3000
	cfg.Producer.Timeout = 30 * time.Second
	return cfg
}

// faultCases: a plugin that writes a corrupt record into its ring, and one
// that stops reading its ring, mid-flow. The host must notice, kill and
// replace the process (fresh rings), and lose nothing acked: appends of
// unknown outcome are replayed, clients reconnect to a new transport.
func TestDataPlaneFaults(t *testing.T) {
	for _, c := range []struct {
		name, kind, fault string
	}{
		{"storage writes garbage", sdk.KindStorage, "garbage"},
		{"storage stops reading", sdk.KindStorage, "mute"},
		{"transport writes garbage", sdk.KindTransport, "garbage"},
		{"transport stops reading", sdk.KindTransport, "mute"},
		{"transport forwards an undecodable request", sdk.KindTransport, "undecodable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("FERRY_FAULT_RING", c.kind+":"+c.fault+":200")
			t.Setenv("FERRY_FAULT_RING_ONCE", filepath.Join(t.TempDir(), "fired"))
			t.Setenv(sdk.EnvRingStall, "2s")
			e := startFaulty(t, durableUnderLoad(t, 6000))
			requireRing(t, e.Storage(), e.Transport())
			inst := e.Storage()
			if c.kind == sdk.KindTransport {
				inst = e.Transport()
			}
			s := runPipeline(t, e, 120*time.Second)
			if c.fault == "undecodable" {
				// That request fails; the plugin is not replaced for it.
				if r := inst.Restarts(); r != 0 {
					t.Errorf("the transport was restarted %d times for an undecodable request", r)
				}
			} else {
				waitRestarted(t, inst)
			}
			checkAllDelivered(t, s, 6000)
			checkEachMessage(t, s)
			if stored := storedCount(t, e, "orders"); stored != 6000 {
				t.Errorf("storage holds %d messages, want exactly 6000 (no loss, no duplicates)", stored)
			}
		})
	}
}

// Plugins killed with SIGKILL at random points under load, over and over,
// each time on its rings: every new process gets fresh rings, appends of
// unknown outcome are replayed to it, and nothing acked is lost or stored
// twice.
func TestKillPluginsAtRandomUnderLoad(t *testing.T) {
	e := start(t, durableUnderLoad(t, 12000))
	requireRing(t, e.Storage(), e.Transport())
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5; i++ {
			inst := e.Storage()
			if i%2 == 1 {
				inst = e.Transport()
			}
			killDuringRun(t, e, inst, time.Duration(200+rng.IntN(500))*time.Millisecond)
		}
	}()
	s := runPipeline(t, e, 180*time.Second)
	<-done
	checkAllDelivered(t, s, 12000)
	checkEachMessage(t, s)
	if stored := storedCount(t, e, "orders"); stored != 12000 {
		t.Errorf("storage holds %d messages, want exactly 12000 (no loss, no duplicates)", stored)
	}
	if r := e.Storage().Restarts(); r < 3 {
		t.Errorf("storage restarts = %d, want 3", r)
	}
}

// With plugins.data_plane: grpc every call goes over gRPC (the data plane of
// plugins that do not speak the rings), end to end.
func TestQuickstartGRPCDataPlane(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 5000)
	cfg.Plugins.DataPlane = pluginhost.DataPlaneGRPC
	e := start(t, cfg)
	for _, inst := range []*pluginhost.Instance{e.Storage(), e.Transport()} {
		if dp := inst.DataPlane(); dp != "grpc" {
			t.Fatalf("%s plugin runs on data plane %q, want grpc", inst.Kind(), dp)
		}
	}
	checkAllDelivered(t, runPipeline(t, e, 60*time.Second), 5000)
}

// A pipeline's plugins.ring_size_kib sizes the rings; with the smallest
// rings, messages larger than a quarter of a ring travel split over several
// records, through real plugin processes, and all arrive.
func TestSmallRingsLargeMessages(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 300)
	cfg.Plugins.RingSizeKiB = 64
	cfg.Generators[0].Size = 40 << 10 // > 16 KiB: split in three records
	e := start(t, cfg)
	requireRing(t, e.Storage(), e.Transport())
	for _, inst := range []*pluginhost.Instance{e.Storage(), e.Transport()} {
		if got := inst.RingSize(); got != 64<<10 {
			t.Fatalf("%s plugin's rings are %d bytes, want %d (plugins.ring_size_kib: 64)", inst.Kind(), got, 64<<10)
		}
	}
	s := runPipeline(t, e, 120*time.Second)
	checkAllDelivered(t, s, 300)
}

// A produce arriving from the transport pokes the storage plugin's ring
// (Broker.PrepareProduce): with sync sends at a low rate the store sleeps
// between them, so pokes ring its bell, at most one per produce.
func TestProducePokesTheStore(t *testing.T) {
	const count = 300
	cfg := quickstart(t, pluginhost.ModeSubprocess, count)
	cfg.Generators[0].Rate = 200
	cfg.Generators[0].Mode = "sync"
	e := start(t, cfg)
	requireRing(t, e.Storage(), e.Transport())
	checkAllDelivered(t, runPipeline(t, e, 60*time.Second), count)
	impl, _, _ := e.Storage().Current()
	sc, ok := impl.(*sdk.StorageClient)
	if !ok {
		t.Fatalf("storage plugin client is %T", impl)
	}
	if p := sc.RingPokes(); p == 0 || p > count {
		t.Fatalf("the store's bell was poked %d times for %d sync produces, want 1 to %d", p, count, count)
	}
}
