package raft

import (
	"context"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Consumer commits acknowledged only once committed through the log
// (sdk.OffsetCommitter; the package doc, "Consumer offsets").
//
// The leader's broker calls CommitOffsets for each consumer commit and
// answers the consumer once it returned. Calls are group-committed: one
// entry is in flight at a time, and every call made meanwhile waits for the
// next one, which carries all of their groups' offsets (the latest per
// group and queue). So many consumers committing at once cost about one
// raft round together, not one each.

var _ sdk.OffsetCommitter = (*Plugin)(nil)

// offsetCommitTimeout bounds CommitOffsets when its ctx has no deadline.
const offsetCommitTimeout = 10 * time.Second

// offsetCommitter is the plugin's group commit of consumer offsets.
type offsetCommitter struct {
	pending map[string]map[groupQueue]int64 // groups' offsets for the next entry
	order   []string                        // pending's groups in arrival order
	waiters []chan error                    // the calls the next entry answers
	running bool                            // a goroutine writes entries
}

type groupQueue struct {
	topic string
	queue int32
}

// CommitOffsets puts a group's committed offsets into the raft log and
// returns once the entry is committed (on a quorum, so a new leader has
// it). The broker calls it for every consumer commit it stored, on the
// leader and on a follower alike, so the node the consumer committed on
// holds the offsets already; the others store them when they apply the
// entry (the leader's apply pipeline, too, stores them just after).
//
// On the leader concurrent calls share an entry (commitOnLeader). On a
// follower the call is forwarded to the leader's admin listener
// (forward.go) and answered with the leader's answer, so a commit made
// through a follower is as durable as one made on the leader. Without a
// leader, or when leadership is lost with the entry in flight, it returns
// ErrNotLeader or ErrUnavailable (the outcome is unknown: the consumer
// commits again); when ctx ends first (at most offsetCommitTimeout
// without a deadline), ErrUnavailable wrapping ctx's error. A follower
// forwards the commit's generation with it, for the leader's core to check
// (forward.go).
func (p *Plugin) CommitOffsets(ctx context.Context, group string, generation uint64, offsets []*sdk.GroupOffset) error {
	if len(offsets) == 0 {
		return nil
	}
	if group == "" {
		return fmt.Errorf("%w: consumer offsets without a group", sdk.ErrInvalidArgument)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, offsetCommitTimeout)
		defer cancel()
	}
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r != nil && r.State() != hraft.Leader {
		return p.forwardOffsets(ctx, group, generation, offsets)
	}
	return p.commitOnLeader(ctx, group, offsets)
}

// commitOnLeader is CommitOffsets on the leader: the group commit. On a
// node that does not lead it returns ErrNotLeader at once, naming the
// leader it knows (it never forwards: a forwarded call lands here). ctx
// has a deadline.
func (p *Plugin) commitOnLeader(ctx context.Context, group string, offsets []*sdk.GroupOffset) error {
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if err := notLeader(r); err != nil {
		return err
	}
	done := make(chan error, 1)
	c := &p.commits
	p.commitMu.Lock()
	if c.pending == nil {
		c.pending = map[string]map[groupQueue]int64{}
	}
	g := c.pending[group]
	if g == nil {
		g = map[groupQueue]int64{}
		c.pending[group] = g
		c.order = append(c.order, group)
	}
	for _, o := range offsets {
		g[groupQueue{o.Topic, o.Queue}] = o.Offset
	}
	c.waiters = append(c.waiters, done)
	if !c.running {
		c.running = true
		go p.writeOffsetEntries(r)
	}
	p.commitMu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: consumer offsets of group %q not committed through raft in time (outcome unknown): %w", sdk.ErrUnavailable, group, ctx.Err())
	}
}

// notLeader is ErrNotLeader, naming the leader, unless r leads.
func notLeader(r *hraft.Raft) error {
	if r == nil {
		return fmt.Errorf("%w: raft is starting", sdk.ErrNotLeader)
	}
	if r.State() == hraft.Leader {
		return nil
	}
	if _, id := r.LeaderWithID(); id != "" {
		return fmt.Errorf("%w: this node is not the raft leader (the leader is %s); commit consumer offsets there", sdk.ErrNotLeader, id)
	}
	return fmt.Errorf("%w: this node is not the raft leader and knows no leader now (an election is under way)", sdk.ErrNotLeader)
}

// writeOffsetEntries writes one entry after another, each with every offset
// pending when the previous one was answered, until none are pending.
func (p *Plugin) writeOffsetEntries(r *hraft.Raft) {
	c := &p.commits
	for {
		p.commitMu.Lock()
		if len(c.waiters) == 0 {
			c.running = false
			p.commitMu.Unlock()
			return
		}
		groups := make([]*ferryv1.CommitOffsetsRequest, 0, len(c.order))
		for _, g := range c.order {
			req := &ferryv1.CommitOffsetsRequest{Group: g}
			for k, off := range c.pending[g] {
				req.Offsets = append(req.Offsets, &sdk.GroupOffset{Topic: k.topic, Queue: k.queue, Offset: off})
			}
			groups = append(groups, req)
		}
		waiters := c.waiters
		c.pending, c.order, c.waiters = nil, nil, nil
		p.commitMu.Unlock()

		err := p.commitOffsetEntry(r, groups)
		for _, w := range waiters {
			w <- err
		}
	}
}

// commitOffsetEntry writes one offsets entry and waits for its commit.
func (p *Plugin) commitOffsetEntry(r *hraft.Raft, groups []*ferryv1.CommitOffsetsRequest) error {
	if err := notLeader(r); err != nil {
		return err
	}
	data, err := encodeOffsetCommits(groups)
	if err != nil {
		return err
	}
	// Apply's timeout bounds the wait for room in raft's queue; Error
	// waits for the commit, or for leadership to be lost (the leader
	// steps down once a quorum has been silent for its lease).
	fut := r.Apply(data, offsetEnqueueTimeout)
	if offsetsNoWait {
		// The fault hook of test builds (faults_on.go): answered before
		// the commit, as the broker's background reports were.
		go func() { _ = fut.Error() }()
		return nil
	}
	err = fut.Error()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hraft.ErrNotLeader):
		return notLeaderErr(r, err)
	default:
		// ErrLeadershipLost, ErrRaftShutdown, ErrEnqueueTimeout: the
		// entry may or may not be committed.
		return fmt.Errorf("%w: consumer offsets of %d group(s) not confirmed by raft (outcome unknown; commit again): %v", sdk.ErrUnavailable, len(groups), err)
	}
}

func notLeaderErr(r *hraft.Raft, err error) error {
	if e := notLeader(r); e != nil {
		return e
	}
	return fmt.Errorf("%w: %v", sdk.ErrNotLeader, err)
}
