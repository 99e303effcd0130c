package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// raftMembersGroup makes n raft nodes (tiny snapshot settings, so that a
// node that joins empty is sent a snapshot) without pipelines; writePipeline
// writes one.
func raftMembersGroup(t *testing.T, n int) []*raftNode {
	t.Helper()
	var nodes []*raftNode
	for i := range n {
		dir := t.TempDir()
		nodes = append(nodes, &raftNode{clusterNode: &clusterNode{id: fmt.Sprintf("r%d", i+1), broker: ferrytest.FreeAddr(t), repl: ferrytest.FreeAddr(t),
			yaml: filepath.Join(dir, fmt.Sprintf("r%d.yaml", i+1))}, admin: ferrytest.FreeAddr(t)})
	}
	return nodes
}

// writePipeline writes nd's pipeline with peers as its peers list; join
// sets join: true (the node waits to be added instead of bootstrapping).
func writePipeline(t *testing.T, nd *raftNode, peers []*raftNode, join bool) {
	t.Helper()
	var ps []string
	for _, p := range peers {
		ps = append(ps, fmt.Sprintf("{id: %s, raft: %q, broker: %q, admin: %q}", p.id, p.repl, p.broker, p.admin))
	}
	yaml := fmt.Sprintf(`name: raft-members
node: {id: %s, data_dir: %s}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q}}
  replication:
    type: raft
    config:
      listen: %q
      admin: %q
      join: %v
      peers: [%s]
      heartbeat_timeout: 1s
      election_timeout: 1s
      leader_lease_timeout: 500ms
      trailing_logs: 10
      snapshot_threshold: 50
      snapshot_interval: 100ms
topics:
  - {name: orders, queues: 4}
`, nd.id, filepath.Join(filepath.Dir(nd.yaml), "data"), nd.broker, nd.repl, nd.admin, join, strings.Join(ps, ", "))
	if err := os.WriteFile(nd.yaml, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ferryCLI runs the ferry binary and fails the test if it fails.
func ferryCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	t.Logf("%s ferry %s", stamp(), strings.Join(args, " "))
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("%s\n%s", stamp(), out)
	return string(out)
}

// voters lists the voters of the group as nd's status reports them.
func voters(nd *raftNode) (string, error) {
	st, err := nd.status(context.Background())
	if err != nil {
		return "", err
	}
	var vs []string
	for _, s := range st.Servers {
		if s.Suffrage == "voter" {
			vs = append(vs, s.Id)
		}
	}
	return strings.Join(vs, ","), nil
}

// ids joins the nodes' ids with commas.
func ids(nodes []*raftNode) string {
	var s []string
	for _, nd := range nodes {
		s = append(s, nd.id)
	}
	return strings.Join(s, ",")
}

// waitVoters waits until the leader among nodes reports exactly want (ids,
// comma-separated, in configuration order) as the group's voters.
func waitVoters(t *testing.T, nodes []*raftNode, want string) {
	t.Helper()
	got := ""
	eventually(t, faultWait, "voters "+want, func() bool {
		leader := raftLeader(nodes)
		if leader == nil {
			return false
		}
		got, _ = voters(leader)
		return got == want
	})
}

// Raft membership under a producer load: r1–r3 bootstrap a group; r4 and r5
// start empty with join: true and are added with `ferry cluster add-node`
// (non-voters until caught up, then voters); a node that never catches up
// stays a non-voter; the leader and one more node are removed with `ferry
// cluster remove-node` (the leader removes itself and steps down); a
// produce to a removed node is refused; one of the three left loses its
// data dir and is replaced: removed, restarted empty with join: true and a
// pipeline naming the group as it is now, added again, and caught up from a
// snapshot. At the end the three hold the same log with nothing acked OK
// lost and nothing unexpected (core/verify's checker), and the checker,
// given a log with one acked message dropped, reports it lost.
func TestClusterRaftMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	nodes := raftMembersGroup(t, 5)
	r1, r2, r3, r4, r5 := nodes[0], nodes[1], nodes[2], nodes[3], nodes[4]
	for _, nd := range nodes[:3] {
		writePipeline(t, nd, nodes[:3], false)
	}
	for _, nd := range nodes[3:] {
		writePipeline(t, nd, nodes, true)
	}
	var seeds []string
	for _, nd := range nodes {
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	waitLeader(t, nodes[:3], "a raft leader among r1–r3")
	waitVoters(t, nodes[:3], "r1,r2,r3")
	// A node started with join: true and not added serves no writes and
	// says why.
	eventually(t, faultWait, "r4 reporting that it waits to be added", func() bool {
		st, err := r4.status(context.Background())
		return err == nil && strings.Contains(st.MembershipConflict, "not been added")
	})

	l := startClusterLoad(t, seeds, 4, false)
	l.waitOK(t, nodes, time.Time{}, 50, 0, "the load before any change")

	// Grow to 5.
	for _, nd := range []*raftNode{r4, r5} {
		t0 := time.Now()
		out := ferryCLI(t, bin, "cluster", "add-node", nd.yaml, "--timeout", "5m")
		if !strings.Contains(out, nd.id+" added") {
			t.Fatalf("add-node %s: %s", nd.id, out)
		}
		l.waitOK(t, nodes, t0, 20, 0, "the load after adding "+nd.id)
	}
	waitVoters(t, nodes, "r1,r2,r3,r4,r5")
	// Negative control: a node that never catches up (never started) is
	// not made a voter: add-node fails and it stays a non-voter, outside
	// the quorum, until removed.
	ghost := []string{"cluster", "add-node", "--id", "r9", "--raft", ferrytest.FreeAddr(t), "--broker", ferrytest.FreeAddr(t), "--admin", ferrytest.FreeAddr(t),
		"--nodes", r1.admin + "," + r2.admin + "," + r3.admin, "--catch-up-timeout", "3s", "--timeout", "2m"}
	if out, err := exec.Command(bin, ghost...).CombinedOutput(); err == nil || !strings.Contains(string(out), "did not catch up") {
		t.Errorf("add-node of a node that is not running: %v\n%s\nwant refused: did not catch up", err, out)
	} else {
		t.Logf("add-node r9 (not running): %s", out)
	}
	eventually(t, faultWait, "r9 a non-voter", func() bool {
		st, err := r1.status(context.Background())
		if err != nil {
			return false
		}
		for _, s := range st.Servers {
			if s.Id == "r9" {
				return s.Suffrage == "nonvoter"
			}
		}
		return false
	})
	ferryCLI(t, bin, "cluster", "remove-node", "r9", r1.yaml)
	waitVoters(t, nodes, "r1,r2,r3,r4,r5")
	// r1's pipeline still lists r1–r3 only: r1 reports it, and changes
	// nothing.
	eventually(t, faultWait, "r1 reporting that its pipeline lacks r4 and r5", func() bool {
		st, err := r1.status(context.Background())
		return err == nil && strings.Contains(st.MembershipConflict, "the group has r4") && strings.Contains(st.MembershipConflict, "the group has r5")
	})
	out := ferryCLI(t, bin, "cluster", "status", r1.yaml, "--nodes", r4.admin+","+r5.admin)
	if !strings.Contains(out, "MEMBERSHIP of r1") {
		t.Errorf("cluster status does not show r1's membership conflict:\n%s", out)
	}

	// Shrink to 3: first the leader (it removes itself and steps down),
	// then one more of r1–r3.
	leader, _ := waitLeader(t, nodes, "a raft leader of five")
	removed := []*raftNode{leader}
	for _, nd := range nodes[:3] {
		if len(removed) < 2 && nd != leader {
			removed = append(removed, nd)
		}
	}
	var group []*raftNode // the three left, in configuration order
	for _, nd := range nodes {
		if !slices.Contains(removed, nd) {
			group = append(group, nd)
		}
	}
	for _, nd := range removed {
		t0 := time.Now()
		ferryCLI(t, bin, "cluster", "remove-node", nd.id, group[len(group)-1].yaml)
		l.waitOK(t, nodes, t0, 20, 0, "the load after removing "+nd.id)
	}
	waitVoters(t, group, ids(group))
	eventually(t, faultWait, "the leader that removed itself ("+leader.id+") a follower reporting it is not a member", func() bool {
		st, err := leader.status(context.Background())
		return err == nil && st.Role != "leader" && strings.Contains(st.MembershipConflict, "not a member")
	})

	// Negative control: a removed node takes no produce (straight to its
	// broker: a client would follow the routes to the leader).
	for _, nd := range removed {
		cc, err := grpc.NewClient(nd.broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		body := "to-removed-" + nd.id
		// Counted as sent with an unknown outcome: the checker's
		// "unexpected" catches it if it is stored anywhere.
		l.mu.Lock()
		l.attempts[body] = true
		l.mu.Unlock()
		st, err := produceOne(ferryv1.NewBrokerClient(cc), body, 0)
		cc.Close()
		if err == nil || !strings.Contains(err.Error(), "NOT_LEADER") {
			t.Errorf("a produce to removed %s was answered %v, %v; want refused with NOT_LEADER", nd.id, st, err)
		} else {
			t.Logf("a produce to removed %s: %v", nd.id, err)
		}
	}
	for _, nd := range removed {
		nd.kill(t)
	}

	// Replace a node after it lost its disk.
	lost, rest := group[0], group[1:]
	lost.kill(t)
	if err := os.RemoveAll(filepath.Join(filepath.Dir(lost.yaml), "data")); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s killed and its data dir deleted", stamp(), lost.id)
	ferryCLI(t, bin, "cluster", "remove-node", lost.id, rest[0].yaml)
	waitVoters(t, rest, ids(rest))
	t0 := time.Now()
	l.waitOK(t, rest, t0, 50, 0, "the load on two nodes") // entries the lost node lacks, compacted into snapshots
	writePipeline(t, lost, group, true)
	lost.start(t, bin)
	out = ferryCLI(t, bin, "cluster", "add-node", lost.yaml, "--timeout", "5m")
	if !strings.Contains(out, lost.id+" added") {
		t.Fatalf("add-node %s: %s", lost.id, out)
	}
	waitVoters(t, group, ids(append(slices.Clone(rest), lost)))
	l.waitOK(t, group, time.Now(), 20, 0, "the load after "+lost.id+" rejoined")
	l.halt()
	restored, fetched, err := restores(lost.admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s rejoined empty: snapshots restored %d, %d messages fetched from peers", lost.id, restored, fetched)
	if restored == 0 || fetched == 0 {
		t.Errorf("%s restored %d snapshots and fetched %d messages: want it caught up from a snapshot", lost.id, restored, fetched)
	}
	convergeAndCheck(t, group, &l.load, faultWait)

	// Negative control of the checker: one acked message dropped from a
	// log is reported lost.
	log := bodyCounts(readQueues(t, rest[0].broker))
	l.mu.Lock()
	var dropped string
	for body, st := range l.status {
		if st == ferryv1.Status_STATUS_OK && log[body] > 0 {
			dropped = body
			break
		}
	}
	l.mu.Unlock()
	delete(log, dropped)
	if v := check(&l.load, log); v.lost != 1 {
		t.Errorf("the checker, given %s's log without %s, found %d lost, want 1", rest[0].id, dropped, v.lost)
	}
}
