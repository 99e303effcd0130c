package raft

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"testing"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// offCore is a memCore that stores consumer offsets, as the broker would
// (it refuses unknown queues), and records every commit with the end of the
// queue at that moment.
type offCore struct {
	*memCore
	omu     sync.Mutex
	offs    map[string]map[string]int64
	commits []string // "group topic/queue=offset (end N)"
}

func newOffCore(queues ...string) *offCore {
	return &offCore{memCore: newMemCore(queues...), offs: map[string]map[string]int64{}}
}

func (c *offCore) CommitOffsets(_ context.Context, group string, offs []*sdk.GroupOffset) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range offs {
		if _, ok := c.queues[queueKey(o.Topic, o.Queue)]; !ok {
			return fmt.Errorf("%w: no queue %s/%d", sdk.ErrNotFound, o.Topic, o.Queue)
		}
	}
	c.omu.Lock()
	defer c.omu.Unlock()
	for _, o := range offs {
		k := queueKey(o.Topic, o.Queue)
		if c.offs[group] == nil {
			c.offs[group] = map[string]int64{}
		}
		c.offs[group][k] = o.Offset
		c.commits = append(c.commits, fmt.Sprintf("%s %s=%d (end %d)", group, k, o.Offset, len(c.queues[k])))
	}
	return nil
}

func (c *offCore) committed() []string {
	c.omu.Lock()
	defer c.omu.Unlock()
	return append([]string(nil), c.commits...)
}

func (c *offCore) offset(group, k string) (int64, bool) {
	c.omu.Lock()
	defer c.omu.Unlock()
	off, ok := c.offs[group][k]
	return off, ok
}

func batchEntry(t *testing.T, index uint64, topic string, queue int32, n int) *hraft.Log {
	t.Helper()
	req := &ferryv1.ApplyRequest{}
	for i := range n {
		req.Messages = append(req.Messages, &sdk.Message{Id: fmt.Sprintf("e%d-%d", index, i), Topic: topic, Queue: queue, Body: []byte("x")})
	}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return &hraft.Log{Index: index, Type: hraft.LogCommand, Data: b}
}

func offsetsEntry(t *testing.T, index uint64, group string, offs ...*sdk.GroupOffset) *hraft.Log {
	t.Helper()
	b, err := encodeOffsets(group, offs)
	if err != nil {
		t.Fatal(err)
	}
	return &hraft.Log{Index: index, Type: hraft.LogCommand, Data: b}
}

func gOff(topic string, queue int32, off int64) *sdk.GroupOffset {
	return &sdk.GroupOffset{Topic: topic, Queue: queue, Offset: off}
}

