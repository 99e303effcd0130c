package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/atomicfile"
)

// Ephemeral consumer groups (HeartbeatRequest.ephemeral): the broker deletes
// such a group — its committed offsets, those of its DLQ cursor, and its
// %RETRY% and %DLQ% topics — once its last member has been gone for
// Options.EphemeralGroupTTL. The mark is kept in the data dir
// (EphemeralGroupsFile), so a group left without members when the node
// stopped is deleted a TTL after the node's next start, unless a member
// joins first. Deletion reuses DeleteGroup's store capability
// (sdk.GroupStore) and DeleteTopic's (sdk.TopicDeleter).

// DefaultEphemeralGroupTTL is Options.EphemeralGroupTTL's default.
const DefaultEphemeralGroupTTL = 30 * time.Second

// EphemeralGroupsFile, in the node's data dir, names the ephemeral groups.
const EphemeralGroupsFile = "ephemeral-groups.json"

type ephemeralGroups struct {
	mu     sync.Mutex
	groups map[string]*ephemeralGroup
	// deleted are the ephemeral groups deleted lately (when), at most
	// maxEphemeralTombstones, kept in EphemeralGroupsFile: a commit for one
	// of them (a member's straggler, sent before it noticed it was gone)
	// is refused, so that it does not recreate the group's offsets. A
	// member that joins the name again clears it.
	deleted map[string]time.Time
	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool // Start ran runEphemeral
}

type ephemeralGroup struct {
	emptySince time.Time // zero while it has live members
	deleting   bool
	commits    int // commits of the group under way (beginCommit); its deletion waits for them
}

type ephemeralFile struct {
	Groups  []string         `json:"groups"`
	Deleted map[string]int64 `json:"deleted,omitempty"` // group → when deleted, Unix ns
}

// maxEphemeralTombstones bounds ephemeralGroups.deleted; past it the oldest
// is forgotten (a straggler commit for it would then be stored).
const maxEphemeralTombstones = 4096

func (b *Broker) ephemeralTTL() time.Duration {
	if b.opts.EphemeralGroupTTL > 0 {
		return b.opts.EphemeralGroupTTL
	}
	return DefaultEphemeralGroupTTL
}

// loadEphemeral reads the marks kept by an earlier run: those groups have no
// members now, so their TTL runs from the start.
func (b *Broker) loadEphemeral() {
	b.eph.groups = map[string]*ephemeralGroup{}
	b.eph.deleted = map[string]time.Time{}
	if b.opts.DataDir == "" {
		return
	}
	data, err := os.ReadFile(filepath.Join(b.opts.DataDir, EphemeralGroupsFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			b.log.Error("ephemeral groups: cannot read their marks; they are not deleted", "file", EphemeralGroupsFile, "error", err)
		}
		return
	}
	var f ephemeralFile
	if err := json.Unmarshal(data, &f); err != nil {
		b.log.Error("ephemeral groups: their marks do not decode; they are not deleted", "file", EphemeralGroupsFile, "error", err)
		return
	}
	now := time.Now()
	for _, g := range f.Groups {
		b.eph.groups[g] = &ephemeralGroup{emptySince: now}
	}
	for g, at := range f.Deleted {
		b.eph.deleted[g] = time.Unix(0, at)
	}
	if len(f.Groups) > 0 {
		b.log.Info("ephemeral groups without members since the restart; deleted after the TTL unless a member joins", "groups", f.Groups, "ttl", b.ephemeralTTL())
	}
}

// saveEphemeralLocked writes the marks (under eph.mu).
func (b *Broker) saveEphemeralLocked() error {
	if b.opts.DataDir == "" {
		return nil
	}
	f := ephemeralFile{Groups: []string{}}
	for g := range b.eph.groups {
		f.Groups = append(f.Groups, g)
	}
	if len(b.eph.deleted) > 0 {
		f.Deleted = map[string]int64{}
		for g, at := range b.eph.deleted {
			f.Deleted[g] = at.UnixNano()
		}
	}
	sort.Strings(f.Groups)
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(b.opts.DataDir, EphemeralGroupsFile, append(data, '\n'), 0o644)
}

