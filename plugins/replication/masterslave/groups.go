package masterslave

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/atomicfile"
)

// Consumer group deletions (see the package doc, "Consumer offsets").
//
// The master's broker deletes a group's offsets in its own store, then calls
// ReplicateGroupDelete. The master forgets the group's offsets it would ship
// and records the deletion with a unique id (its time, Unix ns, or one more
// than the highest id known) and a version of the offsets' sequence
// (offVer), so that a session ships the deletion with its next frame, ahead
// of any offset the group commits afterwards (a slave deletes before it
// stores the frame's offsets). A new session opens with every deletion
// known, then every offset: a slave that was away when the group was
// deleted deletes it when it links again.
//
// The deletions are durable (GroupDeletionsFile in the plugin's directory,
// written with atomicfile before ReplicateGroupDelete answers), so a master
// restarted before an absent slave linked again still sends it the
// deletion. A slave keeps, in the same file, the deletions its master sent
// (to ship them once promoted) and the ids it made: it makes each id once,
// so a deletion sent again at every link opening does not delete the
// offsets the group committed since (which a restarted master would not
// send again until the group commits again). Both are bounded by
// maxGroupDeletions; past it the oldest deletion is forgotten (a slave away
// for that many deletions keeps that group's old offsets).

var _ sdk.GroupDeleteReplication = (*Plugin)(nil)

// GroupDeletionsFile, in the plugin's directory (replication-async or
// replication-sync under the data dir), keeps the group deletions.
const GroupDeletionsFile = "group-deletions.json"

// groupDeletionsVersion is what a slave of this build does with its
// master's group deletions (FollowRequest.group_deletions_version): it
// makes each id once and hands the generation to its node.
const groupDeletionsVersion = 2

// oldSlaveWarning is the warning about a slave below groupDeletionsVersion
// (logged, and the replica's detail in the master's status).
func oldSlaveWarning(node string, version uint32) string {
	return fmt.Sprintf("slave %s predates group deletion generations (group_deletions_version %d, want %d): it may delete a deleted group's offsets again at every link opening (a group consumed again after its deletion loses its new offsets there) and, promoted, takes commits sent before a deletion; upgrade it", node, version, groupDeletionsVersion)
}

// maxGroupDeletions bounds the deletions kept (and the ids made).
const maxGroupDeletions = 4096

// delEntry is a group's latest deletion: its id, the offVer it got, and the
// group's generation after it (0 from a master or file that predates
// generations).
type delEntry struct {
	id  uint64
	ver uint64
	gen uint64
}

type deletionsFile struct {
	Deleted map[string]uint64 `json:"deleted"`           // group → id of its latest deletion
	Applied map[string]uint64 `json:"applied,omitempty"` // group → id of the deletion made here
	// group → its generation after its latest deletion
	Generations map[string]uint64 `json:"generations,omitempty"`
}

