package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// Replicated topic metadata with real `ferry run` processes (docs/admin.md,
// "Topics on replicated nodes"): topics created, grown and deleted at
// runtime on the node that takes produce exist on every node, take produce
// through the cluster, survive a SIGKILL of the raft leader, and reach a
// node that was down when they were made; on master–slave they reach the
// slave and stay after its promotion.

// topicWait bounds each wait of these tests: elections and catch-up on a
// loaded 2-core machine are slow.
const topicWait = 90 * time.Second

// nodeTopics is what a broker's Metadata lists: topic → queues (nil when
// the node does not answer).
func nodeTopics(broker string) map[string]int32 {
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := ferryv1.NewBrokerClient(cc).Metadata(ctx, &ferryv1.MetadataRequest{})
	if err != nil {
		return nil
	}
	out := map[string]int32{}
	for _, ti := range r.Topics {
		out[ti.Name] = ti.Queues
	}
	return out
}

// waitTopic waits until broker lists topic with queues queues (0: does not
// list it).
func waitTopic(t *testing.T, node, broker, topic string, queues int32) {
	t.Helper()
	eventually(t, topicWait, fmt.Sprintf("%s lists topic %s with %d queues", node, topic, queues), func() bool {
		ts := nodeTopics(broker)
		return ts != nil && ts[topic] == queues
	})
}

// topicCLI runs `ferry topic ARGS --broker broker` and returns its exit
// code and output.
func topicCLI(t *testing.T, broker string, args ...string) (int, string) {
	t.Helper()
	stdout, stderr, code := runFerry(t, nil, append(append([]string{"topic"}, args...), "--broker", broker)...)
	return code, stdout + stderr
}

// onLeader runs a topic command on the raft leader, again on the next one
// when leadership moved under it (an election on a loaded machine).
func onLeader(t *testing.T, nodes []*raftNode, args ...string) *raftNode {
	t.Helper()
	deadline := time.Now().Add(topicWait)
	for {
		leader, _ := waitLeader(t, nodes, "a raft leader")
		code, out := topicCLI(t, leader.broker, args...)
		if code == 0 {
			t.Logf("%s on leader %s: %s", strings.Join(args, " "), leader.id, strings.TrimSpace(out))
			return leader
		}
		if !strings.Contains(out, "not leader") || time.Now().After(deadline) {
			t.Fatalf("ferry topic %v on leader %s: exit %d\n%s", args, leader.id, code, out)
		}
	}
}

// sendTopic sends n messages to topic through a client seeded with every
// broker, each until it is answered OK (the store de-duplicates a retried
// send by id), or with a status of also, and returns their keys.
func sendTopic(t *testing.T, seeds []string, topic, prefix string, n int, also ...ferryv1.Status) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*topicWait)
	defer cancel()
	c, err := client.DialCluster(ctx, seeds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Timeout: 5 * time.Second, Retries: 20})
	var keys []string
	for i := range n {
		key := fmt.Sprintf("%s-%d", prefix, i)
		r, err := p.SendSync(ctx, client.Message{Topic: topic, Key: key, Body: []byte(key)})
		if err != nil || (r.Status != ferryv1.Status_STATUS_OK && !slices.Contains(also, r.Status)) {
			t.Fatalf("send %s to %s: %v %v", key, topic, r, err)
		}
		keys = append(keys, key)
	}
	return keys
}

// consumeTopic consumes count messages of topic from broker with `ferry
// consume` as group and returns their keys.
func consumeTopic(t *testing.T, bin, broker, topic, group string, count int) []string {
	t.Helper()
	args := []string{"consume", "--topic", topic, "--group", group, "--json", "--broker", broker, "--count", fmt.Sprint(count), "--idle", "60s"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*topicWait)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ferry %v: %v\n%s", args, err, stderr.String())
	}
	var keys []string
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var l consumedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("consume printed %q: %v", sc.Text(), err)
		}
		if l.Topic != topic {
			t.Errorf("consumed a message of %q, want %q", l.Topic, topic)
		}
		keys = append(keys, l.Key)
	}
	return keys
}

