package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// A consumer group resumes at its commit point on the new raft leader after
// the old one is SIGKILLed: real `ferry run` processes (3 raft nodes), part
// of the messages consumed and committed on the leader with `ferry
// consume`, the leader killed, then the same group consumed from the newly
// elected leader. No message before the commit point may come again; every
// one after it must. The offsets get there through the raft log.
func TestFaultRaftGroupResumesOnNewLeader(t *testing.T) {
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
	var leader *raftNode
	leader, _ = waitLeader(t, nodes, "a raft leader")
	produceMany(t, seeds, "m", offsetsMessages, 2)

	// Part of them consumed, and committed, on the leader (re-elected
	// meanwhile on a loaded machine? then on the one leading now).
	leader, _ = waitLeader(t, nodes, "a raft leader")
	first := consumeLines(t, bin, "--broker", leader.broker, "--count", fmt.Sprint(offsetsConsumed))
	if len(first) != offsetsConsumed {
		t.Fatalf("first consumer printed %d messages, want %d", len(first), offsetsConsumed)
	}
	commit, ends := groupOffsets(t, leader.broker)
	total := int64(0)
	for q, off := range commit {
		total += max(off, 0)
		if off > ends[q] {
			t.Fatalf("queue %d committed at %d beyond its end %d", q, off, ends[q])
		}
	}
	if total == 0 || total == sumMap(ends) {
		t.Fatalf("the leader's commit point %v (ends %v) does not split the log", commit, ends)
	}
	t.Logf("%s committed on leader %s: %v of ends %v", stamp(), leader.id, commit, ends)

	// Every follower stores the group's offsets (through the log) before
	// the leader dies. Reported without stopping, so that the consumer's
	// fate below is seen too.
	var others []*raftNode
	for _, nd := range nodes {
		if nd != leader {
			others = append(others, nd)
		}
	}
	for _, nd := range others {
		for deadline := time.Now().Add(faultWait); ; time.Sleep(50 * time.Millisecond) {
			got, _ := groupOffsets(t, nd.broker)
			if fmt.Sprint(got) == fmt.Sprint(commit) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("after %s follower %s has the group's offsets at %v, the leader at %v", faultWait, nd.id, got, commit)
				break
			}
		}
	}

	leader.kill(t)
	t.Logf("%s killed leader %s", stamp(), leader.id)
	var next *raftNode
	next, _ = waitLeader(t, others, "a new raft leader")
	t.Logf("%s %s leads", stamp(), next.id)

	// The same group on the new leader resumes at the commit point.
	// It stops at the count expected, or once nothing came for 30 s (the
	// idle clock starts with the process, before it has joined).
	second := consumeLines(t, bin, "--broker", next.broker, "--count", fmt.Sprint(sumMap(ends)-total), "--idle", "30s")
	checkResumed(t, second, ends, commit, "the new leader")
	t.Logf("from the new leader: %d messages, want %d", len(second), sumMap(ends)-total)
}

func sumMap(m map[int32]int64) int64 {
	n := int64(0)
	for _, v := range m {
		n += v
	}
	return n
}
