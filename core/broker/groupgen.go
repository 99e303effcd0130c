package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/atomicfile"
)

// Consumer group generations. A group never deleted has generation 1; each
// deletion gives it one more. A member learns the generation from its
// heartbeats (HeartbeatResponse.generation) and carries it on its commits
// (CommitOffsetsRequest.generation); a commit of an older generation than
// the group's is refused (sdk.ErrStaleGeneration) and not stored. That
// closes the race the gate (groupgate.go) leaves open: a commit sent before
// a deletion but arriving after it would otherwise be the group's first
// commit again and bring its old offsets back. A commit without a
// generation (older clients, `ferry consume`'s DLQ cursor, the CLI, an http
// commit without one) is taken only while the group has no live members
// (checkGeneration), and refused with sdk.ErrStaleGeneration otherwise.
//
// The node keeps the generations of the groups deleted on it in
// GenerationsFile in its data dir, written with atomicfile before the
// deletion is made, so a restart does not lower them. Replication carries a
// deletion's generation to every node (sdk.GroupDeleteReplication,
// ReplicaCore.DeleteGroupOffsets), which keeps the highest it was given: a
// slave or follower that takes over refuses the same stale commits.
//
// The file is bounded: it keeps the generations of the maxGenerations groups
// deleted last (as raft's table keeps those of the latest 4096 groups).
// Past that the group deleted longest ago is forgotten and is at generation
// 1 again on this node: only a commit sent before a deletion that old, and
// arriving after maxGenerations other groups were deleted, would be taken.

// GenerationsFile, in the node's data dir, holds the generation of every
// group deleted on this node (or by replication).
const GenerationsFile = "group-generations.json"

// firstGeneration is the generation of a group never deleted.
const firstGeneration = 1

// maxGenerations bounds the groups whose generation the node keeps: those
// deleted last.
const maxGenerations = 4096

type groupGens struct {
	mu     sync.Mutex
	dir    string // "" without a data dir: kept in memory only
	loaded bool
	m      map[string]uint64
	// order lists m's groups, the one deleted longest ago first.
	order []string
	// max is maxGenerations, lowered by tests.
	max int
}

type generationsFile struct {
	Groups map[string]uint64 `json:"groups"`
	// Order lists the groups, the one deleted longest ago first (absent in
	// files written before the bound: their groups are taken in name
	// order).
	Order []string `json:"order,omitempty"`
}

// loadLocked reads GenerationsFile once. Called with g.mu held.
func (g *groupGens) loadLocked() error {
	if g.loaded {
		return nil
	}
	g.m = map[string]uint64{}
	if g.dir != "" {
		b, err := os.ReadFile(filepath.Join(g.dir, GenerationsFile))
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("%w: consumer group generations: %v", sdk.ErrUnavailable, err)
		default:
			var f generationsFile
			if err := json.Unmarshal(b, &f); err != nil {
				return fmt.Errorf("%w: consumer group generations: %s: %v", sdk.ErrUnavailable, filepath.Join(g.dir, GenerationsFile), err)
			}
			for _, k := range f.Order {
				if v, ok := f.Groups[k]; ok && !slices.Contains(g.order, k) {
					g.m[k] = v
					g.order = append(g.order, k)
				}
			}
			var rest []string
			for k, v := range f.Groups {
				if _, ok := g.m[k]; !ok {
					g.m[k] = v
					rest = append(rest, k)
				}
			}
			slices.Sort(rest)
			g.order = append(rest, g.order...)
		}
	}
	g.loaded = true
	return nil
}

// limit is the bound on kept groups.
func (g *groupGens) limit() int {
	if g.max > 0 {
		return g.max
	}
	return maxGenerations
}

// get is group's generation.
func (g *groupGens) get(group string) (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.loadLocked(); err != nil {
		return 0, err
	}
	if v, ok := g.m[group]; ok {
		return v, nil
	}
	return firstGeneration, nil
}

// raise sets group's generation to gen if that is higher than the one kept,
// durably before it returns.
func (g *groupGens) raise(group string, gen uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.loadLocked(); err != nil {
		return err
	}
	if gen <= max(g.m[group], firstGeneration) {
		return nil
	}
	// The new table: group last in the order, the oldest dropped past the
	// bound. It replaces the kept one once it is on disk.
	m := maps.Clone(g.m)
	m[group] = gen
	order := append(slices.DeleteFunc(slices.Clone(g.order), func(k string) bool { return k == group }), group)
	for len(order) > g.limit() {
		delete(m, order[0])
		order = order[1:]
	}
	if g.dir == "" {
		g.m, g.order = m, order
		return nil
	}
	b, err := json.MarshalIndent(generationsFile{Groups: m, Order: order}, "", "  ")
	if err == nil {
		err = os.MkdirAll(g.dir, 0o755)
	}
	if err == nil {
		err = atomicfile.WriteFile(g.dir, GenerationsFile, append(b, '\n'), 0o644)
	}
	if err == nil {
		g.m, g.order = m, order
	}
	if err != nil {
		return fmt.Errorf("%w: keeping group %q's generation %d in %s: %v", sdk.ErrUnavailable, group, gen, filepath.Join(g.dir, GenerationsFile), err)
	}
	return nil
}

// checkGeneration refuses a client's commit of group carrying generation
// gen when the group's is newer (0: not checked).
func (b *Broker) checkGeneration(group string, gen uint64) error {
	if gen == 0 {
		// Without a generation (a simple consumer, an admin tool, an
		// older client, an http commit without one) the commit is taken
		// only while the group has no live members, as Kafka takes a
		// commit without a member only for an empty group: a live group's
		// commits come from its members, which learn the generation
		// with their heartbeats, and one without it cannot be told from
		// a commit sent before a deletion.
		live := b.groups.live(group)
		if len(live) == 0 {
			return nil
		}
		cur, err := b.gens.get(group)
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: group %q: the commit carries no generation, but the group has %d live member(s) (%s) at generation %d; a commit without a generation is taken only while the group has no live members: carry the generation (HeartbeatResponse.generation, GetOffsetsResponse.generation); nothing stored",
			sdk.ErrStaleGeneration, group, len(live), strings.Join(live, ", "), cur)
	}
	cur, err := b.gens.get(group)
	if err != nil {
		return err
	}
	if gen < cur {
		return fmt.Errorf("%w: group %q: the commit carries generation %d, but the group is at generation %d (it was deleted after the client joined); nothing stored, the member learns the new generation from its next heartbeat",
			sdk.ErrStaleGeneration, group, gen, cur)
	}
	return nil
}