// sameKeys reports what of want is missing from got, and what got holds
// twice or that want lacks.
func sameKeys(t *testing.T, got, want []string, where string) {
	t.Helper()
	seen := map[string]int{}
	for _, k := range got {
		seen[k]++
	}
	var missing, extra []string
	for _, k := range want {
		if seen[k] == 0 {
			missing = append(missing, k)
		}
		delete(seen, k)
	}
	for k := range seen {
		extra = append(extra, k)
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("%s: %d messages, %d missing (%v), %d unexpected (%v)", where, len(got), len(missing), missing, len(extra), extra)
	}
}

// On a 3-node raft group: a topic created and grown on the leader is on
// every node; a follower refuses topic changes, naming the leader;
// messages sent to it through the cluster are consumed; after a SIGKILL of
// the leader the new leader has it, takes produce to it and serves every
// message acked before; a topic created while the old leader is down
// reaches it when it comes back; a delete on the leader reaches every node.
func TestRaftTopicsReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	var seeds []string
	for _, nd := range nodes {
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	leader, _ := waitLeader(t, nodes, "a raft leader")
	for _, nd := range nodes {
		if nd == leader {
			continue
		}
		code, out := topicCLI(t, nd.broker, "create", "clicks", "--queues", "3")
		if code == 0 || !strings.Contains(out, "not leader") || !strings.Contains(out, "the leader is") {
			t.Errorf("create on follower %s: exit %d, %q; want not leader, naming the leader", nd.id, code, out)
		}
		break
	}

	onLeader(t, nodes, "create", "clicks", "--queues", "3")
	for _, nd := range nodes {
		waitTopic(t, nd.id, nd.broker, "clicks", 3)
	}
	leader = onLeader(t, nodes, "alter", "clicks", "--queues", "4")
	for _, nd := range nodes {
		waitTopic(t, nd.id, nd.broker, "clicks", 4)
	}
	code, out := topicCLI(t, leader.broker, "create", "clicks", "--queues", "2")
	if code == 0 || !strings.Contains(out, `topic "clicks" already exists`) {
		t.Errorf("a second create: exit %d, %q", code, out)
	}
	sent := sendTopic(t, seeds, "clicks", "a", 200)

	leader, _ = waitLeader(t, nodes, "a raft leader")
	leader.kill(t)
	t.Logf("%s killed leader %s", stamp(), leader.id)
	var others []*raftNode
	for _, nd := range nodes {
		if nd != leader {
			others = append(others, nd)
		}
	}
	next, _ := waitLeader(t, others, "a new raft leader")
	t.Logf("%s %s leads", stamp(), next.id)
	waitTopic(t, next.id, next.broker, "clicks", 4)
	var live []string
	for _, nd := range others {
		live = append(live, nd.broker)
	}
	sent = append(sent, sendTopic(t, live, "clicks", "b", 100)...)
	onLeader(t, others, "create", "views", "--queues", "2")
	views := sendTopic(t, live, "views", "v", 20)

	next, _ = waitLeader(t, others, "a raft leader")
	sameKeys(t, consumeTopic(t, bin, next.broker, "clicks", "readers", len(sent)), sent, "clicks on the new leader")
	sameKeys(t, consumeTopic(t, bin, next.broker, "views", "readers", len(views)), views, "views on the new leader")

	// The old leader, restarted, learns views from the log and stores
	// every message of both topics.
	leader.start(t, bin)
	waitTopic(t, leader.id, leader.broker, "views", 2)
	waitTopic(t, leader.id, leader.broker, "clicks", 4)
	eventually(t, topicWait, "the restarted node holds every message of clicks and views", func() bool {
		return storedCount(leader.broker, "clicks", 4) == int64(len(sent)) && storedCount(leader.broker, "views", 2) == int64(len(views))
	})

	onLeader(t, nodes, "delete", "views", "--yes", "--force")
	for _, nd := range nodes {
		waitTopic(t, nd.id, nd.broker, "views", 0)
	}
	for _, nd := range nodes {
		if ts := nodeTopics(nd.broker); ts["clicks"] != 4 || ts["orders"] != 4 {
			t.Errorf("%s lists %v after the delete of views, want clicks and orders kept", nd.id, ts)
		}
	}
}

