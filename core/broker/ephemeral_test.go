package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

const testEphemeralTTL = 200 * time.Millisecond

func newEphemeralBroker(t *testing.T, dir string, store sdk.Storage) *Broker {
	t.Helper()
	b := New(Options{Node: "n1", Topics: []Topic{{Name: "orders", Queues: 2}}, DataDir: dir, EphemeralGroupTTL: testEphemeralTTL}, newSource(store))
	b.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Close(ctx)
	})
	return b
}

func join(t *testing.T, b *Broker, group, member string, ephemeral, leave bool) error {
	t.Helper()
	_, err := b.Heartbeat(context.Background(), &sdk.HeartbeatRequest{Group: group, Member: member, Topics: []string{"orders"}, Ephemeral: ephemeral, Leave: leave})
	return err
}

func mustJoin(t *testing.T, b *Broker, group, member string, ephemeral, leave bool) {
	t.Helper()
	if err := join(t, b, group, member, ephemeral, leave); err != nil {
		t.Fatalf("heartbeat of %s in %s: %v", member, group, err)
	}
}

func commit(t *testing.T, b *Broker, group string, offset int64) {
	t.Helper()
	if err := b.CommitOffsets(context.Background(), &sdk.CommitOffsetsRequest{Group: group, Generation: 1, Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: offset}}}); err != nil {
		t.Fatalf("commit of %s: %v", group, err)
	}
}

// waitGone waits (60 s at most) until DescribeGroup says group is not found.
func waitGone(t *testing.T, b *Broker, group string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := b.DescribeGroup(context.Background(), &sdk.DescribeGroupRequest{Group: group})
		if errors.Is(err, sdk.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s still there 60s after its last member left (TTL %s): %v", group, testEphemeralTTL, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describe(t *testing.T, b *Broker, group string) *sdk.DescribeGroupResponse {
	t.Helper()
	d, err := b.DescribeGroup(context.Background(), &sdk.DescribeGroupRequest{Group: group})
	if err != nil {
		t.Fatalf("describe %s: %v", group, err)
	}
	return d
}

// internalMessages counts what the store holds of group's retry and DLQ
// topics, asking the store itself.
func internalMessages(t *testing.T, store sdk.Storage, group string) int64 {
	t.Helper()
	var refs []*sdk.QueueRef
	for _, name := range []string{sdk.RetryTopic(group), sdk.DLQTopic(group)} {
		_, queues, _ := sdk.InternalTopic(name)
		for q := range queues {
			refs = append(refs, &sdk.QueueRef{Topic: name, Queue: q})
		}
	}
	offs, err := store.GetOffsets(context.Background(), "", refs)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, o := range offs {
		n += o.End - o.Start
	}
	return n
}

// An ephemeral group is deleted, offsets, retry and DLQ topics, a TTL after
// its last member left; a durable group that left at the same time is not
// (the negative control).
func TestEphemeralGroupDeletedAfterTTL(t *testing.T) {
	store := newMemory(t)
	b := newEphemeralBroker(t, t.TempDir(), store)
	produce(t, b, 0, "a", "b")
	mustJoin(t, b, "eph", "m1", true, false)
	mustJoin(t, b, "durable", "m2", false, false)
	commit(t, b, "eph", 2)
	commit(t, b, "durable", 2)
	for _, topic := range []string{sdk.RetryTopic("eph"), sdk.DLQTopic("eph")} {
		if _, err := b.Produce(context.Background(), &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "r-" + topic, Topic: topic, Queue: 0, Body: []byte("x")}}}); err != nil {
			t.Fatalf("produce to %s: %v", topic, err)
		}
	}
	if n := internalMessages(t, store, "eph"); n != 2 {
		t.Fatalf("retry and DLQ topics hold %d messages, want 2", n)
	}
	if d := describe(t, b, "eph"); !d.Ephemeral || d.DeleteAtUnixNano != 0 {
		t.Fatalf("live ephemeral group described as ephemeral=%v delete_at=%d", d.Ephemeral, d.DeleteAtUnixNano)
	}
	// A group is ephemeral or not for all its members.
	if err := join(t, b, "eph", "m3", false, false); !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "is ephemeral") {
		t.Fatalf("durable member joining an ephemeral group: %v", err)
	}
	if err := join(t, b, "durable", "m4", true, false); !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "durable group") {
		t.Fatalf("ephemeral member joining a durable group: %v", err)
	}

	mustJoin(t, b, "eph", "m1", true, true)
	mustJoin(t, b, "durable", "m2", false, true)
	left := time.Now()
	if d := describe(t, b, "eph"); d.DeleteAtUnixNano == 0 {
		t.Fatal("ephemeral group without members has no deletion time")
	}
	waitGone(t, b, "eph")
	if since := time.Since(left); since < testEphemeralTTL {
		t.Fatalf("deleted %s after its last member left, before the TTL %s", since, testEphemeralTTL)
	}
	if n := internalMessages(t, store, "eph"); n != 0 {
		t.Fatalf("retry and DLQ topics of the deleted group hold %d messages", n)
	}
	offs, err := store.GetOffsets(context.Background(), "eph", []*sdk.QueueRef{{Topic: "orders", Queue: 0}})
	if err != nil || offs[0].Committed != -1 {
		t.Fatalf("deleted group's committed offset %v, %v; want -1", offs, err)
	}
	if _, err := b.GetOffsets(context.Background(), &sdk.GetOffsetsRequest{Queues: []*sdk.QueueRef{{Topic: sdk.RetryTopic("eph"), Queue: 0}}}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("retry topic of the deleted group: %v, want not found", err)
	}
	// The durable group left as long ago: still there, offsets and all.
	d := describe(t, b, "durable")
	if d.Ephemeral || len(d.Queues) == 0 || d.Queues[0].Committed != 2 {
		t.Fatalf("durable group after the ephemeral one was deleted: %v", d)
	}
	// The name is free again, for a new ephemeral group.
	mustJoin(t, b, "eph", "m5", true, false)
}

