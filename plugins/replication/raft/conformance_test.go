package raft_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/replication/raft"
)

// The raft plugin passes the consensus cases of the replication suite from
// go test, as a Go plugin author runs them (docs/plugins.md): three members
// in this process at the plugin's default timing, each served through the
// plugin boundary, over gRPC and the rings. `ferry plugin test replication
// raft` runs the same cases on plugin processes (cmd/ferry).
func TestConformance(t *testing.T) {
	section := []byte(`{"listen": "$LISTEN", "admin": "$ADMIN", "peers": "$MEMBERS",
		"snapshot_threshold": 4, "trailing_logs": 0, "snapshot_interval": "20ms"}`)
	sdktest.TestReplication(t, func(*testing.T) sdk.Replication { return raft.New() },
		sdktest.ReplicationFeatures{ConsensusConfig: sdktest.ConsensusSection(section), Snapshots: true})
}

// blockedCore holds the plugin's first NodeInfo until release is closed.
type blockedCore struct {
	*sdktest.ReplicaTestCore
	entered chan struct{}
	release chan struct{}
}

func (c blockedCore) NodeInfo(ctx context.Context) (*sdk.NodeInfo, error) {
	select {
	case c.entered <- struct{}{}:
		<-c.release
	default:
	}
	return c.ReplicaTestCore.NodeInfo(ctx)
}

// A plugin closed while Serve is starting raft (a host stopping a plugin
// that is still starting, as the conformance cases' members are when a
// case ends early) closes once raft is up, and Serve ends: raft never reads
// a closed log (hashicorp/raft panics on it).
func TestCloseWhileServeStarts(t *testing.T) {
	p := raft.New()
	addr := ferrytest.FreeAddr(t)
	config := fmt.Sprintf(`{"listen": %q, "peers": [{"id": "n1", "raft": %q, "broker": "127.0.0.1:1"}]}`, addr, addr)
	if err := p.Configure(context.Background(), []byte(config), &sdk.Environment{Node: "n1", DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	core := blockedCore{sdktest.NewConsensusTestCore("n1"), make(chan struct{}), make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, core) }()
	<-core.entered
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while Serve was starting raft", err)
	case <-time.After(100 * time.Millisecond): // Close waits for the start
	}
	close(core.release)
	cancel()
	for _, ch := range []chan error{closed, served} {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatal("Close or Serve did not return within 30s")
		}
	}
}
