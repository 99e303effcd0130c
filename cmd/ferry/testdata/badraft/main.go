// Command badraft is a deliberately broken consensus replication plugin, the
// negative control of the consensus cases of `ferry plugin test
// replication`: the built-in raft plugin, broken as FERRY_BADRAFT says:
//
//   - leaders: tells its broker it leads, whatever raft says;
//   - follower-writes: a follower stores a batch it should refuse, and
//     answers OK;
//   - apply-first: stores a batch and answers OK before raft commits it;
//   - no-catchup: serves its peers no messages for their catch-up after a
//     snapshot;
//   - ok-without-quorum: a leader that cannot reach a quorum of its peers
//     (their admin listeners' Status) stores a batch and answers OK;
//   - store-without-quorum: such a leader stores a batch before raft
//     commits it, and answers what raft answers.
//
// Tests build it; it is not part of ferry.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/replication/raft"
)

var fault = os.Getenv("FERRY_BADRAFT")

type badRaft struct {
	*raft.Plugin
	core  sdk.ReplicaCore
	peers []string // the other members' admin listeners
}

// badCore is the broker core as the broken plugin uses it.
type badCore struct {
	sdk.ReplicaCore
	node string
}

func (c badCore) SetRole(ctx context.Context, req *sdk.SetRoleRequest) error {
	if fault == "leaders" {
		req = &sdk.SetRoleRequest{Role: sdk.RoleLeader, LeaderNode: c.node}
	}
	return c.ReplicaCore.SetRole(ctx, req)
}

func (c badCore) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	resp, err := c.ReplicaCore.Read(ctx, req)
	// The catch-up reads frames of many messages; the plugin's own start
	// reads one message per queue.
	if fault == "no-catchup" && err == nil && req.MaxMessages > 1 {
		resp.Messages = nil
	}
	return resp, err
}

func (p *badRaft) Configure(ctx context.Context, config []byte, env *sdk.Environment) error {
	p.core = badCore{node: env.GetNode()}
	var cfg struct {
		Peers []struct{ ID, Admin string }
	}
	_ = json.Unmarshal(config, &cfg) // the plugin's own Configure says what is wrong
	for _, peer := range cfg.Peers {
		if peer.ID != env.GetNode() {
			p.peers = append(p.peers, peer.Admin)
		}
	}
	return p.Plugin.Configure(ctx, config, env)
}

// quorum reports whether this node and the peers that answer a Status
// call on their admin listeners are a majority of the group.
func (p *badRaft) quorum() bool {
	up := 1
	for _, addr := range p.peers {
		if status(addr) == nil {
			up++
		}
	}
	return 2*up > len(p.peers)+1
}

func status(addr string) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = ferryv1.NewReplicaLinkClient(cc).Status(ctx, &ferryv1.ReplicationStatusRequest{})
	return err
}

func (p *badRaft) Serve(ctx context.Context, core sdk.ReplicaCore) error {
	c := p.core.(badCore)
	c.ReplicaCore = core
	p.core = c
	return p.Plugin.Serve(ctx, c)
}

func (p *badRaft) Replicate(ctx context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	switch fault {
	case "apply-first":
		return p.applyHere(ctx, msgs)
	case "follower-writes":
		wait, err := p.Plugin.Replicate(ctx, msgs)
		if errors.Is(err, sdk.ErrNotLeader) {
			return p.applyHere(ctx, msgs)
		}
		return wait, err
	case "ok-without-quorum":
		if !p.quorum() {
			return p.applyHere(ctx, msgs)
		}
	case "store-without-quorum":
		if !p.quorum() {
			stored, err := p.core.Apply(ctx, msgs)
			if err != nil {
				return nil, err
			}
			wait, err := p.Plugin.Replicate(ctx, msgs)
			if err != nil {
				return nil, err
			}
			// Waited for in the answer's wait: Replicate must not
			// block (on the rings the core's answer comes on the
			// ring this call holds).
			return func(ctx context.Context) (sdk.Status, []int64, error) {
				if _, err := stored(ctx); err != nil {
					return 0, nil, err
				}
				return wait(ctx)
			}, nil
		}
	}
	return p.Plugin.Replicate(ctx, msgs)
}

// applyHere stores msgs on this node and answers OK, raft or not.
func (p *badRaft) applyHere(ctx context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	w, err := p.core.Apply(ctx, msgs)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (sdk.Status, []int64, error) {
		offs, err := w(ctx)
		return 1, offs, err // STATUS_OK
	}, nil
}

func main() {
	switch fault {
	case "leaders", "follower-writes", "apply-first", "no-catchup", "ok-without-quorum", "store-without-quorum":
	default:
		fmt.Fprintf(os.Stderr, "badraft: FERRY_BADRAFT=%q: want leaders, follower-writes, apply-first, no-catchup, ok-without-quorum or store-without-quorum\n", fault)
		os.Exit(2)
	}
	sdk.Serve(sdk.ServeOpts{Replication: &badRaft{Plugin: raft.New()}})
}
