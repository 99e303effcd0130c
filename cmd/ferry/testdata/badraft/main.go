// Command badraft is a deliberately broken consensus replication plugin, the
// negative control of the consensus cases of `ferry plugin test
// replication`: the built-in raft plugin, broken as FERRY_BADRAFT says:
//
//   - leaders: tells its broker it leads, whatever raft says;
//   - follower-writes: a follower stores a batch it should refuse, and
//     answers OK;
//   - apply-first: stores a batch and answers OK before raft commits it;
//   - no-catchup: serves its peers no messages for their catch-up after a
//     snapshot.
//
// Tests build it; it is not part of ferry.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/replication/raft"
)

var fault = os.Getenv("FERRY_BADRAFT")

type badRaft struct {
	*raft.Plugin
	core sdk.ReplicaCore
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
	return p.Plugin.Configure(ctx, config, env)
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
	case "leaders", "follower-writes", "apply-first", "no-catchup":
	default:
		fmt.Fprintf(os.Stderr, "badraft: FERRY_BADRAFT=%q: want leaders, follower-writes, apply-first or no-catchup\n", fault)
		os.Exit(2)
	}
	sdk.Serve(sdk.ServeOpts{Replication: &badRaft{Plugin: raft.New()}})
}
