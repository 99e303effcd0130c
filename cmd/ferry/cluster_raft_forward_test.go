package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// On a 3-node raft group (real `ferry run` processes): a consumer's commit
// through a follower carries its group's generation and is forwarded to
// the leader, whose core takes it as a commit of its own clients.
//   - `ferry group reset-offsets` on a follower is refused, naming the
//     leader's node id and broker address, and changes nothing.
//   - After `ferry group delete` on the leader, a forwarded commit of the
//     old generation (a follower's forward sent before the deletion,
//     arriving after it: sent here straight to the leader's admin
//     listener, ReplicaLink.CommitOffsets, as the follower's plugin sends
//     it) is refused with FAILED_PRECONDITION, STALE_GENERATION, and the
//     group does not come back on any node: checked once every node
//     applied a later commit of another group through the log.
//   - A commit through the follower of the new generation is taken.
func TestRaftForwardedCommitPassesTheLeadersGate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	res := raftForwardAfterDelete(t, ferrytest.Binary(t))
	if status.Code(res.lateErr) != codes.FailedPrecondition || !strings.Contains(res.lateErr.Error(), "STALE_GENERATION") ||
		!strings.Contains(res.lateErr.Error(), `group "billing"`) {
		t.Errorf("a forwarded commit of generation 1 after the deletion: %v, want FAILED_PRECONDITION, STALE_GENERATION naming group billing", res.lateErr)
	}
	for _, id := range res.back {
		t.Errorf("after a forwarded commit of the old generation, node %s holds group billing's offsets again (the deleted group came back)", id)
	}
}

// The negative control: the same scenario with the leader committing a
// forwarded commit through the log without its core's checks, as before
// they were applied (the test build's FERRY_FAULT_RAFT_FORWARD_NO_GATE=1):
// the late commit is taken and the deleted group comes back on the nodes,
// which the checks above see.
func TestRaftForwardedCommitPassesTheLeadersGateControl(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	t.Setenv("FERRY_FAULT_RAFT_FORWARD_NO_GATE", "1")
	res := raftForwardAfterDelete(t, bin)
	if res.lateErr != nil {
		t.Errorf("control: the late forwarded commit was refused (%v): the hook did not bypass the gate", res.lateErr)
	}
	if len(res.back) == 0 {
		t.Errorf("control: with forwarded commits unchecked, no node holds the deleted group again: the test cannot fail")
	}
	t.Logf("control: the deleted group came back on %v", res.back)
}

type forwardResult struct {
	lateErr error    // the leader's answer to the late forwarded commit
	back    []string // the nodes that hold the deleted group's offsets
}

func raftForwardAfterDelete(t *testing.T, bin string) forwardResult {
	t.Helper()
	nodes := raftGroupVia(t, 3, nil, `heartbeat_timeout: 1s
election_timeout: 1s
leader_lease_timeout: 500ms
`)
	var seeds []string
	for _, nd := range nodes {
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	waitLeader(t, nodes, "a raft leader")
	produceMany(t, seeds, "m", 40, 2)
	leader, _ := waitLeader(t, nodes, "a raft leader")
	var follower *raftNode
	for _, nd := range nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	// Through the follower, forwarded to the leader: taken, on every node.
	if err := commitGen(follower.broker, "billing", 1, 1); err != nil {
		t.Fatalf("commit of generation 1 through follower %s: %v", follower.id, err)
	}
	for _, nd := range nodes {
		eventually(t, faultWait, nd.id+" has billing's commit", func() bool {
			got, _ := groupOffsetsOf(t, nd.broker, "billing")
			return got[0] == 1
		})
	}

	// A reset on the follower: refused, naming the leader; nothing changes.
	code, out := groupCLI(t, follower.broker, "reset-offsets", "billing", "--topic", "orders", "--to-latest")
	t.Logf("reset-offsets on follower %s: exit %d: %s", follower.id, code, strings.TrimSpace(out))
	if code == 0 || !strings.Contains(out, "not leader") || !strings.Contains(out, leader.id) || !strings.Contains(out, leader.broker) {
		t.Errorf("reset-offsets on follower %s: exit %d, %q; want refused, not leader, naming leader %s at %s", follower.id, code, out, leader.id, leader.broker)
	}
	if got, _ := groupOffsetsOf(t, follower.broker, "billing"); got[0] != 1 {
		t.Errorf("after the refused reset on %s billing's offset on queue 0 is %d, want 1", follower.id, got[0])
	}

	leader = groupDeleteOnLeader(t, nodes, "billing")
	for _, nd := range nodes {
		waitGroup(t, nd.id, nd.broker, "billing", false)
	}

	// The follower's forward of a commit made before the deletion,
	// arriving at the leader after it.
	var res forwardResult
	res.lateErr = forwardToLeader(leader.admin, "billing", 1, 5)
	t.Logf("%s the late forward: %v", stamp(), res.lateErr)

	// A later commit through the log: once a node holds it, it applied
	// whatever the late forward committed.
	if err := commitGroup(leader.broker, "barrier", map[int32]int64{0: 1}); err != nil {
		t.Fatalf("barrier commit on leader %s: %v", leader.id, err)
	}
	for _, nd := range nodes {
		eventually(t, faultWait, nd.id+" applied the barrier commit", func() bool {
			got, _ := groupOffsetsOf(t, nd.broker, "barrier")
			return got[0] == 1
		})
		if got, _ := groupOffsetsOf(t, nd.broker, "billing"); got[0] != -1 {
			res.back = append(res.back, nd.id)
		}
	}

	// Through the follower, of the new generation: taken.
	if len(res.back) == 0 {
		eventually(t, faultWait, "a commit of generation 2 through follower "+follower.id, func() bool {
			err := commitGen(follower.broker, "billing", 2, 2)
			if err != nil {
				t.Logf("commit of generation 2 through %s: %v", follower.id, err)
			}
			return err == nil
		})
		for _, nd := range nodes {
			eventually(t, faultWait, nd.id+" has billing's commit of generation 2", func() bool {
				got, _ := groupOffsetsOf(t, nd.broker, "billing")
				return got[0] == 2
			})
		}
	}
	return res
}

// commitGen commits group's offset off on orders/0 with generation gen
// straight to one broker (a consumer's CommitOffsets).
func commitGen(broker, group string, gen uint64, off int64) error {
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = ferryv1.NewBrokerClient(cc).CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Generation: gen,
		Offsets: []*ferryv1.GroupOffset{{Topic: "orders", Queue: 0, Offset: off}}})
	return err
}

// forwardToLeader sends a consumer commit to a raft leader's admin
// listener as a follower's plugin forwards it (ReplicaLink.CommitOffsets).
func forwardToLeader(admin, group string, gen uint64, off int64) error {
	cc, err := grpc.NewClient(admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = ferryv1.NewReplicaLinkClient(cc).CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Generation: gen,
		Offsets: []*ferryv1.GroupOffset{{Topic: "orders", Queue: 0, Offset: off}}})
	return err
}
