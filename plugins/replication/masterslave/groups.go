package masterslave

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferrymq/ferry/core/sdk"
)

// Consumer group deletions (see the package doc, "Consumer offsets").
//
// The master's broker deletes a group's offsets in its own store, then calls
// ReplicateGroupDelete. The master forgets the group's offsets it would ship
// and records the group as deleted with a version of the offsets' sequence
// (offVer), so that a session ships the deletion with its next frame, ahead
// of any offset the group commits afterwards (a slave deletes before it
// stores the frame's offsets). A new session opens with every group deleted
// since the plugin started, then every offset: a slave that was away when
// the group was deleted deletes it when it links again. A slave keeps the
// deletions its master sent, so that once promoted it ships them to its own
// slaves.
//
// The deletions are kept in memory: a master restarted before a slave that
// was away linked again does not send that slave the deletion (the slave
// keeps the group's old offsets until the group commits there again).

var _ sdk.GroupDeleteReplication = (*Plugin)(nil)

// ReplicateGroupDelete records a group's deletion on the master, to be
// shipped to every slave with its next frame; it does not wait for them. On
// a node that is not master it refuses with sdk.ErrNotLeader.
func (p *Plugin) ReplicateGroupDelete(_ context.Context, group string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role != sdk.RoleMaster {
		return fmt.Errorf("%w: this node is not master", sdk.ErrNotLeader)
	}
	p.forgetGroupLocked(group)
	p.offVer++
	p.dels[group] = p.offVer
	signal(&p.wake)
	return nil
}

// forgetGroupLocked drops a group's offsets, as shipped or received and as
// committed here. Called with p.mu held.
func (p *Plugin) forgetGroupLocked(group string) {
	for k := range p.offs {
		if k.group == group {
			delete(p.offs, k)
		}
	}
	for k := range p.offDone {
		if k.group == group {
			delete(p.offDone, k)
		}
	}
}

// masterDeletes records, on a slave, the groups its master deleted: their
// offsets are forgotten at once (the offsets of the same frame come after)
// and deleted here by commitOffsets' goroutine before it commits any.
func (p *Plugin) masterDeletes(groups []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range groups {
		p.forgetGroupLocked(g)
		p.offVer++
		p.dels[g] = p.offVer
		if !slices.Contains(p.delTodo, g) {
			p.delTodo = append(p.delTodo, g)
		}
	}
}

// deleteGroups makes, on a slave, the deletions its master sent, through the
// core. It reports false when one failed and should be tried again (the
// group's newer offsets are then not committed either).
func (p *Plugin) deleteGroups(ctx context.Context) bool {
	p.mu.Lock()
	todo := slices.Clone(p.delTodo)
	p.mu.Unlock()
	for _, g := range todo {
		err := p.core.DeleteGroupOffsets(ctx, g)
		if err != nil && !errors.Is(err, sdk.ErrInvalidArgument) && !errors.Is(err, errors.ErrUnsupported) {
			if ctx.Err() == nil {
				p.log("deleting group %s's offsets as the master did: %v", g, err)
			}
			return false
		}
		if err != nil {
			p.log("deleting group %s's offsets as the master did: %v (not tried again)", g, err)
		}
		p.mu.Lock()
		p.delTodo = slices.DeleteFunc(p.delTodo, func(s string) bool { return s == g })
		// A commit of the group's old offsets that raced the deletion
		// is undone by it: those are not committed here any more.
		for k := range p.offDone {
			if k.group == g {
				if _, ok := p.offs[k]; !ok {
					delete(p.offDone, k)
				}
			}
		}
		p.mu.Unlock()
	}
	return true
}