// A member that joins before the TTL ran out keeps the group.
func TestEphemeralGroupRejoinBeforeTTLKeepsIt(t *testing.T) {
	store := newMemory(t)
	b := newEphemeralBroker(t, t.TempDir(), store)
	produce(t, b, 0, "a")
	mustJoin(t, b, "eph", "m1", true, false)
	commit(t, b, "eph", 1)
	mustJoin(t, b, "control", "c1", true, false)
	mustJoin(t, b, "control", "c1", true, true)
	mustJoin(t, b, "eph", "m1", true, true)
	deleteAt := time.Unix(0, describe(t, b, "eph").DeleteAtUnixNano)
	if deleteAt.IsZero() {
		t.Fatal("no deletion time after the last member left")
	}
	mustJoin(t, b, "eph", "m2", true, false)
	if d := describe(t, b, "eph"); d.DeleteAtUnixNano != 0 {
		t.Fatalf("deletion time %d with a live member", d.DeleteAtUnixNano)
	}
	// The control group, left before, goes; by then and a few sweeps
	// past the old deletion time, the rejoined group must still be there.
	waitGone(t, b, "control")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deleteAt.Add(4 * testEphemeralTTL)) {
		if time.Now().After(deadline) {
			t.Fatal("clock")
		}
		time.Sleep(10 * time.Millisecond)
		mustJoin(t, b, "eph", "m2", true, false) // m2 stays live
	}
	d := describe(t, b, "eph")
	if len(d.Members) != 1 || d.Queues[0].Committed != 1 {
		t.Fatalf("rejoined group: members %v, queues %v", d.Members, d.Queues)
	}
}

