package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// A consumer group's commit acknowledged by the raft leader survives the
// leader's SIGKILL right after the acknowledgement: real `ferry run`
// processes (3 raft nodes, every raft link through a proxy), the links the
// leader dials delayed by 300 ms each way, so that an entry leaving it is
// on the way for that long. The group commits on the leader, and as soon
// as the answer is OK the leader's links drop whatever they still carry
// and the leader is killed -9 (no waiting for followers). The group then
// consumes from the newly elected leader: nothing at or before the
// acknowledged commit point may come again, everything after it must.
func TestFaultRaftCommitAckedSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	if again := raftCommitThenKill(t, ferrytest.Binary(t)); again > 0 {
		t.Errorf("%d message(s) the group had committed (acknowledged) were delivered again after the failover", again)
	}
}

// The negative control: the same test with the raft plugin answering a
// commit as soon as raft took its entry, as the broker's best-effort
// background reports did (the test build's fault hook
// FERRY_FAULT_RAFT_OFFSETS_NOWAIT=1). The acknowledged commit dies with the
// leader and the group resumes from its previous commit: the check above
// sees the redelivery.
func TestFaultRaftCommitAckedSurvivesLeaderKillControl(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	t.Setenv("FERRY_FAULT_RAFT_OFFSETS_NOWAIT", "1")
	if again := raftCommitThenKill(t, bin); again == 0 {
		t.Errorf("with commits answered before the log committed them, nothing was delivered again: the test cannot fail")
	}
}

// raftCommitThenKill runs the scenario and returns how many messages before
// the acknowledged commit point the group got again from the new leader.
// Messages after it that never came fail the test.
func raftCommitThenKill(t *testing.T, bin string) int {
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

	// The first commit point reaches every node before anything goes
	// wrong: that is where the group resumes if the second is lost.
	first, second := at(1, 4), at(3, 4)
	if err := commitGroup(leader.broker, first); err != nil {
		t.Fatalf("first commit on leader %s: %v", leader.id, err)
	}
	for _, nd := range m.nodes {
		eventually(t, faultWait, nd.id+" has the first commit point", func() bool {
			got, _ := groupOffsets(t, nd.broker)
			return fmt.Sprint(got) == fmt.Sprint(first)
		})
	}

	li := m.index(leader)
	for j := range m.nodes {
		if j != li {
			m.px[li][j].SetDelay(300 * time.Millisecond)
		}
	}
	t.Logf("%s delayed the raft links leader %s dials by 300 ms each way", stamp(), leader.id)
	t0 := time.Now()
	if err := commitGroup(leader.broker, second); err != nil {
		t.Fatalf("second commit on leader %s: %v", leader.id, err)
	}
	acked := time.Since(t0)
	// Whatever the links still carry from the leader dies with it.
	m.links(li, func(p *ferrytest.Proxy) { p.Blackhole() })
	if err := syscall.Kill(-leader.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = leader.cmd.Wait()
	t.Logf("%s commit %v acknowledged after %s; leader %s killed at once", stamp(), second, acked.Round(time.Millisecond), leader.id)

	var others []*raftNode
	for _, nd := range m.nodes {
		if nd != leader {
			others = append(others, nd)
		}
	}
	next, _ := waitLeader(t, others, "a new raft leader")
	got, _ := groupOffsets(t, next.broker)
	t.Logf("%s %s leads; the group's offsets there: %v", stamp(), next.id, got)

	// As many as the group has left from where the new leader has it
	// (the acknowledged point, or an older one).
	want := int64(0)
	for q, end := range ends {
		want += end - max(got[q], 0)
	}
	lines := consumeLines(t, bin, "--broker", next.broker, "--count", fmt.Sprint(want), "--idle", "30s")
	seen := map[int32]map[int64]bool{}
	again := 0
	for _, l := range lines {
		if seen[l.Queue] == nil {
			seen[l.Queue] = map[int64]bool{}
		}
		seen[l.Queue][l.Offset] = true
		if l.Offset < second[l.Queue] {
			again++
		}
	}
	for q, end := range ends {
		for off := second[q]; off < end; off++ {
			if !seen[q][off] {
				t.Errorf("queue %d: offset %d, after the commit point %d, never delivered from the new leader", q, off, second[q])
			}
		}
	}
	t.Logf("from the new leader: %d messages (%d again from before the commit point), want %d", len(lines), again, want)
	return again
}

// commitGroup commits the test group's offsets on orders straight to one
// broker and returns its answer.
func commitGroup(broker string, offs map[int32]int64) error {
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &ferryv1.CommitOffsetsRequest{Group: offsetsGroup}
	for q, off := range offs {
		req.Offsets = append(req.Offsets, &ferryv1.GroupOffset{Topic: "orders", Queue: q, Offset: off})
	}
	_, err = ferryv1.NewBrokerClient(cc).CommitOffsets(ctx, req)
	return err
}