// storedCount is how many messages a broker stores in topic's queues (-1
// when it does not answer).
func storedCount(broker, topic string, queues int32) int64 {
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return -1
	}
	defer cc.Close()
	var refs []*ferryv1.QueueRef
	for q := range queues {
		refs = append(refs, &ferryv1.QueueRef{Topic: topic, Queue: q})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := ferryv1.NewBrokerClient(cc).GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Queues: refs})
	if err != nil {
		return -1
	}
	n := int64(0)
	for _, o := range r.Offsets {
		n += o.End - o.Start
	}
	return n
}

// On a master–slave pair: a topic created and grown on the master is on
// the slave, whose own topic changes are refused naming the master; its
// messages reach the slave; after the master is SIGKILLed and the slave
// promoted, the topic is there with every message acked, takes produce,
// and the new master can delete it.
func TestMasterSlaveTopicsReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "sync", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "sync", sb, sr, []string{mr}, "5s")
	for _, nd := range []*clusterNode{master, slave} {
		autoCreate(t, nd.yaml)
	}
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	eventually(t, topicWait, "slave linked to master", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	})

	if code, out := topicCLI(t, mb, "create", "clicks", "--queues", "3"); code != 0 {
		t.Fatalf("create on the master: exit %d\n%s", code, out)
	}
	waitTopic(t, "slave", sb, "clicks", 3)
	if code, out := topicCLI(t, mb, "alter", "clicks", "--queues", "5"); code != 0 {
		t.Fatalf("alter on the master: exit %d\n%s", code, out)
	}
	waitTopic(t, "slave", sb, "clicks", 5)
	code, out := topicCLI(t, sb, "create", "views", "--queues", "1")
	if code == 0 || !strings.Contains(out, "not leader") || !strings.Contains(out, "master at "+mb) {
		t.Errorf("create on the slave: exit %d, %q; want not leader, naming the master", code, out)
	}
	sent := sendTopic(t, []string{mb}, "clicks", "a", 100) // sync: each OK is on the slave too
	eventually(t, topicWait, "the slave holds the 100 messages of clicks", func() bool {
		return storedCount(sb, "clicks", 5) == int64(len(sent))
	})

	// auto_create_topics: a producer's first send creates the topic on
	// the master, also when the client asked the slave first.
	auto := sendTopic(t, []string{sb, mb}, "auto", "x", 10)
	waitTopic(t, "slave", sb, "auto", 2)

	master.kill(t)
	t.Logf("%s killed the master", stamp())
	stdout, stderr, pcode := runFerry(t, nil, "cluster", "promote", "--node", sr)
	if pcode != 0 {
		t.Fatalf("promote: exit %d\n%s%s", pcode, stdout, stderr)
	}
	eventually(t, topicWait, "the promoted slave takes produce", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.Role == "master"
	})
	waitTopic(t, "promoted slave", sb, "clicks", 5)
	// Stored on the promoted slave, which has no slave of its own now.
	sent = append(sent, sendTopic(t, []string{sb}, "clicks", "b", 50, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE)...)
	sameKeys(t, consumeTopic(t, bin, sb, "clicks", "readers", len(sent)), sent, "clicks on the promoted slave")
	// Sync, with no slave linked: made on the promoted slave, and said
	// to be unconfirmed.
	if code, out := topicCLI(t, sb, "create", "views", "--queues", "2"); code == 0 || !strings.Contains(out, "not confirmed by its slaves") || !strings.Contains(out, "0 slave(s) linked") {
		t.Errorf("create on the promoted slave, which has no slave: exit %d, %q; want made but not confirmed", code, out)
	}
	waitTopic(t, "promoted slave", sb, "views", 2)
	sameKeys(t, consumeTopic(t, bin, sb, "auto", "readers", len(auto)), auto, "auto on the promoted slave")
}

