package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// Consumer groups deleted on replicated nodes with real `ferry run`
// processes (docs/admin.md, "Consumer groups"): `ferry group delete` on the
// raft leader or the master deletes the group's offsets on every node, a
// node that was down meanwhile (raft: sent a snapshot past the deletion)
// and a restarted one keep it deleted, and a new consumer of the group
// starts from its reset policy (the queues' start), not from the old
// offsets.

// groupCLI runs `ferry group ARGS --broker broker` and returns its exit
// code and output.
func groupCLI(t *testing.T, broker string, args ...string) (int, string) {
	t.Helper()
	stdout, stderr, code := runFerry(t, nil, append(append([]string{"group"}, args...), "--broker", broker)...)
	return code, stdout + stderr
}

// groupKnown reports whether broker describes group: true when it does,
// false when it answers unknown group, and fails the test on anything else.
func groupKnown(t *testing.T, broker, group string) (bool, string) {
	t.Helper()
	code, out := groupCLI(t, broker, "describe", group, "--json")
	switch {
	case code == 0:
		return true, out
	case strings.Contains(out, fmt.Sprintf("unknown group %q", group)):
		return false, out
	}
	return false, out // not answering (starting, restarting): asked again
}

// waitGroup waits until broker describes group (known) or answers that it
// does not know it (!known).
func waitGroup(t *testing.T, node, broker, group string, known bool) {
	t.Helper()
	var last string
	ok := false
	defer func() {
		if !ok {
			t.Logf("%s's last answer: %s", node, last)
		}
	}()
	what := fmt.Sprintf("%s describes group %s", node, group)
	if !known {
		what = fmt.Sprintf("%s answers unknown group %s", node, group)
	}
	eventually(t, topicWait, what, func() bool {
		got, out := groupKnown(t, broker, group)
		last = out
		if known {
			return got
		}
		return !got && strings.Contains(out, "unknown group")
	})
	ok = true
}

// groupGeneration asks broker for group's generation (a heartbeat of a
// member that leaves at once, so the group gets no live member).
func groupGeneration(t *testing.T, broker, group string) uint64 {
	t.Helper()
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := ferryv1.NewBrokerClient(cc).Heartbeat(ctx, &ferryv1.HeartbeatRequest{Group: group, Member: "generation-probe", Leave: true}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("heartbeat of group %s on %s: %v", group, broker, err)
	}
	return resp.Generation
}

// checkStaleCommitRefused sends broker a commit of group on topic/0 with
// generation gen, older than the group's now (cur): it must be refused
// with FAILED_PRECONDITION naming the group and both generations.
func checkStaleCommitRefused(t *testing.T, node, broker, group, topic string, gen, cur uint64) {
	t.Helper()
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = ferryv1.NewBrokerClient(cc).CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Generation: gen,
		Offsets: []*ferryv1.GroupOffset{{Topic: topic, Queue: 0, Offset: 0}}})
	st := status.Convert(err)
	if err == nil || st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), fmt.Sprintf("%q", group)) ||
		!strings.Contains(st.Message(), fmt.Sprintf("generation %d", gen)) || !strings.Contains(st.Message(), fmt.Sprintf("generation %d", cur)) {
		t.Errorf("%s: a commit of group %s with generation %d (the group is at %d): %v, want FAILED_PRECONDITION naming the group and both generations", node, group, gen, cur, err)
	}
}

