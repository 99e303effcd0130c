package raft

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Consumer offsets through the raft log (see the package doc, "Consumer
// offsets").
//
// The leader's broker reports each group's commits (coalesced) to
// ReplicateOffsets, which raft.Apply()s them as an entry of their own kind
// and returns without waiting for the commit. Every node's FSM applies such
// an entry in log order: it records the offsets in its table (the latest
// offset of every group and queue the log committed) and stores them through
// ReplicaCore.CommitOffsets, clamped to the end of the node's queues.
// Snapshots carry the table; Restore stores it.

// Entry kinds. A message batch is, as it always was, a protobuf-encoded
// ferryv1.ApplyRequest with no prefix. Any other kind starts with the byte
// entryTagged (0x00), then its kind byte, then its payload. A protobuf
// encoding never starts with 0x00: its first byte is a field's tag,
// (field number << 3) | wire type, and field number 0 is invalid, which
// proto.Unmarshal refuses. So every entry of an existing log decodes as
// before, and an entry of a new kind can never be taken for a batch (a node
// that does not know the kind fails the entry instead of storing messages).
const (
	entryTagged byte = 0x00

	kindBatch   byte = 0x00 // untagged: an ApplyRequest
	kindOffsets byte = 0x01 // a ferryv1.CommitOffsetsRequest
	kindTopics  byte = 0x02 // a ferryv1.TopicChange (topics.go)
	kindMembers byte = 0x03 // a memberChange, JSON (members.go)
	// kindGroupDelete is a ferryv1.DeleteGroupOffsetsRequest (groups.go).
	// 0x05: branch raft20 took 0x04 (kindOffsetCommits).
	kindGroupDelete byte = 0x05
	// kindOffsetCommits: a ferryv1.OffsetCommits, several groups' offsets
	// (the group commit of CommitOffsets). An entry of one group is
	// written as kindOffsets, which older versions read.
	kindOffsetCommits byte = 0x04
)

// encodeOffsets is the entry that commits a group's offsets.
func encodeOffsets(group string, offsets []*sdk.GroupOffset) ([]byte, error) {
	b, err := proto.Marshal(&ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets})
	if err != nil {
		return nil, err
	}
	return append([]byte{entryTagged, kindOffsets}, b...), nil
}

// encodeOffsetCommits is the entry that commits several groups' offsets; a
// single group's is encodeOffsets'.
func encodeOffsetCommits(groups []*ferryv1.CommitOffsetsRequest) ([]byte, error) {
	if len(groups) == 1 {
		return encodeOffsets(groups[0].Group, groups[0].Offsets)
	}
	b, err := proto.Marshal(&ferryv1.OffsetCommits{Groups: groups})
	if err != nil {
		return nil, err
	}
	return append([]byte{entryTagged, kindOffsetCommits}, b...), nil
}

// decodeOffsetCommits reads a kindOffsetCommits entry's payload.
func decodeOffsetCommits(payload []byte) ([]*ferryv1.CommitOffsetsRequest, error) {
	var oc ferryv1.OffsetCommits
	if err := proto.Unmarshal(payload, &oc); err != nil {
		return nil, fmt.Errorf("raft offset commits entry: %w", err)
	}
	return oc.Groups, nil
}

// decodeEntry splits an entry into its kind and payload.
func decodeEntry(data []byte) (kind byte, payload []byte, err error) {
	if len(data) == 0 || data[0] != entryTagged {
		return kindBatch, data, nil
	}
	if len(data) < 2 {
		return 0, nil, errors.New("raft entry: tagged, but no kind")
	}
	switch data[1] {
	case kindOffsets:
		return kindOffsets, data[2:], nil
	case kindTopics:
		return kindTopics, data[2:], nil
	case kindMembers:
		return kindMembers, data[2:], nil
	case kindGroupDelete:
		return kindGroupDelete, data[2:], nil
	case kindOffsetCommits:
		return kindOffsetCommits, data[2:], nil
	default:
		return 0, nil, fmt.Errorf("raft entry of unknown kind %d (written by a newer version?)", data[1])
	}
}

var _ sdk.OffsetReplication = (*Plugin)(nil)

// offsetEnqueueTimeout bounds ReplicateOffsets' wait for room in raft's
// apply queue.
const offsetEnqueueTimeout = 2 * time.Second