// autoCreate turns node.auto_create_topics on (2 queues) in a node's
// pipeline file.
func autoCreate(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Replace(string(b), "data_dir:", "auto_create_topics: {enabled: true, queues: 2}, data_dir:", 1)
	if out == string(b) {
		t.Fatalf("%s has no node.data_dir to put auto_create_topics beside", path)
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

// latestSnapshot is the modification time of a raft node's newest snapshot
// (zero when it has none).
func latestSnapshot(nd *raftNode) time.Time {
	dir := filepath.Join(filepath.Dir(nd.yaml), "data", "replication-raft", "snapshots")
	entries, _ := os.ReadDir(dir)
	var latest time.Time
	for _, e := range entries {
		if info, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil && info.ModTime().After(latest) {
			latest = info.ModTime()
		}
	}
	return latest
}

// Raft, tiny trailing_logs: a follower is SIGKILLed; while it is down a
// topic is created and filled and another deleted, and the leader compacts
// its log past all of it. Restarted, the follower is sent a snapshot: it
// takes the snapshot's topics (creating the one, deleting the other) before
// it fetches the new topic's messages from a peer.
func TestRaftFollowerLearnsTopicsFromSnapshot(t *testing.T) {
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
	onLeader(t, nodes, "create", "views", "--queues", "2")
	for _, nd := range nodes {
		waitTopic(t, nd.id, nd.broker, "views", 2)
	}
	leader, _ := waitLeader(t, nodes, "a raft leader")
	var follower *raftNode
	for _, nd := range nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	follower.kill(t)
	t.Logf("%s killed follower %s", stamp(), follower.id)
	var others []*raftNode
	for _, nd := range nodes {
		if nd != follower {
			others = append(others, nd)
		}
	}
	var live []string
	for _, nd := range others {
		live = append(live, nd.broker)
	}
	onLeader(t, others, "delete", "views", "--yes", "--force")
	onLeader(t, others, "create", "clicks", "--queues", "3")
	created := time.Now()
	sent := sendTopic(t, live, "clicks", "c", 300)
	produceMany(t, live, "away", 500, 4) // entries enough for snapshots past the create
	eventually(t, topicWait, "both live nodes snapshot after the create", func() bool {
		for _, nd := range others {
			if !latestSnapshot(nd).After(created) {
				return false
			}
		}
		return true
	})

	follower.start(t, bin)
	eventually(t, topicWait, follower.id+" restores a snapshot", func() bool {
		n, _, err := restores(follower.admin)
		return err == nil && n > 0
	})
	waitTopic(t, follower.id, follower.broker, "clicks", 3)
	waitTopic(t, follower.id, follower.broker, "views", 0)
	eventually(t, topicWait, follower.id+" stores every message of clicks", func() bool {
		return storedCount(follower.broker, "clicks", 3) == int64(len(sent))
	})
	_, fetched, _ := restores(follower.admin)
	t.Logf("%s restored a snapshot, fetched %d messages from peers", follower.id, fetched)
}

// The pipeline stays the baseline on every node of a raft group: orders,
// declared with 4 queues in each pipeline, grows to 6 on the leader while a
// follower is down. The nodes up, and the follower when it catches up,
// serve 6 queues (routing agrees) and each reports the conflict with its
// pipeline as an error naming the topic; the follower, restarted with the
// same pipeline, refuses to start and names the conflict, never applying
// the pipeline's 4 silently.
func TestRaftTopicBaselineConflict(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const conflict = "more queues than this node's pipeline declares"
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	for _, nd := range nodes {
		nd.logLevel = "info"
		nd.start(t, bin)
	}
	leader, _ := waitLeader(t, nodes, "a raft leader")
	var down *raftNode
	var up []*raftNode
	for _, nd := range nodes {
		if nd != leader && down == nil {
			down = nd
			continue
		}
		up = append(up, nd)
	}
	for _, nd := range nodes {
		waitTopic(t, nd.id, nd.broker, "orders", 4)
	}
	if strings.Contains(down.out.String(), conflict) {
		t.Fatalf("%s reports a conflict before any change:\n%s", down.id, down.out.String())
	}
	down.kill(t)
	t.Logf("%s killed follower %s", stamp(), down.id)

	onLeader(t, up, "alter", "orders", "--queues", "6")
	for _, nd := range up {
		waitTopic(t, nd.id, nd.broker, "orders", 6)
		eventually(t, topicWait, nd.id+" reports the conflict with its pipeline", func() bool {
			out := nd.out.String()
			return strings.Contains(out, conflict) && strings.Contains(out, "orders")
		})
	}

	down.start(t, bin)
	waitTopic(t, down.id, down.broker, "orders", 6)
	eventually(t, topicWait, down.id+" reports the conflict when it catches up", func() bool {
		return strings.Contains(down.out.String(), conflict)
	})

	// Restarted with the same pipeline, it refuses: its data dir holds 6.
	down.kill(t)
	down.start(t, bin)
	exited := make(chan error, 1)
	go func() { exited <- down.cmd.Wait() }()
	select {
	case err := <-exited:
		want := `topic "orders": the pipeline declares 4 queues, but this node holds 6`
		if err == nil || !strings.Contains(down.out.String(), want) {
			t.Errorf("%s restarted with a pipeline declaring 4 queues: exit %v; want a refusal naming %q:\n%s", down.id, err, want, down.out.String())
		}
	case <-time.After(topicWait):
		t.Errorf("%s started with a pipeline declaring 4 queues of orders, which it holds 6 of:\n%s", down.id, down.out.String())
	}
}

// On master–slave a topic change is answered by the master before its
// slaves applied it; `ferry topic create|alter --wait-for SLAVE` waits for
// them: once it exits 0 the slave lists the topic with its queues. With
// the slave frozen (SIGSTOP) the wait fails within --wait-timeout, naming
// the slave, while the change stays made on the master; thawed, the slave
// gets it and the wait succeeds.
func TestMasterSlaveTopicWaitFor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "async", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "async", sb, sr, []string{mr}, "5s")
	master.start(t, bin)
	slave.start(t, bin)
	eventually(t, topicWait, "slave linked to master", func() bool {
		st, err := clusterStatus(context.Background(), sr)
		return err == nil && st.LeaderConnected
	})

	if code, out := topicCLI(t, mb, "create", "clicks", "--queues", "3", "--wait-for", sb, "--wait-timeout", "60s"); code != 0 {
		t.Fatalf("create --wait-for the slave: exit %d\n%s", code, out)
	}
	if ts := nodeTopics(sb); ts["clicks"] != 3 {
		t.Errorf("the slave lists %v right after create --wait-for, want clicks with 3 queues", ts)
	}

	slave.signal(t, syscall.SIGSTOP)
	code, out := topicCLI(t, mb, "alter", "clicks", "--queues", "4", "--wait-for", sb, "--wait-timeout", "3s")
	if code == 0 || !strings.Contains(out, "--wait-for "+sb) || !strings.Contains(out, `topic "clicks" with 4 queue(s) not there after 3s`) {
		t.Errorf("alter --wait-for a frozen slave: exit %d, %q; want a failure naming the slave", code, out)
	}
	if ts := nodeTopics(mb); ts["clicks"] != 4 {
		t.Errorf("the master lists %v after the alter, want clicks with 4 queues", ts)
	}
	slave.signal(t, syscall.SIGCONT)
	waitTopic(t, "slave", sb, "clicks", 4)
	if code, out := topicCLI(t, mb, "create", "views", "--queues", "1", "--wait-for", sb, "--wait-timeout", "0s"); code == 0 || !strings.Contains(out, "--wait-timeout must be above 0") {
		t.Errorf("--wait-timeout 0s: exit %d, %q; want refused", code, out)
	}
}
