package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// A consumer group's commit acknowledged by the raft group survives the
// leader's SIGKILL right after the acknowledgement, whether the consumer
// committed on the leader or through a follower (which forwards it to the
// leader): real `ferry run` processes (3 raft nodes, every raft link
// through a proxy), the links the leader dials delayed by 300 ms each way,
// so that an entry leaving it is on the way for that long. Group billing
// commits on the leader and group billing-f through a follower, at the
// same time, and as soon as both answers are OK the leader's links drop
// whatever they still carry and the leader is killed -9 (no waiting for
// followers). Then, for each group:
//   - once both surviving nodes applied the new leader's log up to a
//     commit answered in its term, each holds exactly the acknowledged
//     offsets;
//   - consumed from the new leader, nothing before the acknowledged
//     commit point comes again, and everything after it comes.
func TestFaultRaftCommitAckedSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	res := raftCommitThenKill(t, ferrytest.Binary(t))
	for _, g := range []string{offsetsGroup, followerGroup} {
		if n := res.again[g]; n > 0 {
			t.Errorf("group %s (%s): %d message(s) the group had committed (acknowledged) were delivered again after the failover", g, committedOn(g), n)
		}
		for _, m := range res.mismatch[g] {
			t.Errorf("group %s (%s): %s", g, committedOn(g), m)
		}
	}
}

// The negative controls, in one run: the same test with the raft plugin
// answering a leader's commit as soon as raft took its entry, as the
// broker's best-effort background reports did (the test build's fault hook
// FERRY_FAULT_RAFT_OFFSETS_NOWAIT=1), and with followers keeping the
// commits made through them instead of forwarding them to the leader
// (FERRY_FAULT_RAFT_NO_FORWARD=1). The two hooks touch disjoint commits:
// with nothing forwarded, the first touches only billing's (made on the
// leader), the second only billing-f's. Billing's acknowledged commit dies
// with the leader and the group resumes from its previous commit; so does
// billing-f's on the follower that did not take it (and on the new leader,
// unless that is the follower that took it): the checks above see it.
func TestFaultRaftCommitAckedSurvivesLeaderKillControl(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	t.Setenv("FERRY_FAULT_RAFT_OFFSETS_NOWAIT", "1")
	t.Setenv("FERRY_FAULT_RAFT_NO_FORWARD", "1")
	res := raftCommitThenKill(t, bin)
	if res.again[offsetsGroup] == 0 {
		t.Errorf("with commits answered before the log committed them, nothing of group %s was delivered again: the test cannot fail", offsetsGroup)
	}
	if res.again[followerGroup] == 0 && len(res.mismatch[followerGroup]) == 0 {
		t.Errorf("with commits kept on the follower that took them, group %s lost nothing: the test cannot fail", followerGroup)
	}
	t.Logf("control: %s again %d, nodes %q; %s again %d, nodes %q", offsetsGroup, res.again[offsetsGroup], res.mismatch[offsetsGroup],
		followerGroup, res.again[followerGroup], res.mismatch[followerGroup])
}

// followerGroup commits through a follower in raftCommitThenKill.
const followerGroup = "billing-f"

func committedOn(group string) string {
	if group == followerGroup {
		return "committed through a follower"
	}
	return "committed on the leader"
}

// commitKillResult is what raftCommitThenKill saw, per group: how many
// messages before the acknowledged commit point the new leader delivered
// again, and the surviving nodes that do not hold the acknowledged offsets.
type commitKillResult struct {
	again    map[string]int
	mismatch map[string][]string
}