// ReplicateOffsets puts a group's committed offsets into the raft log, on
// the leader, and returns once raft took the entry (not once committed: the
// broker coalesces the commits made meanwhile into its next call). On any
// other node it does nothing and returns nil: the broker reports only while
// its node takes produce, and a leader that lost the race with an election
// has nothing to commit (an error would only have the broker retry and warn
// until it notices its new role).
func (p *Plugin) ReplicateOffsets(ctx context.Context, group string, offsets []*sdk.GroupOffset) error {
	if len(offsets) == 0 {
		return nil
	}
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r == nil || r.State() != hraft.Leader {
		return nil
	}
	data, err := encodeOffsets(group, offsets)
	if err != nil {
		return err
	}
	timeout := offsetEnqueueTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	fut := r.Apply(data, timeout)
	go func() {
		// Best effort: an entry lost with the leadership is the new
		// leader's business (its broker reports the commits made to it).
		err := fut.Error()
		if err != nil && !errors.Is(err, hraft.ErrLeadershipLost) && !errors.Is(err, hraft.ErrNotLeader) && !errors.Is(err, hraft.ErrRaftShutdown) {
			p.log.Warn("consumer offsets not committed through raft (sent again with the group's next commit)", "group", group, "error", err)
		}
	}()
	return nil
}

// offsetTable is the latest offset the log committed for every group and
// queue: group → "topic/queue" → next offset.
type offsetTable map[string]map[string]int64

func (t offsetTable) clone() offsetTable {
	out := make(offsetTable, len(t))
	for g, qs := range t {
		out[g] = maps.Clone(qs)
	}
	return out
}

// groupOffsets lists one group's offsets of a table, sorted.
func (t offsetTable) groupOffsets(group string) ([]*sdk.GroupOffset, error) {
	var out []*sdk.GroupOffset
	for k, off := range t[group] {
		topic, queue, err := parseQueueKey(k)
		if err != nil {
			return nil, err
		}
		out = append(out, &sdk.GroupOffset{Topic: topic, Queue: queue, Offset: off})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Queue < out[j].Queue
	})
	return out, nil
}

// offsets is the fsm's table, with its lock: the FSM goroutine writes it,
// Snapshot copies it (Persist runs elsewhere), tests read it.
type offsets struct {
	mu    sync.Mutex
	table offsetTable
	// deleted are the groups the log deleted (groups.go), kept even
	// when the group commits again, with the group's generation after its
	// latest deletion and that deletion's index. A group without offsets
	// stops being a tombstone once a snapshot after the one that first
	// carried it is taken (prune); its generation is kept, for the
	// latest maxGroupGenerations such groups.
	deleted map[string]tomb
	// warned throttles warnings about offsets not stored.
	warned time.Time
}

// record puts an applied entry's offsets into the table.
func (o *offsets) record(req *ferryv1.CommitOffsetsRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.table == nil {
		o.table = offsetTable{}
	}
	g := o.table[req.Group]
	if g == nil {
		g = map[string]int64{}
		o.table[req.Group] = g
	}
	for _, off := range req.Offsets {
		g[queueKey(off.Topic, off.Queue)] = off.Offset
	}
}

// tomb is a group's deletion: the group's generation after it (0: from a
// snapshot or entry without one) and its log index (for a tombstone from a
// snapshot, the snapshot's).
type tomb struct {
	gen, index uint64
	// pruned: no longer a tombstone, only the group's generation.
	pruned bool
}

// maxGroupGenerations bounds the generations kept of groups that are no
// longer tombstones. Past it the oldest deletion's is forgotten: a node
// restoring a snapshot without it keeps the generation it had for that
// group (a commit sent before that deletion, and arriving at that node
// once it leads, would be taken as a commit without a generation is).
const maxGroupGenerations = 4096

// drop forgets a deleted group's offsets and records it as deleted by the
// entry at index, and returns the group's generation after the deletion:
// the one the entry proposes, raised to one more than the table's when that
// is higher (so every node, applying the same log, gets the same).
func (o *offsets) drop(group string, proposed, index uint64) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.table, group)
	if o.deleted == nil {
		o.deleted = map[string]tomb{}
	}
	gen := proposed
	if known := o.deleted[group].gen; known > 0 {
		gen = max(gen, known+1)
	}
	o.deleted[group] = tomb{gen: gen, index: index}
	return gen
}

// prune drops the tombstones of deletions at or below index (a snapshot
// this node took or restored holds them) whose groups hold no offsets,
// and returns how many it dropped. A node restoring a later snapshot that
// lacks them replaces its store's offsets with the snapshot's
// (fsm.deleteUnknownGroups), so their old offsets do not survive there.
func (o *offsets) prune(index uint64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, kept := 0, 0
	for g, t := range o.deleted {
		if !t.pruned && t.index != 0 && t.index <= index && o.table[g] == nil {
			t.pruned = true
			o.deleted[g] = t
			n++
		}
		if t.pruned {
			kept++
		}
	}
	for ; kept > maxGroupGenerations; kept-- {
		oldest, at := "", uint64(0)
		for g, t := range o.deleted {
			if t.pruned && (oldest == "" || t.index < at || t.index == at && g < oldest) {
				oldest, at = g, t.index
			}
		}
		delete(o.deleted, oldest)
	}
	return n
}