// latestSnapshotDeleted returns the groups nd's latest raft snapshot names
// as deleted, and whether it holds group billing's offsets; ok is false
// while it has none or it cannot be read.
func latestSnapshotDeleted(nd *raftNode, group string) (deleted []string, holds, ok bool) {
	dir := filepath.Join(filepath.Dir(nd.yaml), "data", "replication-raft", "snapshots")
	entries, _ := os.ReadDir(dir)
	var latest string
	var at time.Time
	for _, e := range entries {
		if info, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil && info.ModTime().After(at) {
			latest, at = e.Name(), info.ModTime()
		}
	}
	if latest == "" {
		return nil, false, false
	}
	b, err := os.ReadFile(filepath.Join(dir, latest, "state.bin"))
	if err != nil {
		return nil, false, false
	}
	var st struct {
		Offsets       map[string]json.RawMessage `json:"offsets"`
		DeletedGroups []string                   `json:"deleted_groups"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, false, false
	}
	_, holds = st.Offsets[group]
	return st.DeletedGroups, holds, true
}

// groupDeleteOnLeader runs `ferry group delete` on the raft leader, again on
// the next one when leadership moved under it.
func groupDeleteOnLeader(t *testing.T, nodes []*raftNode, group string) *raftNode {
	t.Helper()
	deadline := time.Now().Add(topicWait)
	for {
		leader, _ := waitLeader(t, nodes, "a raft leader")
		code, out := groupCLI(t, leader.broker, "delete", group)
		if code == 0 {
			t.Logf("group delete %s on leader %s: %s", group, leader.id, strings.TrimSpace(out))
			return leader
		}
		if !strings.Contains(out, "not leader") || time.Now().After(deadline) {
			t.Fatalf("ferry group delete %s on leader %s: exit %d\n%s", group, leader.id, code, out)
		}
	}
}

// On a 3-node raft group (tiny trailing_logs): group billing consumes topic
// bills on the leader, and every node stores its offsets. A follower is
// SIGKILLed; `ferry group delete` on another follower is refused, naming
// the leader; on the leader it succeeds, and both live nodes answer unknown
// group. The leader compacts its log past the deletion; the killed
// follower, restarted, is sent a snapshot and answers unknown group too
// (the snapshot names the deleted group, whose old offsets its store still
// held). The other follower, restarted, still answers unknown group. A new
// consumer of billing reads bills from its start again.
func TestRaftGroupDeleteReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	nodes := raftSnapshotGroup(t, 3)
	var seeds []string
	for _, nd := range nodes {
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	onLeader(t, nodes, "create", "bills", "--queues", "2")
	for _, nd := range nodes {
		waitTopic(t, nd.id, nd.broker, "bills", 2)
	}
	sent := sendTopic(t, seeds, "bills", "b", 20)
	leader, _ := waitLeader(t, nodes, "a raft leader")
	sameKeys(t, consumeTopic(t, bin, leader.broker, "bills", "billing", len(sent)), sent, "bills, first read of billing")
	for _, nd := range nodes {
		waitGroup(t, nd.id, nd.broker, "billing", true)
	}

	leader, _ = waitLeader(t, nodes, "a raft leader")
	var down, follower *raftNode
	for _, nd := range nodes {
		switch {
		case nd == leader:
		case down == nil:
			down = nd
		default:
			follower = nd
		}
	}
	down.kill(t)
	t.Logf("%s killed follower %s", stamp(), down.id)
	others := []*raftNode{leader, follower}

	if code, out := groupCLI(t, follower.broker, "delete", "billing"); code == 0 || !strings.Contains(out, "not leader") {
		t.Errorf("group delete on follower %s: exit %d, %q; want refused, not leader", follower.id, code, out)
	}
	groupDeleteOnLeader(t, others, "billing")
	deleted := time.Now()
	for _, nd := range others {
		waitGroup(t, nd.id, nd.broker, "billing", false)
	}

	var live []string
	for _, nd := range others {
		live = append(live, nd.broker)
	}
	produceMany(t, live, "away", 500, 4) // entries enough for snapshots past the deletion
	// Until the live nodes' snapshots no longer carry billing's tombstone
	// (dropped at the second snapshot after the deletion): the snapshot
	// the down node is sent does not name billing, and its store's old
	// offsets must go all the same.
	eventually(t, topicWait, "both live nodes snapshot past billing's tombstone", func() bool {
		for _, nd := range others {
			dels, holds, ok := latestSnapshotDeleted(nd, "billing")
			if !ok || !latestSnapshot(nd).After(deleted) || holds || slices.Contains(dels, "billing") {
				produceMany(t, live, "more", 60, 2)
				return false
			}
		}
		return true
	})
	down.start(t, bin)
	eventually(t, topicWait, down.id+" restores a snapshot", func() bool {
		n, _, err := restores(down.admin)
		return err == nil && n > 0
	})
	waitGroup(t, down.id, down.broker, "billing", false)

	follower.kill(t)
	follower.start(t, bin)
	t.Logf("%s restarted follower %s", stamp(), follower.id)
	waitTopic(t, follower.id, follower.broker, "bills", 2)
	waitGroup(t, follower.id, follower.broker, "billing", false)
	// Answering already, it might still be replaying the log: ask again
	// once it caught up with the leader's applied index.
	eventually(t, topicWait, follower.id+" applied what the leader applied", func() bool {
		_, lst := waitLeader(t, nodes, "a raft leader")
		st, err := follower.status(context.Background())
		return err == nil && st.AppliedIndex >= lst.AppliedIndex
	})
	for _, nd := range nodes {
		if known, out := groupKnown(t, nd.broker, "billing"); known {
			t.Errorf("%s describes deleted group billing:\n%s", nd.id, out)
		}
	}

	leader, _ = waitLeader(t, nodes, "a raft leader")
	sameKeys(t, consumeTopic(t, bin, leader.broker, "bills", "billing", len(sent)), sent, "bills, read of billing after its deletion")

	// Every node holds billing's generation after the deletion, 2: the
	// one that was down learned it from the snapshot it restored. A
	// commit of generation 1 (sent before the deletion, arriving now) is
	// refused by the leader.
	for _, nd := range nodes {
		if g := groupGeneration(t, nd.broker, "billing"); g != 2 {
			t.Errorf("%s: group billing at generation %d after one deletion, want 2", nd.id, g)
		}
	}
	leader, _ = waitLeader(t, nodes, "a raft leader")
	checkStaleCommitRefused(t, leader.id, leader.broker, "billing", "bills", 1, 2)
}

// On master–slave: group billing consumes topic bills on the master; the
// slave stores its offsets. `ferry group delete` on the slave is refused;
// on the master it succeeds, and the slave answers unknown group. With the
// master SIGKILLed and the slave promoted, the group stays unknown, and a
// new consumer of billing reads bills from its start.
func TestMasterSlaveGroupDeleteReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "sync", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "sync", sb, sr, []string{mr}, "5s")
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	eventually(t, topicWait, "slave linked to master", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	})
	if code, out := topicCLI(t, mb, "create", "bills", "--queues", "2"); code != 0 {
		t.Fatalf("create on the master: exit %d\n%s", code, out)
	}
	waitTopic(t, "slave", sb, "bills", 2)
	sent := sendTopic(t, []string{mb}, "bills", "b", 20)
	sameKeys(t, consumeTopic(t, bin, mb, "bills", "billing", len(sent)), sent, "bills, first read of billing")
	waitGroup(t, "slave", sb, "billing", true)

	if code, out := groupCLI(t, sb, "delete", "billing"); code == 0 || !strings.Contains(out, "not leader") {
		t.Errorf("group delete on the slave: exit %d, %q; want refused, not leader", code, out)
	}
	if code, out := groupCLI(t, mb, "delete", "billing"); code != 0 {
		t.Fatalf("group delete on the master: exit %d\n%s", code, out)
	}
	waitGroup(t, "master", mb, "billing", false)
	waitGroup(t, "slave", sb, "billing", false)

	master.kill(t)
	t.Logf("%s killed the master", stamp())
	if stdout, stderr, code := runFerry(t, nil, "cluster", "promote", "--node", sr); code != 0 {
		t.Fatalf("promote: exit %d\n%s%s", code, stdout, stderr)
	}
	eventually(t, topicWait, "the promoted slave takes produce", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.Role == "master"
	})
	if known, out := groupKnown(t, sb, "billing"); known {
		t.Errorf("the promoted slave describes deleted group billing:\n%s", out)
	}
	sameKeys(t, consumeTopic(t, bin, sb, "bills", "billing", len(sent)), sent, "bills on the promoted slave, read of billing after its deletion")
	// The promoted slave learned billing's generation with the deletion:
	// a commit of the generation before it is refused there too.
	if g := groupGeneration(t, sb, "billing"); g != 2 {
		t.Errorf("the promoted slave: group billing at generation %d after one deletion, want 2", g)
	}
	checkStaleCommitRefused(t, "the promoted slave", sb, "billing", "bills", 1, 2)
}

// On an async master–slave pair: group billing consumes topic orders on the
// master and the slave stores its offsets. The slave is SIGKILLed, the group
// deleted on the master, and the master SIGKILLed and started again before
// the slave comes back: the slave, restarted, links to the restarted master
// and answers unknown group (the master kept the deletion on its disk and
// sent it). billing then consumes again (from the queues' start) and the
// slave stores its new offsets; the master is restarted once more and sends
// the same deletion again at the link's opening: the slave made it already
// and keeps billing's new offsets (checked once a later group's commit, made
// after the deletion was sent, reached it).
func TestMasterSlaveGroupDeleteAfterMasterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "async", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "async", sb, sr, []string{mr}, "5s")
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	linked := func(what string) {
		t.Helper()
		eventually(t, topicWait, what, func() bool {
			st, err := clusterStatus(ctx, sr)
			return err == nil && st.LeaderConnected
		})
	}
	restartMaster := func() {
		t.Helper()
		master.kill(t)
		master.start(t, bin)
		eventually(t, topicWait, "the restarted master answers as master", func() bool {
			st, err := clusterStatus(ctx, mr)
			return err == nil && st.Role == "master"
		})
		t.Logf("%s restarted the master", stamp())
	}
	linked("slave linked to master")
	sent := sendTopic(t, []string{mb}, "orders", "o", 20)
	sameKeys(t, consumeTopic(t, bin, mb, "orders", "billing", len(sent)), sent, "orders, first read of billing")
	waitGroup(t, "slave", sb, "billing", true)

	slave.kill(t)
	t.Logf("%s killed the slave", stamp())
	if code, out := groupCLI(t, mb, "delete", "billing"); code != 0 {
		t.Fatalf("group delete on the master: exit %d\n%s", code, out)
	}
	waitGroup(t, "master", mb, "billing", false)
	restartMaster()
	slave.start(t, bin)
	linked("the restarted slave linked to the restarted master")
	waitGroup(t, "slave", sb, "billing", false)

	// billing's second life: read again from the start, its new offsets
	// on the slave.
	sameKeys(t, consumeTopic(t, bin, mb, "orders", "billing", len(sent)), sent, "orders, read of billing after its deletion")
	waitGroup(t, "slave", sb, "billing", true)
	restartMaster()
	linked("the slave linked to the master restarted again")
	sameKeys(t, consumeTopic(t, bin, mb, "orders", "marker", len(sent)), sent, "orders, read of marker")
	waitGroup(t, "slave", sb, "marker", true)
	if known, out := groupKnown(t, sb, "billing"); !known {
		t.Errorf("after the master's restart the slave lost billing's offsets committed after its deletion (the deletion was made again):\n%s", out)
	}
}
