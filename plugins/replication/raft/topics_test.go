package raft

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/ferrymq/ferry/core/sdk"
)

// waitApplied waits for the applied index's background writer.
func waitApplied(f *fsm) {
	for {
		f.amu.Lock()
		running := f.backgroundRunning
		f.amu.Unlock()
		if !running {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func topicsEntry(t *testing.T, index uint64, op, name string, queues int32) *hraft.Log {
	t.Helper()
	b, err := encodeTopics(&sdk.TopicChange{Op: op, Name: name, Queues: queues})
	if err != nil {
		t.Fatal(err)
	}
	return &hraft.Log{Index: index, Type: hraft.LogCommand, Data: b}
}

// A topic change is applied at its place in the log: a batch of a topic it
// creates, later in the same apply batch, is stored there (its append
// starts after the create); entries applied before a restart are not
// applied again.
func TestTopicEntriesInLogOrder(t *testing.T) {
	core := newMemCore("orders/0")
	f := follower(t, core)
	t.Cleanup(func() { waitApplied(f) })
	out := f.ApplyBatch([]*hraft.Log{
		batchEntry(t, 1, "orders", 0, 2),
		topicsEntry(t, 2, sdk.TopicCreate, "clicks", 2),
		batchEntry(t, 3, "clicks", 1, 3),
		topicsEntry(t, 4, sdk.TopicAlter, "clicks", 3),
		batchEntry(t, 5, "clicks", 2, 1),
	})
	f.drain() // the apply pipeline answers entries after ApplyBatch returned
	for i, o := range out {
		if err, ok := o.(error); ok {
			t.Fatalf("entry %d: %v", i+1, err)
		}
	}
	if n := len(core.log("clicks/1")); n != 3 {
		t.Errorf("clicks/1 holds %d messages, want 3", n)
	}
	if n := len(core.log("clicks/2")); n != 1 {
		t.Errorf("clicks/2 holds %d messages, want 1", n)
	}
	if f.applied != 5 {
		t.Errorf("applied %d, want 5", f.applied)
	}
	// Replayed after a restart (raft hands over entries up to the
	// applied index again): nothing applied twice.
	f2 := newFSM(f.p, f.ctx, core, f.path[:len(f.path)-len("/applied")])
	f2.ApplyBatch([]*hraft.Log{topicsEntry(t, 4, sdk.TopicDelete, "clicks", 0)})
	if n := len(core.log("clicks/1")); n != 3 {
		t.Errorf("an entry applied before the restart was applied again: clicks/1 holds %d", n)
	}
	if got := core.applied; len(got) != 2 {
		t.Errorf("topic changes applied %q, want the create and the alter once", got)
	}
}

// A snapshot carries the node's topics; a follower restoring it creates
// them before it fetches their messages, and deletes those it lacks. A
// snapshot of before topics went through the log changes no topic.
func TestSnapshotCarriesTopics(t *testing.T) {
	leader := newMemCore("orders/0")
	lf := follower(t, leader)
	t.Cleanup(func() { waitApplied(lf) })
	lf.ApplyBatch([]*hraft.Log{
		topicsEntry(t, 1, sdk.TopicCreate, "clicks", 2),
		batchEntry(t, 2, "clicks", 1, 4),
	})
	snap, err := lf.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	var s snapshot
	if err := json.Unmarshal(sink.Bytes(), &s); err != nil || len(s.Topics) != 2 {
		t.Fatalf("snapshot %s: %v", sink.String(), err)
	}
	local := newMemCore("orders/0", "stale/0")
	f := follower(t, local, servePeer(t, "n2", leader))
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if n := len(local.log("clicks/1")); n != 4 {
		t.Errorf("restored: clicks/1 holds %d messages, want 4", n)
	}
	info, _ := local.NodeInfo(t.Context())
	if len(info.Topics) != 2 || info.Topics[0].Name != "clicks" || info.Topics[0].Queues != 2 || info.Topics[1].Name != "orders" {
		t.Errorf("restored topics %v, want clicks:2 and orders:1 (stale deleted)", info.Topics)
	}

	old := newMemCore("orders/0", "stale/0")
	of := follower(t, old, servePeer(t, "n2", leader))
	if err := of.Restore(io.NopCloser(bytes.NewReader([]byte(`{"index":1,"ends":{"orders/0":0}}`)))); err != nil {
		t.Fatal(err)
	}
	if len(old.applied) != 0 {
		t.Errorf("an older snapshot changed topics: %q", old.applied)
	}
}
