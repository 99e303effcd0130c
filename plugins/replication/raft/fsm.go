package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/atomicfile"
)

// fsm applies committed entries to the node's own storage through the
// broker core. The storage is the state machine: entries are applied in log
// order, so every node's store assigns the same offsets. The index of the
// last applied entry is kept in a file (written, not fsynced, after each
// batch: it survives a killed process) so that a restarted node does not
// apply entries twice; within the store's de-duplication window a second
// apply would be harmless anyway. When a batch's last applied entry carries
// messages, the store records its index already (HeaderRaftIndex, flushed
// before the batch is answered), so the file is written in the background,
// off the commit path; after any other entry (offsets, no-op,
// configuration) it is written before the batch is answered.
type fsm struct {
	p   *Plugin
	ctx context.Context
	// lazy: committed entries are applied log_durable (the store need not
	// fsync them: the raft log holds them), and the applied file holds only
	// an index the store was synced up to (saveApplied). actx is the
	// context of those applies.
	lazy    bool
	actx    context.Context
	core    sdk.ReplicaCore
	path    string
	applied uint64
	// The applied file's writer: wmu is held while the file is written;
	// amu guards the index to write (want, numbered seq), the number of
	// the one written last and whether a background writer runs.
	wmu, amu          sync.Mutex
	want, seq, wrote  uint64
	backgroundRunning bool
	// patience: Restore gives up once no peer made progress for this long.
	patience time.Duration
	// offs: the latest offset of every consumer group and queue the log
	// committed (offsets.go), for snapshots.
	offs offsets
	// lastSnap is the index of the last snapshot this fsm took, restored or
	// resumed from (0 until one): tombstones at or below it are dropped at
	// the next snapshot (offsets.prune). FSM goroutine only.
	lastSnap uint64
	// The apply pipeline (pipeline.go): pmu guards queue, broken and
	// applied once the completer runs; cond signals changes of queue and
	// broken. startMu is held while appends are started, by ApplyBatch and
	// by a recovery.
	pmu       sync.Mutex
	cond      *sync.Cond
	queue     []*run
	broken    bool
	startMu   sync.Mutex
	depth     int  // runs in flight at most; 1: no overlap
	inPlace   bool // tests' negative control: retry a failed append alone, where it failed (the old way)
	completer sync.Once
}

// HeaderRaftIndex is the header in which every message applied by the raft
// plugin carries the index of its raft entry, so that the store itself
// records how far the log was applied.
const HeaderRaftIndex = "ferry-raft-index"