// loadDeletions reads GroupDeletionsFile (at Configure, before any session),
// giving each deletion a version so that every new session ships it.
func (p *Plugin) loadDeletions() error {
	b, err := os.ReadFile(filepath.Join(p.dir, GroupDeletionsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var f deletionsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s: %w", GroupDeletionsFile, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range slices.Sorted(maps.Keys(f.Deleted)) {
		p.offVer++
		p.dels[g] = delEntry{id: f.Deleted[g], ver: p.offVer, gen: f.Generations[g]}
	}
	for g, id := range f.Applied {
		p.applied[g] = id
	}
	return nil
}

// saveDeletionsLocked writes the deletions durably. Called with p.mu held.
func (p *Plugin) saveDeletionsLocked() error {
	f := deletionsFile{Deleted: make(map[string]uint64, len(p.dels)), Applied: p.applied, Generations: map[string]uint64{}}
	for g, e := range p.dels {
		f.Deleted[g] = e.id
		if e.gen != 0 {
			f.Generations[g] = e.gen
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p.dir, GroupDeletionsFile, append(b, '\n'), 0o644)
}

// newDeletionIDLocked is a deletion id above every one known here.
func (p *Plugin) newDeletionIDLocked() uint64 {
	id := uint64(time.Now().UnixNano())
	for _, e := range p.dels {
		id = max(id, e.id+1)
	}
	return id
}

// recordDeletionLocked records a group's deletion (and its generation after
// it) and drops the oldest past maxGroupDeletions. Called with p.mu held.
func (p *Plugin) recordDeletionLocked(group string, id, gen uint64) {
	p.offVer++
	p.dels[group] = delEntry{id: id, ver: p.offVer, gen: gen}
	for len(p.dels) > maxGroupDeletions {
		oldest, first := "", uint64(0)
		for g, e := range p.dels {
			if oldest == "" || e.id < first {
				oldest, first = g, e.id
			}
		}
		delete(p.dels, oldest)
		delete(p.applied, oldest)
	}
	for g := range p.applied {
		if _, ok := p.dels[g]; !ok {
			delete(p.applied, g)
		}
	}
}

// ReplicateGroupDelete records a group's deletion on the master, durably,
// to be shipped to every slave with its next frame; it does not wait for
// them; the deletion carries generation, which each slave gives the group
// (ReplicaCore.DeleteGroupOffsets). On a node that is not master it refuses
// with sdk.ErrNotLeader.
func (p *Plugin) ReplicateGroupDelete(_ context.Context, group string, generation uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role != sdk.RoleMaster {
		return fmt.Errorf("%w: this node is not master", sdk.ErrNotLeader)
	}
	prev, had := p.dels[group]
	prevApplied, hadApplied := p.applied[group]
	id := p.newDeletionIDLocked()
	p.recordDeletionLocked(group, id, generation)
	p.applied[group] = id // made here by the broker before it called
	if err := p.saveDeletionsLocked(); err != nil {
		if had {
			p.dels[group] = prev
		} else {
			delete(p.dels, group)
		}
		if hadApplied {
			p.applied[group] = prevApplied
		} else {
			delete(p.applied, group)
		}
		return fmt.Errorf("%w: keeping the deletion in %s: %v", sdk.ErrUnavailable, filepath.Join(p.dir, GroupDeletionsFile), err)
	}
	p.forgetGroupLocked(group)
	signal(&p.wake)
	return nil
}

// deletionsSinceLocked are the deletions with a version above ver, by
// group. Called with p.mu held.
func (p *Plugin) deletionsSinceLocked(ver uint64) []*ferryv1.GroupDeletion {
	var out []*ferryv1.GroupDeletion
	for g, e := range p.dels {
		if e.ver > ver {
			out = append(out, &ferryv1.GroupDeletion{Group: g, Id: e.id, Generation: e.gen})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// deletedNames are the groups of dels (FollowResponse.deleted_groups, for
// slaves that do not read group_deletions).
func deletedNames(dels []*ferryv1.GroupDeletion) []string {
	if len(dels) == 0 {
		return nil
	}
	out := make([]string, len(dels))
	for i, d := range dels {
		out[i] = d.Group
	}
	return out
}

// followDeletions are a frame's deletions: group_deletions, or, from a
// master that does not send them, deleted_groups without ids.
func followDeletions(resp *ferryv1.FollowResponse) []*ferryv1.GroupDeletion {
	if len(resp.GroupDeletions) > 0 {
		return resp.GroupDeletions
	}
	out := make([]*ferryv1.GroupDeletion, len(resp.DeletedGroups))
	for i, g := range resp.DeletedGroups {
		out[i] = &ferryv1.GroupDeletion{Group: g}
	}
	return out
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

// masterDeletes records, on a slave, the deletions its master sent: those
// not made here yet forget the group's offsets at once (the offsets of the
// same frame come after) and are made by commitOffsets' goroutine before it
// commits any. A deletion made here already (its id) is only recorded: the
// group's offsets here are those it committed since.
func (p *Plugin) masterDeletes(dels []*ferryv1.GroupDeletion) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for _, d := range dels {
		g, id := d.Group, d.Id
		if id != 0 && p.applied[g] == id {
			if e, ok := p.dels[g]; !ok || e.id != id {
				p.recordDeletionLocked(g, id, d.Generation)
				changed = true
			}
			continue
		}
		if id == 0 { // an older master: no id, made every time it is sent
			if e, ok := p.dels[g]; ok {
				id = e.id
			} else {
				id = p.newDeletionIDLocked()
			}
		}
		p.forgetGroupLocked(g)
		if e, ok := p.dels[g]; !ok || e.id != id {
			changed = true
		}
		p.recordDeletionLocked(g, id, d.Generation)
		if !slices.Contains(p.delTodo, g) {
			p.delTodo = append(p.delTodo, g)
		}
	}
	if changed {
		if err := p.saveDeletionsLocked(); err != nil {
			p.log("keeping the group deletions the master sent: %v (they are made, and shipped once promoted, while this process runs)", err)
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
		p.mu.Lock()
		gen := p.dels[g].gen
		p.mu.Unlock()
		err := p.core.DeleteGroupOffsets(ctx, g, gen)
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
		if e, ok := p.dels[g]; ok {
			p.applied[g] = e.id
			if err := p.saveDeletionsLocked(); err != nil {
				p.log("keeping group %s's deletion as made: %v (made again at the next link)", g, err)
			}
		}
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