// checkEphemeral is the heartbeat's check of group against its mark, before
// the member is recorded; a first ephemeral member marks the group. Called
// with eph.mu held.
func (b *Broker) checkEphemeralLocked(ctx context.Context, group string, ephemeral bool) error {
	if _, ok := b.eph.deleted[group]; ok {
		// A member joins the name again: its commits are the new group's.
		delete(b.eph.deleted, group)
		if err := b.saveEphemeralLocked(); err != nil {
			b.log.Error("ephemeral groups: saving their marks", "error", err)
		}
	}
	g := b.eph.groups[group]
	switch {
	case g != nil && g.deleting:
		return fmt.Errorf("%w: ephemeral group %q is being deleted (its last member left %s ago); join again in a moment", sdk.ErrUnavailable, group, b.ephemeralTTL())
	case g != nil && !ephemeral:
		return fmt.Errorf("%w: group %q is ephemeral (deleted %s after its last member leaves); join it as ephemeral, or use another group", sdk.ErrInvalidArgument, group, b.ephemeralTTL())
	case g != nil || !ephemeral:
		return nil
	}
	if b.repl != nil {
		return fmt.Errorf("%w: ephemeral group %q on a node with a replication plugin: the broker's own deletion of an ephemeral group is not replicated (ferry group delete is)", errors.ErrUnsupported, group)
	}
	if slices.Contains(b.opts.Groups, group) {
		return fmt.Errorf("%w: group %q is a flow's group in the pipeline; it cannot be ephemeral", sdk.ErrInvalidArgument, group)
	}
	exists, err := b.groupExists(ctx, group)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("%w: group %q exists as a durable group (members, committed offsets or retries); an ephemeral member cannot join it, since its deletion would take them", sdk.ErrInvalidArgument, group)
	}
	b.eph.groups[group] = &ephemeralGroup{}
	if err := b.saveEphemeralLocked(); err != nil {
		delete(b.eph.groups, group)
		return fmt.Errorf("%w: ephemeral group %q: keeping its mark: %v", sdk.ErrUnavailable, group, err)
	}
	b.log.Info("ephemeral group created", "group", group, "ttl", b.ephemeralTTL())
	return nil
}

// beginCommit admits a client's commit for group, or refuses it: a commit
// for an ephemeral group being deleted, or deleted (a straggler from a
// member that is gone), would recreate offsets the deletion removed. The
// returned end must be called once the commit is stored or failed; the
// deletion waits for the commits it admitted.
func (b *Broker) beginCommit(group string) (end func(), err error) {
	b.eph.mu.Lock()
	defer b.eph.mu.Unlock()
	if at, ok := b.eph.deleted[group]; ok {
		return nil, fmt.Errorf("%w: group %q: an ephemeral group, deleted at %s once its last member had been gone for %s; "+
			"a commit after its deletion is refused and not stored (join the group again to consume with it)",
			sdk.ErrNotFound, group, at.UTC().Format(time.RFC3339Nano), b.ephemeralTTL())
	}
	g := b.eph.groups[group]
	if g == nil {
		return func() {}, nil
	}
	if g.deleting {
		return nil, fmt.Errorf("%w: group %q: an ephemeral group being deleted (its last member has been gone for %s); a commit is refused and not stored",
			sdk.ErrNotFound, group, b.ephemeralTTL())
	}
	g.commits++
	return func() {
		b.eph.mu.Lock()
		g.commits--
		b.eph.mu.Unlock()
	}, nil
}

// ephemeralState is what DescribeGroup tells of group: whether it is
// ephemeral and, when it has no members, when it is deleted.
func (b *Broker) ephemeralState(group string) (bool, int64) {
	b.eph.mu.Lock()
	defer b.eph.mu.Unlock()
	g := b.eph.groups[group]
	if g == nil {
		return false, 0
	}
	if g.emptySince.IsZero() {
		if len(b.groups.live(group)) > 0 {
			return true, 0
		}
		g.emptySince = time.Now()
	}
	return true, g.emptySince.Add(b.ephemeralTTL()).UnixNano()
}

// noteEphemeralLocked updates group's clock after a heartbeat (under eph.mu).
func (b *Broker) noteEphemeralLocked(group string, live int) {
	g := b.eph.groups[group]
	if g == nil {
		return
	}
	switch {
	case live > 0:
		g.emptySince = time.Time{}
	case g.emptySince.IsZero():
		g.emptySince = time.Now()
	}
}

