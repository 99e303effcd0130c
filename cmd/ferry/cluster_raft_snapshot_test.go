package main

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// raftSnapshotGroup is raftGroup with tiny snapshot settings: the leader
// snapshots and compacts its log every ~50 entries, keeping 10.
func raftSnapshotGroup(t *testing.T, n int) []*raftNode {
	t.Helper()
	return raftGroupVia(t, n, nil, `heartbeat_timeout: 1s
election_timeout: 1s
leader_lease_timeout: 500ms
trailing_logs: 10
snapshot_threshold: 50
snapshot_interval: 100ms
`)
}

// produceMany gets n messages acked OK through a cluster client, from
// workers goroutines (so the leader's raft entries are many batches of a
// few messages each). Failed sends (leadership moving) are retried with a
// new body; only OK answers count.
func produceMany(t *testing.T, seeds []string, prefix string, n, workers int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := client.DialCluster(ctx, seeds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	ok, fails := 0, 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p := c.NewProducer(client.ProducerOptions{Retries: client.NoRetries, Timeout: 5 * time.Second})
			for i := 0; ; i++ {
				mu.Lock()
				if ok >= n || fails > 100 || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				mu.Unlock()
				body := fmt.Sprintf("%s-w%d-%d", prefix, w, i)
				r, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: body, Headers: map[string]string{"app": body}, Body: []byte(body)})
				mu.Lock()
				if err != nil || r.Status != ferryv1.Status_STATUS_OK {
					fails++
					t.Logf("send %s: %v %v", body, r.Status, err)
				} else {
					ok++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if ok < n {
		t.Fatalf("only %d of %d sends acked OK (%d failed)", ok, n, fails)
	}
}

// sameLog compares two nodes' logs message by message: offset, id, key,
// body, headers (ferry-raft-index included) and the producer's timestamp.
// It returns the number of messages compared.
func sameLog(t *testing.T, name string, want, got map[int32][]*ferryv1.Message) int {
	t.Helper()
	n := 0
	for q := range int32(4) {
		w, g := want[q], got[q]
		if len(w) != len(g) {
			t.Errorf("%s queue %d: %d messages, want %d", name, q, len(g), len(w))
		}
		for i := range min(len(w), len(g)) {
			a, b := w[i], g[i]
			if a.Offset != int64(i) || b.Offset != a.Offset || b.Id != a.Id || b.Key != a.Key || string(b.Body) != string(a.Body) ||
				b.BornUnixNano != a.BornUnixNano || !maps.Equal(b.Headers, a.Headers) {
				t.Errorf("%s queue %d message %d: got %v, want %v", name, q, i, b, a)
				return n
			}
			if a.Headers["ferry-raft-index"] == "" {
				t.Errorf("%s queue %d message %d has no ferry-raft-index header", name, q, i)
				return n
			}
			n++
		}
	}
	return n
}

var snapshotRE = regexp.MustCompile(`last snapshot at index (\d+)`)

// lastSnapshot reads a node's last snapshot index from its status detail.
func lastSnapshot(admin string) (uint64, error) {
	st, err := clusterStatus(context.Background(), admin)
	if err != nil {
		return 0, err
	}
	if len(st.Replicas) == 0 {
		return 0, fmt.Errorf("no detail in %v", st)
	}
	m := snapshotRE.FindStringSubmatch(st.Replicas[0].Detail)
	if m == nil {
		return 0, fmt.Errorf("no snapshot index in %q", st.Replicas[0].Detail)
	}
	return strconv.ParseUint(m[1], 10, 64)
}

var restoredRE = regexp.MustCompile(`snapshots restored (\d+), (\d+) messages fetched from peers`)

// restores reads a node's snapshot counters from its status detail.
func restores(admin string) (restored, fetched int64, err error) {
	st, err := clusterStatus(context.Background(), admin)
	if err != nil {
		return 0, 0, err
	}
	if len(st.Replicas) == 0 {
		return 0, 0, fmt.Errorf("no detail in %v", st)
	}
	m := restoredRE.FindStringSubmatch(st.Replicas[0].Detail)
	if m == nil {
		return 0, 0, fmt.Errorf("no snapshot counters in %q", st.Replicas[0].Detail)
	}
	restored, _ = strconv.ParseInt(m[1], 10, 64)
	fetched, _ = strconv.ParseInt(m[2], 10, 64)
	return restored, fetched, nil
}

// Raft, 3 processes, tiny trailing_logs: a follower is killed (kill -9)
// while thousands of messages are produced, so the leader snapshots and
// compacts its log past the follower's position. Restarted, the follower is
// sent a snapshot, fetches the messages it lacks from a peer, and ends with
// exactly the leader's log (offsets, ids, headers, timestamps); what is
// produced after is applied on every node too.
func TestRaftFollowerCatchesUpFromSnapshot(t *testing.T) {
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
	var leader *raftNode
	leader, _ = waitLeader(t, nodes, "a raft leader")
	produceMany(t, seeds, "before", 200, 4)
	converge := func(what string) int64 {
		var total int64
		eventually(t, 60*time.Second, what, func() bool {
			var ends []int64
			for _, nd := range nodes {
				st, err := nd.status(context.Background())
				if err != nil {
					return false
				}
				ends = append(ends, sumEnds(st.Offsets))
			}
			total = ends[0]
			return ends[0] == ends[1] && ends[1] == ends[2]
		})
		return total
	}
	converge("every node stores the first 200 messages")

	var follower *raftNode
	leader, _ = waitLeader(t, nodes, "a raft leader")
	for _, nd := range nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	var followerEnd int64
	var followerApplied uint64
	eventually(t, faultWait, follower.id+"'s status", func() bool {
		st, err := clusterStatus(context.Background(), follower.admin)
		if err == nil {
			followerEnd, followerApplied = sumEnds(st.Offsets), st.AppliedIndex
		}
		return err == nil
	})
	follower.kill(t)
	t.Logf("killed follower %s (storing %d messages); leader %s", follower.id, followerEnd, leader.id)

	start := time.Now()
	produceMany(t, seeds, "away", 3000, 8)
	t.Logf("3000 messages acked OK in %s while %s was down", time.Since(start).Round(time.Millisecond), follower.id)
	// Until the leader snapshotted past what the follower has and the
	// trailing entries it keeps (10): it must send a snapshot then.
	eventually(t, faultWait, "the leader snapshotting past the stopped follower", func() bool {
		leader, _ := raftLeaderStatus(nodes)
		if leader == nil {
			return false
		}
		idx, err := lastSnapshot(leader.admin)
		return err == nil && idx > followerApplied+10
	})

	follower.start(t, bin)
	start = time.Now()
	eventually(t, 60*time.Second, follower.id+" restores a snapshot", func() bool {
		n, _, err := restores(follower.admin)
		return err == nil && n > 0
	})
	total := converge(follower.id + " catches up")
	t.Logf("%s caught up in %s: every node stores %d messages", follower.id, time.Since(start).Round(time.Millisecond), total)
	restored, fetched, err := restores(follower.admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: snapshots restored %d, %d messages fetched from peers", follower.id, restored, fetched)
	if fetched < 2000 {
		t.Errorf("%s fetched %d messages from peers, want most of the 3000 it missed (the rest from the raft log)", follower.id, fetched)
	}

	// Message by message, every queue: the follower has the leader's log.
	leaderLog := queueLog(t, leader.broker)
	if n := sameLog(t, follower.id+" vs "+leader.id, leaderLog, queueLog(t, follower.broker)); n < 3200 {
		t.Errorf("compared %d messages, want at least 3200", n)
	}

	// What is produced now is applied on every node, the follower included.
	produceMany(t, seeds, "after", 100, 2)
	total2 := converge("every node stores the last 100 messages")
	if total2 < total+100 {
		t.Fatalf("nodes store %d messages, want at least %d", total2, total+100)
	}
	leader, _ = waitLeader(t, nodes, "a raft leader")
	leaderLog = queueLog(t, leader.broker)
	for _, nd := range nodes {
		if nd != leader {
			sameLog(t, nd.id+" vs "+leader.id, leaderLog, queueLog(t, nd.broker))
		}
	}
}