func sameStrings(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// Batches keep their untagged encoding (old logs decode as before); an
// offsets entry is never read as a batch, not even by a node that does not
// know the kind.
func TestEntryKinds(t *testing.T) {
	for _, req := range []*ferryv1.ApplyRequest{
		{},
		{Messages: []*sdk.Message{{}}},
		{Messages: []*sdk.Message{{Id: "a", Topic: "orders", Queue: 3, Body: []byte("x"), Headers: map[string]string{"k": "v"}}, {Id: "b"}}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		kind, payload, err := decodeEntry(b)
		if err != nil || kind != kindBatch || !bytes.Equal(payload, b) {
			t.Fatalf("batch %v: kind %d, err %v", req, kind, err)
		}
	}
	data, err := encodeOffsets("billing", []*sdk.GroupOffset{gOff("orders", 1, 42)})
	if err != nil {
		t.Fatal(err)
	}
	kind, payload, err := decodeEntry(data)
	if err != nil || kind != kindOffsets {
		t.Fatalf("offsets entry: kind %d, err %v", kind, err)
	}
	req, err := decodeOffsets(payload)
	if err != nil || req.Group != "billing" || len(req.Offsets) != 1 || req.Offsets[0].Offset != 42 || req.Offsets[0].Queue != 1 {
		t.Fatalf("offsets entry decoded to %v, %v", req, err)
	}
	// What a node of the previous version does with it: fail, not store.
	if err := proto.Unmarshal(data, &ferryv1.ApplyRequest{}); err == nil {
		t.Fatal("an offsets entry unmarshals as an ApplyRequest")
	}
	if _, _, err := decodeEntry([]byte{entryTagged, 99, 1}); err == nil {
		t.Fatal("an entry of an unknown kind decoded")
	}
}

// Offsets entries are applied in log order, after the batches before them
// are stored, clamped to the end of the queue; the table keeps the log's
// values; an entry naming a queue this node lacks stores the rest.
func TestFSMAppliesOffsetsInLogOrder(t *testing.T) {
	core := newOffCore("orders/0", "orders/1")
	f := follower(t, core)
	out := f.ApplyBatch([]*hraft.Log{
		batchEntry(t, 1, "orders", 0, 3),
		offsetsEntry(t, 2, "g", gOff("orders", 0, 3)),
		batchEntry(t, 3, "orders", 0, 2),
		offsetsEntry(t, 4, "g", gOff("orders", 0, 10), gOff("orders", 1, 0)),
		offsetsEntry(t, 5, "h", gOff("orders", 1, 0), gOff("gone", 0, 7)),
	})
	f.drain() // the apply pipeline answers entries after ApplyBatch returned
	for i, o := range out {
		if err, ok := o.(error); ok {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	// (memCore stores at once: entry 3's messages are there already.)
	want := []string{"g orders/0=3 (end 5)", "g orders/0=5 (end 5)", "g orders/1=0 (end 0)", "h orders/1=0 (end 0)"}
	if got := core.committed(); !sameStrings(got, want) {
		t.Fatalf("commits %v, want %v", got, want)
	}
	if off, _ := f.offs.get("g", "orders", 0); off != 10 {
		t.Fatalf("table has g orders/0 at %d, want the log's 10", off)
	}
	if off, ok := f.offs.get("h", "gone", 0); !ok || off != 7 {
		t.Fatalf("table has h gone/0 at %d %v, want 7", off, ok)
	}
	if f.applied != 5 {
		t.Fatalf("applied %d, want 5", f.applied)
	}
	// Replayed after a restart (index <= applied): the table follows, the
	// store is not written again.
	f2 := follower(t, core)
	f2.applied = 5
	f2.ApplyBatch([]*hraft.Log{
		batchEntry(t, 1, "orders", 0, 3),
		offsetsEntry(t, 2, "g", gOff("orders", 0, 3)),
		offsetsEntry(t, 4, "g", gOff("orders", 0, 10), gOff("orders", 1, 0)),
	})
	f2.drain()
	if got := core.committed(); !sameStrings(got, want) {
		t.Fatalf("replay stored %v", got[len(want):])
	}
	if off, ok := f2.offs.get("g", "orders", 0); !ok || off != 10 {
		t.Fatalf("replayed table has g orders/0 at %d %v, want 10", off, ok)
	}
}

type bufSink struct {
	bytes.Buffer
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { return nil }
func (s *bufSink) Close() error  { return nil }

// A snapshot carries the table; a follower restoring it (the entries that
// committed the offsets compacted away) stores them after fetching the
// messages, and takes the table. A snapshot of before offsets restores with
// none.
func TestSnapshotCarriesOffsets(t *testing.T) {
	leader := newOffCore("orders/0", "orders/1")
	lf := follower(t, leader)
	lf.ApplyBatch([]*hraft.Log{
		batchEntry(t, 1, "orders", 0, 4),
		batchEntry(t, 2, "orders", 1, 2),
		offsetsEntry(t, 3, "g", gOff("orders", 0, 4), gOff("orders", 1, 1)),
		offsetsEntry(t, 4, "h", gOff("orders", 0, 2)),
	})
	snap, err := lf.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	raw := sink.String()
	var s snapshot
	if err := json.Unmarshal(sink.Bytes(), &s); err != nil || s.Offsets["g"]["orders/1"] != 1 || s.Offsets["h"]["orders/0"] != 2 || s.Index != 4 {
		t.Fatalf("snapshot %s: %v", raw, err)
	}

	local := newOffCore("orders/0", "orders/1")
	f := follower(t, local, servePeer(t, "n2", leader))
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		group, k string
		want     int64
	}{{"g", "orders/0", 4}, {"g", "orders/1", 1}, {"h", "orders/0", 2}} {
		if off, ok := local.offset(c.group, c.k); !ok || off != c.want {
			t.Fatalf("restored store: %s %s at %d %v, want %d", c.group, c.k, off, ok, c.want)
		}
		topic, queue, _ := parseQueueKey(c.k)
		if off, _ := f.offs.get(c.group, topic, queue); off != c.want {
			t.Fatalf("restored table: %s %s at %d, want %d", c.group, c.k, off, c.want)
		}
	}

	// A snapshot written before offsets were replicated.
	old := newOffCore("orders/0")
	of := follower(t, old, servePeer(t, "n2", leader))
	if err := of.Restore(io.NopCloser(bytes.NewReader([]byte(`{"index":1,"ends":{"orders/0":4}}`)))); err != nil {
		t.Fatal(err)
	}
	if len(old.committed()) != 0 || of.offs.snapshot() != nil || len(old.log("orders/0")) != 4 {
		t.Fatalf("old snapshot: commits %v, table %v", old.committed(), of.offs.snapshot())
	}
}

// At start the table comes from the latest snapshot (raft replays only the
// entries after it). Its offsets are stored again only when the snapshot is
// beyond the applied index (a Restore killed before it stored them).
func TestResumeRebuildsOffsets(t *testing.T) {
	for _, behind := range []bool{false, true} {
		t.Run(fmt.Sprint("behind=", behind), func(t *testing.T) {
			dir := t.TempDir()
			snaps, err := hraft.NewFileSnapshotStoreWithLogger(dir, 2, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			_, trans := hraft.NewInmemTransport("")
			sink, err := snaps.Create(hraft.SnapshotVersionMax, 9, 1, hraft.Configuration{}, 1, trans)
			if err != nil {
				t.Fatal(err)
			}
			s := &snapshot{Index: 9, Ends: map[string]int64{"orders/0": 0}, Offsets: offsetTable{"g": {"orders/0": 0}}}
			if err := s.Persist(sink); err != nil {
				t.Fatal(err)
			}
			core := newOffCore("orders/0")
			f := follower(t, core)
			f.applied = 12
			if behind {
				f.applied = 3
			}
			if err := f.resume(context.Background(), snaps); err != nil {
				t.Fatal(err)
			}
			if off, ok := f.offs.get("g", "orders", 0); !ok || off != 0 {
				t.Fatalf("table after resume: %v", f.offs.snapshot())
			}
			commits := core.committed()
			if behind != (len(commits) == 1) {
				t.Fatalf("applied %d, snapshot 9: stored %v", f.applied, commits)
			}
			if behind && f.applied != 9 {
				t.Fatalf("applied %d after storing the snapshot's offsets, want 9", f.applied)
			}
		})
	}
}

// A node that does not lead takes no offsets and answers nil (the broker
// would retry and warn on an error).
func TestReplicateOffsetsOffLeader(t *testing.T) {
	p := &Plugin{node: "n1", log: quietLog()}
	if err := p.ReplicateOffsets(context.Background(), "g", []*sdk.GroupOffset{gOff("orders", 0, 1)}); err != nil {
		t.Fatal(err)
	}
}