// deletedGroups lists the groups the log deleted, sorted, and their
// generations (those known).
func (o *offsets) deletedGroups() ([]string, map[string]uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.deleted))
	var gens map[string]uint64
	for g, t := range o.deleted {
		if !t.pruned {
			out = append(out, g)
		}
		if gen := t.gen; gen > 0 {
			if gens == nil {
				gens = map[string]uint64{}
			}
			gens[g] = gen
		}
	}
	sort.Strings(out)
	return out, gens
}

// resetDeleted replaces the deleted groups (a snapshot at index restored
// or resumed from), with their generations.
func (o *offsets) resetDeleted(groups []string, gens map[string]uint64, index uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deleted = map[string]tomb{}
	for g, gen := range gens {
		o.deleted[g] = tomb{gen: gen, index: index, pruned: true}
	}
	for _, g := range groups {
		o.deleted[g] = tomb{gen: gens[g], index: index}
	}
}

// snapshot copies the table.
func (o *offsets) snapshot() offsetTable {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.table) == 0 {
		return nil
	}
	return o.table.clone()
}

// reset replaces the table (a snapshot restored or resumed from).
func (o *offsets) reset(t offsetTable) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.table = t.clone()
}

// get is one group's offset on one queue in the table.
func (o *offsets) get(group, topic string, queue int32) (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	off, ok := o.table[group][queueKey(topic, queue)]
	return off, ok
}

// decodeOffsets reads an offsets entry's payload.
func decodeOffsets(payload []byte) (*ferryv1.CommitOffsetsRequest, error) {
	var req ferryv1.CommitOffsetsRequest
	if err := proto.Unmarshal(payload, &req); err != nil {
		return nil, fmt.Errorf("raft offsets entry: %w", err)
	}
	return &req, nil
}

// commitOffsets stores a group's offsets on this node through the core,
// each clamped to the end of its queue here: log order puts the messages
// before the commit that read them, so this only bites on a store that lost
// messages, but an offset beyond the log would make the group skip the
// messages later stored there. It retries while the core cannot take it,
// and returns an error only when the node stops. A queue the broker refuses
// (a topic this node lacks) is logged and skipped: retrying cannot help.
func (f *fsm) commitOffsets(group string, offs []*sdk.GroupOffset) error {
	for {
		err := f.commitClamped(group, offs)
		if err == nil {
			return nil
		}
		if f.ctx.Err() != nil {
			return err
		}
		if errors.Is(err, sdk.ErrNotFound) || errors.Is(err, sdk.ErrInvalidArgument) {
			// One queue at a time: store what can be stored.
			for _, o := range offs {
				if err := f.commitClamped(group, []*sdk.GroupOffset{o}); err != nil {
					f.p.log.Warn("a consumer group's offset from the raft log cannot be stored here; skipped",
						"group", group, "topic", o.Topic, "queue", o.Queue, "offset", o.Offset, "error", err)
				}
			}
			return nil
		}
		f.warnOffsets("storing a consumer group's offsets from the raft log failed; retrying", "group", group, "error", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// commitClamped is one attempt of commitOffsets.
func (f *fsm) commitClamped(group string, offs []*sdk.GroupOffset) error {
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	info, err := f.core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	ends := map[string]int64{}
	for _, o := range info.Offsets {
		ends[queueKey(o.Topic, o.Queue)] = o.End
	}
	out := make([]*sdk.GroupOffset, 0, len(offs))
	for _, o := range offs {
		off := o.Offset
		if end, ok := ends[queueKey(o.Topic, o.Queue)]; ok && off > end {
			f.warnOffsets("a consumer group's offset from the raft log lies beyond this node's log; stored at its end",
				"group", group, "topic", o.Topic, "queue", o.Queue, "offset", off, "end", end)
			off = end
		}
		out = append(out, &sdk.GroupOffset{Topic: o.Topic, Queue: o.Queue, Offset: off})
	}
	return f.core.CommitOffsets(ctx, group, out)
}

// commitTable stores every group of a table (a snapshot's) through the core.
func (f *fsm) commitTable(t offsetTable) error {
	groups := make([]string, 0, len(t))
	for g := range t {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	for _, g := range groups {
		offs, err := t.groupOffsets(g)
		if err != nil {
			return err
		}
		if len(offs) == 0 {
			continue
		}
		if err := f.commitOffsets(g, offs); err != nil {
			return err
		}
	}
	return nil
}

func (f *fsm) warnOffsets(msg string, args ...any) {
	f.offs.mu.Lock()
	warn := time.Since(f.offs.warned) > 5*time.Second
	if warn {
		f.offs.warned = time.Now()
	}
	f.offs.mu.Unlock()
	if warn {
		f.p.log.Warn(msg, args...)
	}
}
