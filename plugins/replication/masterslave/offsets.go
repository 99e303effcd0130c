package masterslave

import (
	"context"
	"errors"
	"sort"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Consumer offsets (see the package doc, "Consumer offsets").
//
// The master keeps the latest offset of every group and queue its broker
// reported, each stamped with a version (offVer, one more per report). A
// session remembers the highest version it shipped: a new session gets every
// entry, a running one the entries newer than its mark, with its next frame.
// A slave keeps what its master sent in the same map and commits each entry,
// clamped to the end of its own log, through the core; it remembers what it
// committed (offDone) so that an entry is committed again only when it
// changes or the log it waited for arrives.

// gqkey is one group's queue.
type gqkey struct {
	group string
	qkey
}

// offEntry is a group's committed offset on one queue, with the version it
// got when recorded.
type offEntry struct {
	off int64
	ver uint64
}

var _ sdk.OffsetReplication = (*Plugin)(nil)

// ReplicateOffsets records a group's committed offsets on the master, to be
// shipped to every slave with its next frame. The broker calls it after each
// commit it stored. On a slave (a broker that lost the race with a step-down)
// it does nothing: a slave's offsets come from its master.
func (p *Plugin) ReplicateOffsets(_ context.Context, group string, offsets []*sdk.GroupOffset) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role != sdk.RoleMaster {
		return nil
	}
	for _, o := range offsets {
		p.offVer++
		p.offs[gqkey{group, qkey{o.Topic, o.Queue}}] = offEntry{o.Offset, p.offVer}
	}
	signal(&p.wake)
	return nil
}

// takeOffsetsLocked returns the entries newer than the session's mark, by
// group, and the groups deleted since it (groups.go), and moves the mark.
// Called with p.mu held.
func (p *Plugin) takeOffsetsLocked(s *session) ([]*ferryv1.CommitOffsetsRequest, []*ferryv1.GroupDeletion) {
	if p.offVer <= s.offSent {
		return nil, nil
	}
	deleted := p.deletionsSinceLocked(s.offSent)
	by := map[string]*ferryv1.CommitOffsetsRequest{}
	for k, e := range p.offs {
		if e.ver <= s.offSent {
			continue
		}
		r := by[k.group]
		if r == nil {
			r = &ferryv1.CommitOffsetsRequest{Group: k.group}
			by[k.group] = r
		}
		r.Offsets = append(r.Offsets, &sdk.GroupOffset{Topic: k.topic, Queue: k.queue, Offset: e.off})
	}
	s.offSent = p.offVer
	out := make([]*ferryv1.CommitOffsetsRequest, 0, len(by))
	for _, r := range by {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out, deleted
}

// takeOffsets is takeOffsetsLocked for a caller without p.mu.
func (p *Plugin) takeOffsets(s *session) ([]*ferryv1.CommitOffsetsRequest, []*ferryv1.GroupDeletion) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.takeOffsetsLocked(s)
}

// masterOffsets records, on a slave, the offsets its master sent.
func (p *Plugin) masterOffsets(groups []*ferryv1.CommitOffsetsRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range groups {
		for _, o := range g.Offsets {
			p.offVer++
			p.offs[gqkey{g.Group, qkey{o.Topic, o.Queue}}] = offEntry{o.Offset, p.offVer}
		}
	}
}

// promotedOffsetsLocked keeps, when a slave becomes master, only the group
// offsets it stored, at the offsets it stored them (clamped to its log):
// its old master's, which may lie beyond this log, would make its own slaves
// skip the new messages stored at those offsets. Called with p.mu held.
func (p *Plugin) promotedOffsetsLocked() {
	for k := range p.offs {
		done, ok := p.offDone[k]
		if !ok {
			delete(p.offs, k)
			continue
		}
		p.offVer++
		p.offs[k] = offEntry{done, p.offVer}
	}
	clear(p.offDone)
	for g, e := range p.dels {
		p.offVer++
		p.dels[g] = delEntry{id: e.id, ver: p.offVer, gen: e.gen}
	}
}

// commitOffsets runs on a slave for one Follow stream: each time it is
// kicked (offsets arrived, or the log grew) it commits, through the core,
// every group offset from the master that is not committed here yet, clamped
// to the end of this node's log. Returns when ctx ends.
func (p *Plugin) commitOffsets(ctx context.Context, kick <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		if !p.deleteGroups(ctx) {
			if ctx.Err() != nil {
				return
			}
			continue // a deletion first: tried again on the next kick
		}
		p.mu.Lock()
		todo := map[string][]*sdk.GroupOffset{}
		for k, e := range p.offs {
			// Never beyond this node's log: after a promotion, new
			// messages would take those offsets and the group would
			// skip them.
			off := min(e.off, p.localEnds[k.qkey])
			if done, ok := p.offDone[k]; ok && done == off {
				continue
			}
			todo[k.group] = append(todo[k.group], &sdk.GroupOffset{Topic: k.topic, Queue: k.queue, Offset: off})
		}
		p.mu.Unlock()
		for group, offs := range todo {
			err := p.core.CommitOffsets(ctx, group, offs)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				p.log("storing group %s's offsets from the master: %v", group, err)
				if !errors.Is(err, sdk.ErrNotFound) && !errors.Is(err, sdk.ErrInvalidArgument) {
					continue // tried again on the next kick
				}
				// Never storable here (a topic this node lacks): not
				// tried again until the master sends another offset.
			}
			p.mu.Lock()
			for _, o := range offs {
				p.offDone[gqkey{group, qkey{o.Topic, o.Queue}}] = o.Offset
			}
			p.mu.Unlock()
		}
	}
}

// kickChan wakes a waiter without blocking (a pending wake is enough).
func kickChan(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