// A node that restarts while an ephemeral group has no members deletes it
// a TTL after its start: the mark is kept in the data dir.
func TestEphemeralGroupDeletedAfterRestart(t *testing.T) {
	store := newMemory(t)
	dir := t.TempDir()
	b := newEphemeralBroker(t, dir, store)
	produce(t, b, 0, "a")
	mustJoin(t, b, "eph", "m1", true, false)
	commit(t, b, "eph", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil { // the member never left
		t.Fatal(err)
	}
	b2 := newEphemeralBroker(t, dir, store) // same store: its offsets are there
	if d := describe(t, b2, "eph"); !d.Ephemeral || d.DeleteAtUnixNano == 0 {
		t.Fatalf("after the restart: ephemeral=%v delete_at=%d", d.Ephemeral, d.DeleteAtUnixNano)
	}
	waitGone(t, b2, "eph")

	// Without the mark (another data dir), the same state is a durable
	// group: the negative control of the file.
	mustJoin(t, b2, "eph2", "m1", true, false)
	commit(t, b2, "eph2", 1)
	if err := b2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b3 := newEphemeralBroker(t, t.TempDir(), store)
	if d := describe(t, b3, "eph2"); d.Ephemeral {
		t.Fatal("group marked ephemeral without its data dir's mark")
	}
}

// A node with a replication plugin refuses ephemeral members: it cannot
// delete groups.
func TestEphemeralGroupRefusedWhenReplicated(t *testing.T) {
	b := New(Options{Node: "n1", Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(newMemory(t)))
	b.repl = &replicator{}
	if err := join(t, b, "eph", "m1", true, false); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ephemeral member on a replicated node: %v", err)
	}
}

// A straggler commit for an ephemeral group that was deleted (a member
// that left, or was dropped, sends its last commit late) is refused with
// not found naming the deletion, and recreates nothing: the store holds no
// offset for the group and it stays unknown, also after a restart. A
// member joining the name again clears the refusal: its commits are
// stored. A durable group's commit after its members left is stored (the
// control: only the deleted ephemeral group is refused).
func TestEphemeralGroupStragglerCommitRefused(t *testing.T) {
	store := newMemory(t)
	dir := t.TempDir()
	b := newEphemeralBroker(t, dir, store)
	produce(t, b, 0, "a", "b", "c")
	mustJoin(t, b, "eph", "m1", true, false)
	mustJoin(t, b, "durable", "d1", false, false)
	commit(t, b, "eph", 1)
	mustJoin(t, b, "eph", "m1", true, true)
	mustJoin(t, b, "durable", "d1", false, true)
	waitGone(t, b, "eph")

	straggle := func(b *Broker) error {
		return b.CommitOffsets(context.Background(), &sdk.CommitOffsetsRequest{Group: "eph", Generation: 1, Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 2}}})
	}
	noOffsets := func(when string) {
		t.Helper()
		offs, err := store.GetOffsets(context.Background(), "eph", []*sdk.QueueRef{{Topic: "orders", Queue: 0}})
		if err != nil || offs[0].Committed != -1 {
			t.Fatalf("%s: the deleted group's committed offset %v, %v; want -1 (nothing recreated)", when, offs, err)
		}
	}
	err := straggle(b)
	if !errors.Is(err, sdk.ErrNotFound) || !strings.Contains(err.Error(), "ephemeral group, deleted at") {
		t.Fatalf("straggler commit after the deletion: %v; want not found naming the deletion", err)
	}
	noOffsets("after the straggler commit")
	if _, err := b.DescribeGroup(context.Background(), &sdk.DescribeGroupRequest{Group: "eph"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("the deleted group after a straggler commit: %v; want not found", err)
	}
	// Control: the durable group, left as long ago, commits.
	commit(t, b, "durable", 2)

	// The refusal survives a restart (kept in the data dir).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b2 := newEphemeralBroker(t, dir, store)
	if err := straggle(b2); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("straggler commit after a restart: %v; want not found", err)
	}
	noOffsets("after a restart and a straggler commit")

	// A member joining the name again starts a new group, whose commits count.
	mustJoin(t, b2, "eph", "m2", true, false)
	if err := straggle(b2); err != nil {
		t.Fatalf("commit of the group joined again: %v", err)
	}
	if d := describe(t, b2, "eph"); d.Queues[0].Committed != 2 {
		t.Fatalf("the group joined again: committed %d, want 2", d.Queues[0].Committed)
	}
}