func newFSM(p *Plugin, ctx context.Context, core sdk.ReplicaCore, dir string) *fsm {
	f := &fsm{p: p, ctx: ctx, actx: ctx, core: core, path: filepath.Join(dir, "applied"), patience: catchUpPatience, depth: pipelineDepth}
	f.cond = sync.NewCond(&f.pmu)
	if _, ok := core.(sdk.StoreSyncer); ok && !p.cfg.StoreFsync {
		f.lazy, f.actx = true, sdk.WithLogDurable(ctx)
	}
	if b, err := os.ReadFile(f.path); err == nil {
		f.applied, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	// The store is written in log order: the highest entry index on the
	// last message of any queue was applied, whatever the file says (it
	// may lag, or be gone). Applied log_durable, the store holds after a
	// crash a prefix of what it was sent (sdk.Syncer), and the entry of
	// its last message may be only partly there: it is applied again (the
	// store de-duplicates its messages by id), and so is every later
	// entry, which the raft log holds (raft replays it from the last
	// snapshot on; a snapshot syncs the store first).
	stored := f.storedIndex()
	if f.lazy && !noReapply && stored > 0 {
		stored--
	}
	if stored > f.applied {
		p.log.Info("applied index from the store", "file", f.applied, "store", stored)
		f.applied = stored
	}
	return f
}

// storedIndex reads the raft index of the last message of every queue.
func (f *fsm) storedIndex() uint64 {
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	info, err := f.core.NodeInfo(ctx)
	if err != nil {
		f.p.log.Warn("reading the applied index from the store", "error", err)
		return 0
	}
	var idx uint64
	for _, o := range info.Offsets {
		if o.End <= o.Start {
			continue
		}
		resp, err := f.core.Read(ctx, &sdk.ReadRequest{Topic: o.Topic, Queue: o.Queue, Offset: o.End - 1, MaxMessages: 1})
		if err != nil {
			f.p.log.Warn("reading the applied index from the store", "queue", o.Topic, "error", err)
			continue
		}
		for _, m := range resp.Messages {
			if v, err := strconv.ParseUint(m.Headers[HeaderRaftIndex], 10, 64); err == nil {
				idx = max(idx, v)
			}
		}
	}
	return idx
}

// saveApplied records the applied index before it returns. Applying
// log_durable, it syncs the store first (the file never names an entry the
// store could lose), and writes the file durably; a failed sync leaves the
// file as it was (entries after it are applied again after a restart).
func (f *fsm) saveApplied() {
	if f.lazy && !noReapply {
		if err := f.syncApplied(); err != nil {
			f.p.log.Warn("recording the applied index: syncing the store failed; entries after the last recorded index are applied again after a restart", "error", err)
		}
		return
	}
	f.amu.Lock()
	f.want, f.seq = f.applied, f.seq+1
	f.amu.Unlock()
	f.writeApplied()
}

// saveAppliedLater records the applied index in the background: only for
// an index the store records too (the last message applied carries it).
func (f *fsm) saveAppliedLater() {
	if f.lazy && !noReapply {
		return // the store may lose it: storedIndex, and the log, tell
	}
	f.amu.Lock()
	defer f.amu.Unlock()
	f.want, f.seq = f.applied, f.seq+1
	if f.backgroundRunning {
		return
	}
	f.backgroundRunning = true
	go func() {
		for {
			f.writeApplied()
			f.amu.Lock()
			if f.wrote == f.seq {
				f.backgroundRunning = false
				f.amu.Unlock()
				return
			}
			f.amu.Unlock()
		}
	}()
}

// writeApplied writes the latest index asked for, unless it was written:
// a temporary file renamed over the old one, so that a process killed
// meanwhile leaves the old or the new index, never a truncated file (which
// would replay the whole log). Writes are serialized, and a write never
// replaces a newer index with an older one.
func (f *fsm) writeApplied() {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.amu.Lock()
	v, seq, wrote := f.want, f.seq, f.wrote
	f.amu.Unlock()
	if seq == wrote {
		return
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(v, 10)), 0o644); err != nil {
		f.p.log.Error("recording the applied index", "error", err)
	} else if err := os.Rename(tmp, f.path); err != nil {
		f.p.log.Error("recording the applied index", "error", err)
	}
	f.amu.Lock()
	f.wrote = seq
	f.amu.Unlock()
}

// syncApplied makes the store durable up to the applied index (every entry
// up to it was started and answered before) and records the index in the
// applied file, durably. Called on the FSM goroutine or the completer with
// the pipeline drained or the index moved past what was stored.
func (f *fsm) syncApplied() error {
	f.pmu.Lock()
	idx := f.applied
	f.pmu.Unlock()
	ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
	defer cancel()
	if err := f.core.(sdk.StoreSyncer).SyncStore(ctx); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	// A core that cannot sync its store (an older host, a test core)
	// does not know the log_durable mark either: it stored each apply as
	// durably as its own flush policy says, as before the mark, and there
	// is nothing to sync. Refusing here would stop every snapshot, and raft's
	// log would never be compacted.
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return atomicfile.WriteFile(filepath.Dir(f.path), filepath.Base(f.path), []byte(strconv.FormatUint(idx, 10)), 0o644)
}

