package raft

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Consumer group deletions through the raft log (see the package doc,
// "Consumer offsets").
//
// The leader's broker calls ReplicateGroupDelete for `ferry group delete`;
// it is committed as an entry of kind kindGroupDelete (a
// ferryv1.DeleteGroupOffsetsRequest) and applied, in log order, on every
// node: the group leaves the fsm's offset table and the node's store
// (ReplicaCore.DeleteGroupOffsets). The table keeps the group's name as
// deleted (a tombstone) and snapshots carry those names, so that a node
// restoring a snapshot after the deletion's entry was compacted away
// deletes the group's old offsets from its store before it stores the
// snapshot's (a group consumed again after its deletion has those).

var _ sdk.GroupDeleteReplication = (*Plugin)(nil)

// encodeGroupDelete is the entry that deletes a group's offsets, proposing
// its generation after the deletion.
func encodeGroupDelete(group string, generation uint64) ([]byte, error) {
	b, err := proto.Marshal(&ferryv1.DeleteGroupOffsetsRequest{Group: group, Generation: generation})
	if err != nil {
		return nil, err
	}
	return append([]byte{entryTagged, kindGroupDelete}, b...), nil
}

// isGroupDelete reports whether a log entry deletes a group.
func isGroupDelete(l *hraft.Log) bool {
	return l.Type == hraft.LogCommand && len(l.Data) >= 2 && l.Data[0] == entryTagged && l.Data[1] == kindGroupDelete
}

// ReplicateGroupDelete commits a group's deletion through the log, on the
// leader, and returns once this node's FSM applied it. A leader deposed
// meanwhile answers an error: the deletion may or may not be committed (it
// is applied by every node or by none). The entry proposes generation; each
// node applies the deletion with the same generation (offsets.drop).
func (p *Plugin) ReplicateGroupDelete(ctx context.Context, group string, generation uint64) error {
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w: raft is starting", sdk.ErrNotLeader)
	}
	if r.State() != hraft.Leader {
		_, id := r.LeaderWithID()
		return fmt.Errorf("%w: this node is not the raft leader (leader: %q)", sdk.ErrNotLeader, id)
	}
	data, err := encodeGroupDelete(group, generation)
	if err != nil {
		return err
	}
	return p.applyAndWait(ctx, r, data, "group deletion")
}

// applyGroupDeleteEntry applies one group deletion entry (the entries
// before it are stored). The table forgets the group even for an entry
// applied already (raft replays the log after a restart to rebuild it); the
// store is changed only for an entry not applied yet.
func (f *fsm) applyGroupDeleteEntry(l *hraft.Log) any {
	_, payload, err := decodeEntry(l.Data)
	var req ferryv1.DeleteGroupOffsetsRequest
	if err == nil {
		if err = proto.Unmarshal(payload, &req); err != nil {
			err = fmt.Errorf("raft group deletion entry: %w", err)
		}
	}
	var gen uint64
	if err == nil {
		gen = f.offs.drop(req.Group, req.Generation, l.Index)
	}
	if l.Index <= f.applied {
		return nil
	}
	if err == nil {
		err = f.deleteGroup(req.Group, gen)
		if f.ctx.Err() != nil {
			return err // not applied: again after the restart
		}
	}
	if err != nil {
		f.p.log.Error("a consumer group deletion from the raft log was not applied", "index", l.Index, "error", err)
	}
	f.applied = l.Index
	f.saveApplied()
	if err != nil {
		return err
	}
	return nil
}

// deleteGroup deletes a group's offsets through the core, retrying while
// the core cannot take it; it returns the core's lasting refusal, or an
// error once the node stops.
func (f *fsm) deleteGroup(group string, generation uint64) error {
	for {
		ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
		err := f.core.DeleteGroupOffsets(ctx, group, generation)
		cancel()
		if err == nil || errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, errors.ErrUnsupported) || f.ctx.Err() != nil {
			return err
		}
		f.warnOffsets("deleting a consumer group's offsets from the raft log failed; retrying", "group", group, "error", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// deleteGroups deletes, through the core, the offsets of every group a
// snapshot names as deleted (before its table is stored), with their
// generations.
func (f *fsm) deleteGroups(groups []string, gens map[string]uint64) error {
	sort.Strings(groups)
	for _, g := range groups {
		if err := f.deleteGroup(g, gens[g]); err != nil {
			return err
		}
	}
	return nil
}

// deleteUnknownGroups deletes, through the core, the offsets of every group
// the node's store holds, except those snapshot s names as deleted (deleted
// already, deleteGroups): the snapshot's table, stored next (commitTable),
// is then all the store holds. That is what makes dropping tombstones safe
// (offsets.prune): a group the log deleted after this node's store took its
// offsets, and whose tombstone was dropped before s was taken, is either
// absent from s (deleted here now) or in it again, consumed after its
// deletion, with only its new generation's offsets (its old ones on queues
// the new generation has not committed must not stay: they are deleted
// here too, before the table's are stored). Each is given its generation
// from s, and so is every group s has a generation of: the core keeps the
// highest it was given. A core that cannot list its
// store's groups (an older one, a store without sdk.GroupStore) is
// skipped: such a node relies on the tombstones alone, and a node whose
// core cannot list them drops none.
func (f *fsm) deleteUnknownGroups(s *snapshot) error {
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	info, err := f.core.NodeInfo(ctx)
	cancel()
	if err != nil {
		return err
	}
	if !info.ListsGroups {
		return nil
	}
	named := map[string]bool{}
	for _, g := range s.DeletedGroups {
		named[g] = true
	}
	var gone []string
	seen := map[string]bool{}
	add := func(g string) {
		if _, _, internal := sdk.InternalTopic(g); !named[g] && !internal && !seen[g] {
			seen[g] = true
			gone = append(gone, g) // a DLQ tool's cursor is not deleted by name
		}
	}
	for _, g := range info.StoredGroups {
		add(g)
	}
	// And every group with a generation: the core learns it (it has
	// nothing to delete for a group its store does not hold).
	for g := range s.GroupGenerations {
		add(g)
	}
	if len(gone) > 0 {
		f.p.log.Info("replacing the consumer groups' offsets with a raft snapshot's", "groups", len(gone), "snapshot_groups", len(s.Offsets))
	}
	sort.Strings(gone)
	for _, g := range gone {
		err := f.deleteGroup(g, s.GroupGenerations[g])
		switch {
		case err == nil:
		case errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, errors.ErrUnsupported):
			f.p.log.Warn("restoring a raft snapshot: a consumer group's offsets were not replaced", "group", g, "error", err)
		default:
			return err
		}
	}
	return nil
}

// applyAndWait commits data through the log on the leader r and returns once
// this node's FSM applied it, with the FSM's answer if that is an error, or
// when ctx ends (what the entry is names it in the errors). A leader deposed
// meanwhile answers ErrUnavailable: the entry is applied by every node or by
// none, which of the two is unknown.
func (p *Plugin) applyAndWait(ctx context.Context, r *hraft.Raft, data []byte, what string) error {
	timeout := time.Duration(p.cfg.ApplyTimeout)
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	fut := r.Apply(data, timeout)
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %s not confirmed in time, outcome unknown", ctx.Err(), what)
	}
	switch {
	case err == nil:
	case errors.Is(err, hraft.ErrNotLeader):
		return fmt.Errorf("%w: %v", sdk.ErrNotLeader, err)
	default:
		return fmt.Errorf("%w: raft: %v (outcome unknown: the %s is applied on every node or on none)", sdk.ErrUnavailable, err, what)
	}
	if err, ok := fut.Response().(error); ok {
		return err
	}
	return nil
}