// runEphemeral deletes ephemeral groups whose TTL ran out, until Close.
func (b *Broker) runEphemeral() {
	defer close(b.eph.done)
	tick := time.NewTicker(max(min(b.ephemeralTTL()/4, time.Second), 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-b.eph.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		var due []string
		b.eph.mu.Lock()
		for name, g := range b.eph.groups {
			if g.deleting {
				continue
			}
			if len(b.groups.live(name)) > 0 {
				g.emptySince = time.Time{}
				continue
			}
			if g.emptySince.IsZero() {
				g.emptySince = now // its members expired
			}
			if now.Sub(g.emptySince) >= b.ephemeralTTL() {
				g.deleting = true
				due = append(due, name)
			}
		}
		b.eph.mu.Unlock()
		for _, name := range due {
			b.deleteEphemeral(name)
		}
	}
}

// deleteEphemeral deletes group's offsets (and its DLQ cursor's) and its
// internal topics' data, then drops its mark. A store without the
// capabilities keeps them: that is logged as an error, and the mark is
// dropped (asking again would not help). Other failures are logged and
// tried again at the next tick.
func (b *Broker) deleteEphemeral(group string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*storageCallTimeout)
	defer cancel()
	err := b.waitCommits(ctx, group)
	if err == nil {
		err = b.deleteGroupData(ctx, group)
	}
	b.eph.mu.Lock()
	defer b.eph.mu.Unlock()
	g := b.eph.groups[group]
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		b.log.Warn("ephemeral group: deleting it failed; trying again", "group", group, "error", err)
		g.deleting = false
		return
	}
	if err != nil {
		b.log.Error("ephemeral group: this node's store cannot delete it; its offsets and retry and dead-letter messages stay (ferry group describe shows them)", "group", group, "error", err)
	} else {
		b.log.Info("ephemeral group deleted: its last member left more than the TTL ago", "group", group, "ttl", b.ephemeralTTL())
		b.tombstoneLocked(group, time.Now())
	}
	delete(b.eph.groups, group)
	if err := b.saveEphemeralLocked(); err != nil {
		b.log.Error("ephemeral groups: saving their marks", "error", err)
	}
}

// waitCommits waits for the commits of group that beginCommit admitted
// before the group was marked deleting.
func (b *Broker) waitCommits(ctx context.Context, group string) error {
	for {
		b.eph.mu.Lock()
		n := 0
		if g := b.eph.groups[group]; g != nil {
			n = g.commits
		}
		b.eph.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// tombstoneLocked records group as deleted at at (under eph.mu), dropping
// the oldest record past maxEphemeralTombstones.
func (b *Broker) tombstoneLocked(group string, at time.Time) {
	b.eph.deleted[group] = at
	for len(b.eph.deleted) > maxEphemeralTombstones {
		oldest, first := "", time.Time{}
		for g, t := range b.eph.deleted {
			if oldest == "" || t.Before(first) {
				oldest, first = g, t
			}
		}
		delete(b.eph.deleted, oldest)
	}
}

// deleteGroupData removes group's committed offsets, its DLQ cursor's, and
// the data of its %RETRY% and %DLQ% topics, which leave routing first.
func (b *Broker) deleteGroupData(ctx context.Context, group string) error {
	err := b.storageCall(ctx, func(s sdk.Storage) error {
		gs, ok := s.(sdk.GroupStore)
		if !ok {
			return fmt.Errorf("%w: the store cannot delete a group's offsets", errors.ErrUnsupported)
		}
		if err := gs.DeleteGroupOffsets(ctx, group); err != nil {
			return err
		}
		return gs.DeleteGroupOffsets(ctx, sdk.DLQTopic(group))
	})
	if err != nil {
		return err
	}
	for _, name := range []string{sdk.RetryTopic(group), sdk.DLQTopic(group)} {
		b.topicsMu.Lock()
		t := b.topics[name]
		delete(b.topics, name)
		b.topicsMu.Unlock()
		if t != nil {
			t.deleted.Store(true)
			for t.producing.Load() > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Millisecond):
				}
			}
		}
		if err := b.storageCall(ctx, func(s sdk.Storage) error {
			td, ok := s.(sdk.TopicDeleter)
			if !ok {
				return fmt.Errorf("%w: the store cannot delete a topic's data", errors.ErrUnsupported)
			}
			return td.DeleteTopicData(ctx, name)
		}); err != nil {
			return fmt.Errorf("topic %q: %w", name, err)
		}
		if t != nil {
			t.notify()
		}
	}
	if !slices.Contains(b.opts.Groups, group) {
		b.knownMu.Lock()
		delete(b.known, group)
		b.knownMu.Unlock()
	}
	return nil
}
