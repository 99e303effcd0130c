package masterslave_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/plugins/replication/masterslave"
)

// nodeConfig is node i's section: its listener, the other node as its peer.
func nodeConfig(extra map[string]any) func(i int, addrs []string) []byte {
	return func(i int, addrs []string) []byte {
		var peers []string
		for j, a := range addrs {
			if j != i {
				peers = append(peers, a)
			}
		}
		c := map[string]any{"listen": addrs[i], "peers": peers}
		for k, v := range extra {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return b
	}
}

// Both modes pass the replication suite through the plugin boundary.
func TestConformance(t *testing.T) {
	t.Run("sync", func(t *testing.T) {
		sdktest.TestReplication(t, func(*testing.T) sdk.Replication { return masterslave.New(masterslave.ModeSync) },
			sdktest.ReplicationFeatures{NodeConfig: nodeConfig(map[string]any{"timeout": "1s"}), SyncReplicas: 1})
	})
	t.Run("async", func(t *testing.T) {
		sdktest.TestReplication(t, func(*testing.T) sdk.Replication { return masterslave.New(masterslave.ModeAsync) },
			sdktest.ReplicationFeatures{NodeConfig: nodeConfig(nil)})
	})
}

// Broken replication plugins, the suite's negative controls: each wraps the
// sync plugin and breaks one part of the contract.
type broken struct {
	*masterslave.Plugin
	core    func(sdk.ReplicaCore) sdk.ReplicaCore // wraps the core the plugin is given
	okEarly bool                                  // answers OK without waiting for the level
}

func (b *broken) Serve(ctx context.Context, core sdk.ReplicaCore) error {
	if b.core != nil {
		core = b.core(core)
	}
	return b.Plugin.Serve(ctx, core)
}

func (b *broken) Replicate(ctx context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	wait, err := b.Plugin.Replicate(ctx, msgs)
	if err != nil || !b.okEarly {
		return wait, err
	}
	return func(context.Context) (sdk.Status, []int64, error) { return 1, nil, nil }, nil
}

// reversing applies each batch's messages in reverse order, at the batch's
// offsets: the log's order is not the master's.
type reversing struct{ sdk.ReplicaCore }

func (c reversing) Apply(ctx context.Context, msgs []*sdk.Message) (sdk.ApplyWait, error) {
	out := make([]*sdk.Message, len(msgs))
	for i, m := range msgs {
		r := proto.Clone(msgs[len(msgs)-1-i]).(*sdk.Message)
		r.Offset = m.Offset
		out[i] = r
	}
	return c.ReplicaCore.Apply(ctx, out)
}

// blind is a slave that hides its log from the master and appends what it
// gets at its own next offsets, whatever the master's are.
type blind struct{ sdk.ReplicaCore }

func (c blind) NodeInfo(ctx context.Context) (*sdk.NodeInfo, error) {
	info, err := c.ReplicaCore.NodeInfo(ctx)
	if err == nil && info.Role == sdk.RoleSlave {
		info.Offsets = nil
	}
	return info, err
}

func (c blind) Apply(ctx context.Context, msgs []*sdk.Message) (sdk.ApplyWait, error) {
	info, err := c.ReplicaCore.NodeInfo(ctx)
	if err != nil {
		return nil, err
	}
	next := map[string]int64{}
	for _, o := range info.Offsets {
		next[fmt.Sprint(o.Topic, "/", o.Queue)] = o.End
	}
	out := make([]*sdk.Message, len(msgs))
	for i, m := range msgs {
		r := proto.Clone(m).(*sdk.Message)
		k := fmt.Sprint(m.Topic, "/", m.Queue)
		r.Offset = next[k]
		next[k]++
		out[i] = r
	}
	return c.ReplicaCore.Apply(ctx, out)
}

// forgetful is a master whose reads of its log find nothing: a slave that
// was away gets only what is shipped live.
type forgetful struct{ sdk.ReplicaCore }

func (c forgetful) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	resp, err := c.ReplicaCore.Read(ctx, req)
	if err == nil {
		resp.Messages = nil
	}
	return resp, err
}

// Each broken plugin fails the case that checks what it breaks, saying what
// went wrong.
func TestConformanceNegativeControls(t *testing.T) {
	defer masterslave.SetTailMessages(5)() // what a connected slave lacks is shipped from memory, the backlog of queue 0 after its absence (6) partly read from the master's log
	for _, c := range []struct {
		name, cases, want string
		b                 broken
	}{
		{"answers OK before replicating", "NeverOKBelowLevel", "answered STATUS_OK with the slave gone", broken{okEarly: true}},
		{"reorders a batch", "ReplicateInOrder", "did not hold", broken{core: func(c sdk.ReplicaCore) sdk.ReplicaCore { return reversing{c} }}},
		{"ignores divergence", "DivergenceRefused", "log was changed", broken{core: func(c sdk.ReplicaCore) sdk.ReplicaCore { return blind{c} }}},
		{"never catches up", "CatchUpAfterAbsence", "is not the master's", broken{core: func(c sdk.ReplicaCore) sdk.ReplicaCore { return forgetful{c} }}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := sdktest.ReplicationFeatures{NodeConfig: nodeConfig(map[string]any{"timeout": "1s"}), SyncReplicas: 1, Bound: 3 * time.Second}
			for _, rc := range sdktest.ReplicationCases() {
				if !sdktest.Selected(rc.Name, c.cases) {
					continue
				}
				h := sdktest.NewGoReplicationHarness(t, "grpc", 2, func(*testing.T) sdk.Replication {
					b := c.b
					b.Plugin = masterslave.New(masterslave.ModeSync)
					return &b
				}, f)
				err := sdktest.RunReplicationCase(rc, h)
				if err == nil {
					t.Fatalf("%s passed a plugin that %s", rc.Name, c.name)
				}
				if _, skipped := sdktest.Skipped(err); skipped || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("%s: %v, want a failure saying %q", rc.Name, err, c.want)
				}
			}
		})
	}
}
