package broker

import (
	"context"
	"fmt"
	"sync"

	"github.com/ferrymq/ferry/core/sdk"
)

// groupGates orders a consumer group's deletion (DeleteGroup) against the
// group's commits (CommitOffsets): without it, a commit the node took before
// the deletion could be stored, or handed to the replication plugin, after
// the deletion removed the group's offsets, and bring them back (on this
// node and, through replication, on its replicas).
//
// A client's commit holds its group's gate from its admission until it is
// stored here and handed to the replication plugin (answered by the raft log
// for an sdk.OffsetCommitter, queued for the background report otherwise,
// see replicate.go). A deletion closes the gate, waits for the commits
// admitted before it, then deletes; a commit that arrives while the gate is
// closed is refused (ErrUnavailable, naming the deletion), neither stored nor
// replicated. A commit that arrives after the deletion is the group's first
// again: a forced deletion leaves live members that may commit their
// positions.
//
// Commits from replication (replicaCore) do not pass the gate: a slave and a
// raft node store them, and deletions, in the order their master's stream
// or the log gives. A deletion from replication closes the gate too
// (beginReplicatedDelete), against this node's own clients' commits: on a
// raft follower a commit checked against the group's generation just
// before the deletion was applied here would otherwise be stored after it,
// and the follower alone would hold the deleted group's offsets again.
type groupGates struct {
	mu sync.Mutex
	m  map[string]*groupGate // only groups with commits or a deletion under way
}

type groupGate struct {
	commits  int           // admitted commits under way
	deleting bool          // a deletion closed the gate
	idle     chan struct{} // closed when commits drops to 0 while deleting
}

// beginCommit admits a client's commit of group, or refuses it while the
// group is being deleted. The returned done must be called once the commit
// is stored and handed to replication, or failed.
func (g *groupGates) beginCommit(group string) (done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gt := g.m[group]
	if gt != nil && gt.deleting {
		return nil, fmt.Errorf("%w: group %q is being deleted; a commit made meanwhile is refused and not stored (a commit after the deletion starts the group again)", sdk.ErrUnavailable, group)
	}
	if gt == nil {
		if g.m == nil {
			g.m = map[string]*groupGate{}
		}
		gt = &groupGate{}
		g.m[group] = gt
	}
	gt.commits++
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		gt.commits--
		switch {
		case gt.commits == 0 && gt.deleting:
			if gt.idle != nil {
				close(gt.idle)
				gt.idle = nil
			}
		case gt.commits == 0:
			delete(g.m, group)
		}
	}, nil
}

// beginDelete closes group's gate and waits for the commits admitted before
// it, or for ctx. The returned done opens the gate again; it must be called
// once the deletion is made (here and handed to replication) or failed.
func (g *groupGates) beginDelete(ctx context.Context, group string) (done func(), err error) {
	g.mu.Lock()
	gt := g.m[group]
	if gt != nil && gt.deleting {
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: group %q: another deletion of it is under way", sdk.ErrUnavailable, group)
	}
	if gt == nil {
		if g.m == nil {
			g.m = map[string]*groupGate{}
		}
		gt = &groupGate{}
		g.m[group] = gt
	}
	gt.deleting = true
	open := func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		gt.deleting, gt.idle = false, nil
		if gt.commits == 0 {
			delete(g.m, group)
		}
	}
	for gt.commits > 0 {
		if gt.idle == nil {
			gt.idle = make(chan struct{})
		}
		idle, n := gt.idle, gt.commits
		g.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			open()
			return nil, fmt.Errorf("%w: group %q: waiting for its %d commit(s) under way before deleting it: %v (nothing deleted)", sdk.ErrUnavailable, group, n, ctx.Err())
		}
		g.mu.Lock()
	}
	g.mu.Unlock()
	return open, nil
}

// beginReplicatedDelete is beginDelete for a deletion received through
// replication (ReplicaCore.DeleteGroupOffsets). On the node that made the
// deletion (a raft leader applying its own entry) the gate is closed
// already, by DeleteGroup, which waits for this apply: it then returns at
// once, with a done that leaves the gate to DeleteGroup.
func (g *groupGates) beginReplicatedDelete(ctx context.Context, group string) (done func(), err error) {
	g.mu.Lock()
	gt := g.m[group]
	held := gt != nil && gt.deleting
	g.mu.Unlock()
	if held {
		return func() {}, nil
	}
	return g.beginDelete(ctx, group)
}

// waiting reports whether a deletion of group waits for commits (tests).
func (g *groupGates) waiting(group string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gt := g.m[group]
	return gt != nil && gt.deleting && gt.commits > 0
}
