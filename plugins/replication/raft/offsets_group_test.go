package raft_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// groupOffsetsOf reads group g's committed offsets of orders/0 and orders/1
// on a member (-1: none).
func groupOffsetsOf(t *testing.T, m *member, g string) [2]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := m.eng.Broker().GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: g, Queues: []*sdk.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	out := [2]int64{-1, -1}
	for _, o := range r.Offsets {
		out[o.Queue] = o.Committed
	}
	return out
}

// waitOffsets waits until every given member has group g at want.
func waitOffsets(t *testing.T, ms []*member, g string, want [2]int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []string
		ok := true
		for _, m := range ms {
			o := groupOffsetsOf(t, m, g)
			got = append(got, fmt.Sprintf("%s %v", m.id, o))
			ok = ok && o == want
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s's offsets: %v, want %v everywhere", g, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A consumer group's commit on the leader reaches every node through the
// log; a follower that was away while the entry was compacted gets it from
// the snapshot it restores; after the leader goes, a commit on the new one
// reaches the rest (in process, race detector).
func TestRaftReplicatesGroupOffsets(t *testing.T) {
	ms := group(t, 3)
	for _, m := range ms {
		m.extra = map[string]any{"trailing_logs": 5, "snapshot_threshold": 20, "snapshot_interval": "50ms"}
		m.start(t, ms)
	}
	defer func() {
		for _, m := range ms {
			m.stop(t)
		}
	}()
	send(t, ms, 40)
	converged(t, ms, 40)
	l := leader(t, ms)
	var away, stay *member
	for _, m := range ms {
		switch {
		case m == l:
		case away == nil:
			away = m
		default:
			stay = m
		}
	}
	st, err := status(away.admin)
	if err != nil {
		t.Fatal(err)
	}
	awayApplied := st.AppliedIndex
	away.stop(t)
	commit := func(m *member, offs [2]int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := m.eng.Broker().CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{
			{Topic: "orders", Queue: 0, Offset: offs[0]}, {Topic: "orders", Queue: 1, Offset: offs[1]}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	first := [2]int64{7, 5}
	commit(l, first)
	waitOffsets(t, []*member{l, stay}, "billing", first)
	// Enough entries after it that the log is compacted past it.
	send(t, ms, 300)
	// Until the leader snapshotted past what the stopped node applied and
	// the trailing entries it keeps (5): it must send a snapshot then.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		lst, err := status(l.admin)
		if err == nil && len(lst.Replicas) > 0 {
			if m := lastSnapshotRE.FindStringSubmatch(lst.Replicas[0].Detail); m != nil {
				if idx, _ := strconv.ParseUint(m[1], 10, 64); idx > awayApplied+5 {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader did not snapshot past %d (what %s applied) in 60s", awayApplied, away.id)
		}
	}
	away.start(t, ms)
	converged(t, ms, 340)
	// The store converges as the restore's catch-up ends, a moment
	// before the restore counts itself: polled, not read once.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := status(away.admin)
		if err != nil {
			t.Fatal(err)
		}
		m := restoredRE.FindStringSubmatch(st.Replicas[0].Detail)
		if m != nil && m[1] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s restored no snapshot: %q", away.id, st.Replicas[0].Detail)
		}
	}
	waitOffsets(t, ms, "billing", first)

	// The leader goes; the group commits on the new one.
	l = leader(t, ms)
	l.stop(t)
	var rest []*member
	for _, m := range ms {
		if m != l {
			rest = append(rest, m)
		}
	}
	l2 := leader(t, rest)
	waitOffsets(t, rest, "billing", first)
	second := [2]int64{20, 30}
	commit(l2, second)
	waitOffsets(t, rest, "billing", second)
	// The old leader comes back and follows.
	l.start(t, ms)
	waitOffsets(t, ms, "billing", second)
}

var lastSnapshotRE = regexp.MustCompile(`last snapshot at index (\d+)`)