// start begins one entry's append; it retries while the core cannot take it
// (the storage plugin restarting). It gives up when the node stops, and at
// once for messages of a topic or queue this node does not have (retrying
// cannot help; the entry fails here, logged, and raft goes on).
func (f *fsm) start(msgs []*sdk.Message) sdk.ApplyWait {
	for {
		w, err := f.core.Apply(f.actx, msgs)
		if err == nil {
			return w
		}
		if permanent(err) {
			f.p.log.Error("a committed batch cannot be stored on this node", "topic", msgs[0].Topic, "error", err)
			return func(context.Context) ([]int64, error) { return nil, err }
		}
		if f.ctx.Err() != nil {
			return func(context.Context) ([]int64, error) { return nil, err }
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// permanent reports an error of an apply that retrying cannot help.
func permanent(err error) bool {
	return errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, sdk.ErrNotFound)
}

// Snapshots hold no messages: the store is the state, so a snapshot records
// the end offset of every queue and the index of the last entry applied. A
// follower that is sent one fetches what its store lacks from a peer
// (catchup.go) inside Restore, so raft applies no later entry before the
// store holds everything up to the snapshot.
type snapshot struct {
	// Index is the last entry the store held when the snapshot was taken
	// (raft's own snapshot index may be higher by entries without
	// messages). 0 in snapshots written before it was recorded.
	Index uint64           `json:"index,omitempty"`
	Ends  map[string]int64 `json:"ends"`
	// Offsets are consumer groups' offsets as the log committed them up
	// to the snapshot: group → "topic/queue" → next offset. Absent in
	// snapshots written before offsets went through the log.
	Offsets offsetTable `json:"offsets,omitempty"`
	// Topics are the node's topics when the snapshot was taken (the
	// topic changes the log applied, on the pipeline's baseline). Absent
	// (nil) in snapshots written before topics went through the log.
	Topics []snapTopic `json:"topics"`
	// Members are the peers' addresses the log recorded (members.go):
	// nodes added with `ferry cluster add-node`. Absent in older
	// snapshots and where none was added.
	Members map[string]Peer `json:"members,omitempty"`
	// DeletedGroups are the consumer groups the log deleted up to the
	// snapshot (groups.go): a node restoring it deletes their offsets
	// from its store before it stores Offsets. Absent in older snapshots.
	DeletedGroups []string `json:"deleted_groups,omitempty"`
	// GroupGenerations are the generations of the groups the log deleted
	// after their latest deletion: those of DeletedGroups, and of the
	// latest maxGroupGenerations deleted groups whose tombstones were
	// dropped. A node restoring the snapshot gives them to its core.
	// Absent in older snapshots.
	GroupGenerations map[string]uint64 `json:"group_generations,omitempty"`
}

// Snapshot is called by raft on the FSM goroutine (no entry is applied
// meanwhile), so the store's ends are exactly those after f.applied.
func (f *fsm) Snapshot() (hraft.FSMSnapshot, error) {
	f.drain() // every entry raft handed over is stored (or failed) first
	if f.lazy {
		// Raft drops entries up to the snapshot (less trailing_logs)
		// from its log: the store must hold them durably first.
		if err := f.syncApplied(); err != nil {
			return nil, fmt.Errorf("raft snapshot: syncing the store: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	info, err := f.core.NodeInfo(ctx)
	if err != nil {
		return nil, err
	}
	// Tombstones a snapshot before this one carried go now, unless this
	// node's core cannot list its store's groups (deleteUnknownGroups).
	if info.ListsGroups {
		if n := f.offs.prune(f.lastSnap); n > 0 {
			f.p.log.Debug("dropped consumer group tombstones an earlier raft snapshot held", "count", n, "up_to_index", f.lastSnap)
		}
	}
	s := &snapshot{Index: f.applied, Ends: map[string]int64{}, Offsets: f.offs.snapshot(), Topics: snapTopics(info.Topics), Members: f.p.memberTable()}
	s.DeletedGroups, s.GroupGenerations = f.offs.deletedGroups()
	f.lastSnap = f.applied
	for _, o := range info.Offsets {
		s.Ends[queueKey(o.Topic, o.Queue)] = o.End
	}
	return s, nil
}

func (s *snapshot) Persist(sink hraft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

func readSnapshot(r io.Reader) (*snapshot, error) {
	var s snapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return nil, fmt.Errorf("raft snapshot: %w", err)
	}
	return &s, nil
}

// Restore is called by raft on the FSM goroutine when the leader sent this
// follower a snapshot (it lacks entries the leader compacted away). It
// fetches every message the store lacks up to the snapshot's ends from a
// peer and appends it, with its offset, id and headers, before returning;
// raft applies the entries after the snapshot only then. When no peer can
// serve for catchUpPatience it returns an error: raft keeps its state and
// the leader sends the snapshot again.
func (f *fsm) Restore(r io.ReadCloser) error {
	defer r.Close()
	f.drain()
	s, err := readSnapshot(r)
	if err != nil {
		return err
	}
	if s.Index != 0 && f.applied > s.Index {
		// A snapshot older than what this node applied from the log (a
		// new leader of a later term may hold an older one than the
		// node had): refused. Taking it, raft would move its applied
		// index back to the snapshot's and delete the whole log
		// (raft-wal is a MonotonicLogStore) while keeping its last log
		// index, and panic on the next append, needing entries it
		// deleted ("log not found"). Refused, raft keeps its state and
		// the leader sends its snapshot again, a newer one once it took
		// it.
		f.p.log.Warn("refusing a raft snapshot older than what this node applied; the leader sends a newer one", "snapshot_index", s.Index, "applied", f.applied)
		return fmt.Errorf("%w: snapshot at index %d, this node applied up to %d", errStaleSnapshot, s.Index, f.applied)
	}
	// The members table first: a node that joined empty may know the
	// peers to fetch from (the leader's admin address) only from it.
	if s.Members != nil {
		f.p.setMembers(s.Members)
	}
	// The snapshot's topics first: its messages may be of topics this
	// node does not hold yet.
	if err := f.restoreTopics(s); err != nil {
		f.p.log.Error("restoring a raft snapshot's topics", "error", err)
		return err
	}
	if _, err := f.catchUp(f.ctx, s.Ends, f.patience, true); err != nil {
		f.p.log.Error("restoring a raft snapshot", "error", err)
		return err
	}
	// The groups deleted up to the snapshot, then the groups' offsets as
	// of it: the entries that deleted and committed them may be
	// compacted away.
	if err := f.deleteGroups(s.DeletedGroups, s.GroupGenerations); err != nil {
		f.p.log.Error("restoring a raft snapshot's consumer group deletions", "error", err)
		return err
	}
	if err := f.deleteUnknownGroups(s); err != nil {
		f.p.log.Error("restoring a raft snapshot: deleting the groups it does not hold", "error", err)
		return err
	}
	if err := f.commitTable(s.Offsets); err != nil {
		f.p.log.Error("restoring a raft snapshot's consumer offsets", "error", err)
		return err
	}
	f.offs.reset(s.Offsets)
	f.offs.resetDeleted(s.DeletedGroups, s.GroupGenerations, f.snapshotIndex(s))
	// raft applies only entries after the snapshot from now on.
	f.applied = f.snapshotIndex(s)
	f.lastSnap = f.applied
	f.saveApplied()
	f.p.restored.Add(1)
	return nil
}

// errStaleSnapshot: a snapshot installed over a node that applied past it.
var errStaleSnapshot = errors.New("raft snapshot older than this node's applied index")

// snapshotIndex is the last entry a snapshot's store held.
func (f *fsm) snapshotIndex(s *snapshot) uint64 {
	if s.Index == 0 {
		return f.storedIndex() // an older snapshot: the last message tells
	}
	return s.Index
}

// resume is called at start, before raft runs. raft restores no snapshot at
// start (the store is the state) but takes its index as applied: a node
// killed during a Restore would otherwise keep the gap for ever. So the
// store is checked against the latest snapshot, and what it lacks is
// fetched from peers first, however long that takes (applying later entries
// over the gap would give them other offsets than on every other node).
func (f *fsm) resume(ctx context.Context, snaps hraft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("raft snapshot %s: %w", metas[0].ID, err)
	}
	s, err := readSnapshot(rc)
	_ = rc.Close()
	if err != nil {
		return err
	}
	if f.snapshotIndex(s) > f.applied {
		// A Restore killed before it was done: its topics first. (A
		// snapshot this node applied past says nothing of its topics
		// now: changes after it are in the node's topics.json.)
		if err := f.restoreTopics(s); err != nil {
			return err
		}
	}
	n, err := f.catchUp(ctx, s.Ends, 0, false)
	if err != nil {
		return err
	}
	// raft replays the entries after the snapshot: with the snapshot's
	// offsets they rebuild the table. Below the applied index they are
	// not stored again (the store kept them); a snapshot beyond it (a
	// Restore killed before it stored the offsets) has them stored now.
	f.offs.reset(s.Offsets)
	f.offs.resetDeleted(s.DeletedGroups, s.GroupGenerations, f.snapshotIndex(s))
	f.lastSnap = f.snapshotIndex(s)
	if n == 0 && len(s.Offsets) == 0 && len(s.DeletedGroups) == 0 {
		return nil
	}
	if idx := f.snapshotIndex(s); idx > f.applied {
		if err := f.deleteGroups(s.DeletedGroups, s.GroupGenerations); err != nil {
			return err
		}
		if err := f.deleteUnknownGroups(s); err != nil {
			return err
		}
		if err := f.commitTable(s.Offsets); err != nil {
			return err
		}
		f.applied = idx
		f.saveApplied()
	}
	if n > 0 {
		f.p.restored.Add(1)
	}
	return nil
}