// raftCommitThenKill runs the scenario. Messages after a commit point that
// never came fail the test.
func raftCommitThenKill(t *testing.T, bin string) commitKillResult {
	// A 600 ms round trip on the leader's links is far inside these
	// timeouts, so the leader is not deposed by the delay alone.
	m := startRaftMeshWith(t, bin, `heartbeat_timeout: 4s
election_timeout: 4s
leader_lease_timeout: 3s
`)
	produceMany(t, m.seeds(), "m", offsetsMessages, 2)
	leader, _ := waitLeader(t, m.nodes, "a raft leader")
	_, ends := groupOffsets(t, leader.broker)
	if sumMap(ends) < offsetsMessages {
		t.Fatalf("the leader holds %v messages per queue, want at least %d in all", ends, offsetsMessages)
	}
	at := func(num, den int64) map[int32]int64 {
		out := map[int32]int64{}
		for q, end := range ends {
			out[q] = end * num / den
		}
		return out
	}
	groups := []string{offsetsGroup, followerGroup}

	// The first commit point reaches every node before anything goes
	// wrong: that is where a group resumes if the second is lost.
	first, second := at(1, 4), at(3, 4)
	for _, g := range groups {
		if err := commitGroup(leader.broker, g, first); err != nil {
			t.Fatalf("first commit of %s on leader %s: %v", g, leader.id, err)
		}
	}
	for _, nd := range m.nodes {
		for _, g := range groups {
			eventually(t, faultWait, nd.id+" has the first commit point of "+g, func() bool {
				got, _ := groupOffsetsOf(t, nd.broker, g)
				return fmt.Sprint(got) == fmt.Sprint(first)
			})
		}
	}

	li := m.index(leader)
	via := m.nodes[(li+1)%len(m.nodes)] // the follower billing-f commits through
	for j := range m.nodes {
		if j != li {
			m.px[li][j].SetDelay(300 * time.Millisecond)
		}
	}
	t.Logf("%s delayed the raft links leader %s dials by 300 ms each way", stamp(), leader.id)
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := map[string]error{}
	took := map[string]time.Duration{}
	var mu sync.Mutex
	for _, g := range groups {
		to := leader
		if g == followerGroup {
			to = via
		}
		wg.Go(func() {
			err := commitGroup(to.broker, g, second)
			mu.Lock()
			errs[g], took[g] = err, time.Since(t0)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, g := range groups {
		if errs[g] != nil {
			t.Fatalf("second commit of %s (%s): %v", g, committedOn(g), errs[g])
		}
	}
	// Whatever the links still carry from the leader dies with it.
	m.links(li, func(p *ferrytest.Proxy) { p.Blackhole() })
	if err := syscall.Kill(-leader.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = leader.cmd.Wait()
	t.Logf("%s commit %v acknowledged: %s on leader %s after %s, %s through follower %s after %s; leader killed at once", stamp(), second,
		offsetsGroup, leader.id, took[offsetsGroup].Round(time.Millisecond), followerGroup, via.id, took[followerGroup].Round(time.Millisecond))

	var others []*raftNode
	for _, nd := range m.nodes {
		if nd != leader {
			others = append(others, nd)
		}
	}
	next, _ := waitLeader(t, others, "a new raft leader")

	// A commit the new leader answers is committed in its term: every
	// entry before it is committed too. Once both nodes applied it,
	// whatever was committed before the kill is in both stores.
	var target uint64
	eventually(t, faultWait, "a commit answered by the new leader "+next.id, func() bool {
		if err := commitGroup(next.broker, "marker", map[int32]int64{0: 0}); err != nil {
			return false
		}
		st, err := next.status(context.Background())
		if err != nil {
			return false
		}
		target = st.AppliedIndex
		return true
	})
	for _, nd := range others {
		eventually(t, faultWait, fmt.Sprintf("%s applied entry %d", nd.id, target), func() bool {
			st, err := nd.status(context.Background())
			return err == nil && st.AppliedIndex >= target
		})
	}
	res := commitKillResult{again: map[string]int{}, mismatch: map[string][]string{}}
	for _, g := range groups {
		for _, nd := range others {
			if got, _ := groupOffsetsOf(t, nd.broker, g); fmt.Sprint(got) != fmt.Sprint(second) {
				res.mismatch[g] = append(res.mismatch[g], fmt.Sprintf("%s (applied through entry %d) holds offsets %v, not the acknowledged %v", nd.id, target, got, second))
			}
		}
	}

	for _, g := range groups {
		got, _ := groupOffsetsOf(t, next.broker, g)
		t.Logf("%s %s leads; group %s's offsets there: %v", stamp(), next.id, g, got)
		// As many as the group has left from where the new leader has
		// it (the acknowledged point, or an older one).
		want := int64(0)
		for q, end := range ends {
			want += end - max(got[q], 0)
		}
		lines := consumeLines(t, bin, "--broker", next.broker, "--group", g, "--count", fmt.Sprint(want), "--idle", "30s")
		seen := map[int32]map[int64]bool{}
		for _, l := range lines {
			if seen[l.Queue] == nil {
				seen[l.Queue] = map[int64]bool{}
			}
			seen[l.Queue][l.Offset] = true
			if l.Offset < second[l.Queue] {
				res.again[g]++
			}
		}
		for q, end := range ends {
			for off := second[q]; off < end; off++ {
				if !seen[q][off] {
					t.Errorf("group %s, queue %d: offset %d, after the commit point %d, never delivered from the new leader", g, q, off, second[q])
				}
			}
		}
		t.Logf("group %s from the new leader: %d messages (%d again from before the commit point), want %d", g, len(lines), res.again[g], want)
	}
	return res
}

// commitGroup commits a group's offsets on orders straight to one broker
// (the consumer's CommitOffsets call) and returns its answer.
func commitGroup(broker, group string, offs map[int32]int64) error {
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &ferryv1.CommitOffsetsRequest{Group: group}
	for q, off := range offs {
		req.Offsets = append(req.Offsets, &ferryv1.GroupOffset{Topic: "orders", Queue: q, Offset: off})
	}
	_, err = ferryv1.NewBrokerClient(cc).CommitOffsets(ctx, req)
	return err
}
