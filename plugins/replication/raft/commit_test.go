package raft_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Consumers committing at once on the leader are answered once their
// offsets are committed through the log, and share log entries (group
// commit): 40 groups committing together add fewer than 40 entries, and
// every node, followers included, has every group's offsets (in process,
// race detector). A commit answered OK is on a quorum, so a follower has it
// as soon as it applied the entry — it is not polled for.
func TestRaftGroupCommitsConsumerOffsets(t *testing.T) {
	ms := group(t, 3)
	for _, m := range ms {
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
	before, err := status(l.admin)
	if err != nil {
		t.Fatal(err)
	}
	const groups = 40
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, groups)
	for i := range groups {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs[i] = l.eng.Broker().CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: fmt.Sprintf("g%02d", i), Offsets: []*sdk.GroupOffset{
				{Topic: "orders", Queue: 0, Offset: int64(i % 3)}, {Topic: "orders", Queue: 1, Offset: int64(i % 5)}}})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("group g%02d's commit: %v", i, err)
		}
	}
	after, err := status(l.admin)
	if err != nil {
		t.Fatal(err)
	}
	entries := after.AppliedIndex - before.AppliedIndex
	t.Logf("%d commits took %d log entries", groups, entries)
	if entries >= groups {
		t.Errorf("%d concurrent commits took %d log entries: not group-committed", groups, entries)
	}
	for i := range groups {
		waitOffsets(t, ms, fmt.Sprintf("g%02d", i), [2]int64{int64(i % 3), int64(i % 5)})
	}

	// A commit on a follower is forwarded to the leader, answered once
	// committed through the log, and reaches every node: the leader and
	// the other follower have it only from the log.
	for _, m := range ms {
		if m == l {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := m.eng.Broker().CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "via-follower", Offsets: []*sdk.GroupOffset{
			{Topic: "orders", Queue: 0, Offset: 2}, {Topic: "orders", Queue: 1, Offset: 3}}})
		cancel()
		if err != nil {
			t.Fatalf("commit on follower %s: %v", m.id, err)
		}
		waitOffsets(t, ms, "via-follower", [2]int64{2, 3})
		break
	}
}
