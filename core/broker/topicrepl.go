package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/core/sdk"
)

// Replicated topic metadata (sdk.TopicReplication, docs/admin.md).
//
// On a node with a replication plugin, CreateTopic, AlterTopic, DeleteTopic
// and auto-create go through replicateTopics: only the node that takes
// produce changes topics (others answer sdk.ErrNotLeader, naming the
// leader or master); the change is checked here against this node's topics,
// one change at a time (topicAdminMu), then
//
//   - raft ("replicate, then apply"): the plugin commits it through its log
//     and every node, this one included, applies it in log order through
//     ReplicaCore.ApplyTopics; the call returns once this node applied it;
//   - master–slave ("apply, then replicate"): a create or alter is shipped
//     to the slaves as the master's new topic set first, then applied here
//     (so that no batch of a new topic or queue can reach a slave before
//     the topic does); a delete is applied here first (it leaves routing,
//     and the batches of it already stored were handed over), then shipped.
//
// ApplyTopics is idempotent, and a replicated change that contradicts this
// node's own pipeline (its declared baseline) is reported and not applied
// to that topic: see applyTopics.

// topicReplicator is the live plugin as a replicator of topic metadata, or
// an error saying why topics cannot change on this node.
func (b *Broker) topicReplicator() (sdk.TopicReplication, error) {
	impl, _, _ := b.repl.src.Current()
	if impl == nil {
		return nil, fmt.Errorf("%w: replication plugin is restarting", sdk.ErrUnavailable)
	}
	tr, ok := impl.(sdk.TopicReplication)
	if c, announces := impl.(interface{ ReplicatesTopics() bool }); ok && announces {
		ok = c.ReplicatesTopics()
	}
	if !ok {
		return nil, fmt.Errorf("%w: runtime topic changes on this replicated node: its replication plugin does not replicate topic metadata; declare the topic in the pipeline of every node", errors.ErrUnsupported)
	}
	return tr, nil
}

// replicateTopics makes one topic change on a replicated node (see above).
// force is DeleteTopic's: delete even while groups consume the topic. It
// returns the groups whose offsets go with a deleted topic.
func (b *Broker) replicateTopics(ctx context.Context, ch *sdk.TopicChange, force bool) ([]string, error) {
	if err := b.role.checkProduce(); err != nil {
		return nil, fmt.Errorf("topics are created, altered and deleted on the node that takes produce: %w", err)
	}
	tr, err := b.topicReplicator()
	if err != nil {
		return nil, err
	}
	first, err := b.repl.replicateFirst()
	if err != nil {
		return nil, err
	}
	b.topicAdminMu.Lock()
	defer b.topicAdminMu.Unlock()
	groups, err := b.checkTopicChange(ctx, ch, force)
	if err != nil {
		return nil, err
	}
	if first {
		if ch.Op == sdk.TopicDelete {
			// Out of routing before the entry goes into the log: a
			// produce of the topic waits for its own entry, which the
			// log would apply after the delete's (the delete waits for
			// produces under way). A delete whose outcome is unknown
			// may still be applied later.
			if err := b.stopProducing(ctx, ch.Name); err != nil {
				return nil, err
			}
		}
		if err := tr.ReplicateTopics(ctx, ch); err != nil {
			if ch.Op == sdk.TopicDelete {
				b.resumeProducing(ch.Name)
			}
			return nil, fmt.Errorf("topic %q: %w", ch.Name, err)
		}
		if ch.Op == sdk.TopicDelete {
			b.log.Info("topic deleted", "topic", ch.Name, "groups", groups)
		}
		return groups, nil
	}
	switch ch.Op {
	case sdk.TopicCreate, sdk.TopicAlter:
		set := b.topicSet(map[string]*sdk.ReplicatedTopic{ch.Name: {Name: ch.Name, Queues: ch.Queues, Settings: ch.Settings}})
		shipErr := tr.ReplicateTopics(ctx, &sdk.TopicChange{Op: ch.Op, Name: ch.Name, Queues: ch.Queues, Settings: ch.Settings, Topics: set})
		if shipErr != nil && !unconfirmed(shipErr) {
			return nil, fmt.Errorf("topic %q not changed: shipping it to the slaves failed: %w", ch.Name, shipErr)
		}
		// Shipped (sync: and confirmed, or not confirmed in time: the
		// set is on its way, so the master makes the change too, as
		// the slaves will, and says it is not confirmed).
		var err error
		if ch.Op == sdk.TopicCreate {
			err = b.newTopic(ctx, ch.Name, ch.Queues, ch.Settings)
		} else {
			err = b.alterTopic(ctx, ch.Name, ch.Queues, ch.Settings)
		}
		if err == nil && shipErr != nil {
			b.log.Warn("topic change made on the master, not confirmed by its slaves", "topic", ch.Name, "op", ch.Op, "error", shipErr)
			err = fmt.Errorf("topic %q is changed (%s) on the master, but the change is not confirmed by its slaves (they get it with the master's topic set): %w", ch.Name, ch.Op, shipErr)
		}
		return nil, err
	case sdk.TopicDelete:
		if err := b.removeTopic(ctx, ch.Name); err != nil {
			return nil, err
		}
		if err := tr.ReplicateTopics(ctx, &sdk.TopicChange{Op: ch.Op, Name: ch.Name, Topics: b.topicSet(nil)}); err != nil {
			// Deleted here; a slave gets the master's set whenever its
			// link (re)opens. A sync plugin that could not confirm
			// it says so to the caller.
			b.log.Warn("topic deleted on the master, not confirmed by the slaves yet (they get it with the master's set)", "topic", ch.Name, "error", err)
			return groups, fmt.Errorf("topic %q is deleted on the master, but the deletion is not confirmed by its slaves (they get it with the master's topic set): %w", ch.Name, err)
		}
		b.log.Info("topic deleted", "topic", ch.Name, "groups", groups)
		return groups, nil
	}
	return nil, fmt.Errorf("%w: unknown topic change %q", sdk.ErrInvalidArgument, ch.Op)
}

// unconfirmed reports whether a master–slave plugin's ReplicateTopics error
// says the slaves did not confirm a change it recorded (sync), rather than
// that it was not shipped.
func unconfirmed(err error) bool {
	return errors.Is(err, sdk.ErrReplicaTimeout) || errors.Is(err, sdk.ErrReplicaNotAvailable)
}

// checkTopicChange refuses a change this node cannot make, with the errors
// of the standalone calls (NewTopic, AddQueues, DeleteTopic).
func (b *Broker) checkTopicChange(ctx context.Context, ch *sdk.TopicChange, force bool) ([]string, error) {
	name := ch.Name
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	switch ch.Op {
	case sdk.TopicCreate:
		if err := names.Topic(name); err != nil {
			return nil, fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
		}
		if ch.Queues < 1 || ch.Queues > MaxQueues {
			return nil, fmt.Errorf("%w: topic %q: queues must be between 1 and %d, got %d", sdk.ErrInvalidArgument, name, MaxQueues, ch.Queues)
		}
		if t != nil {
			return nil, fmt.Errorf("%w: topic %q already exists (with %d queues)", sdk.ErrInvalidArgument, name, t.queues())
		}
		if err := b.checkRetentionCapability(ctx, name, nil, ch.Settings); err != nil {
			return nil, err
		}
	case sdk.TopicAlter:
		if _, _, internal := sdk.InternalTopic(name); internal {
			return nil, fmt.Errorf("%w: topic %q is a consumer group's internal topic; its queues are fixed", sdk.ErrInvalidArgument, name)
		}
		if t == nil {
			return nil, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
		}
		switch n := t.queues(); {
		case ch.Queues < n:
			return nil, fmt.Errorf("%w: topic %q has %d queues; it cannot shrink to %d (queues are never removed)", sdk.ErrInvalidArgument, name, n, ch.Queues)
		case ch.Queues == n && sameSettings(t.settingsOf(), ch.Settings):
			return nil, fmt.Errorf("%w: topic %q already has %d queues and these settings", sdk.ErrInvalidArgument, name, n)
		case ch.Queues > MaxQueues:
			return nil, fmt.Errorf("%w: topic %q: queues must be at most %d, got %d", sdk.ErrInvalidArgument, name, MaxQueues, ch.Queues)
		}
		if err := b.checkRetentionCapability(ctx, name, t.settingsOf(), ch.Settings); err != nil {
			return nil, err
		}
	case sdk.TopicDelete:
		if _, _, internal := sdk.InternalTopic(name); internal {
			return nil, fmt.Errorf("%w: topic %q is a consumer group's internal topic; it goes with the group's messages (retention), not on its own", sdk.ErrInvalidArgument, name)
		}
		if t == nil {
			return nil, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
		}
		if b.declared(name) > 0 {
			return nil, fmt.Errorf("%w: topic %q is declared in the pipeline's topics, which would create it again at the next start: remove it there and restart the node, then delete it", sdk.ErrInvalidArgument, name)
		}
		groups, err := b.consumingGroups(ctx, name)
		if err != nil {
			return nil, err
		}
		if len(groups) > 0 && !force {
			return nil, fmt.Errorf("%w: topic %q is consumed by group(s) %s (live members or committed offsets); delete those groups, or force the delete (their offsets on it go with it)",
				sdk.ErrInvalidArgument, name, strings.Join(groups, ", "))
		}
		return groups, nil
	default:
		return nil, fmt.Errorf("%w: unknown topic change %q", sdk.ErrInvalidArgument, ch.Op)
	}
	return nil, nil
}

// declared is the queue count this node's pipeline declares for topic name,
// 0 when it does not declare it.
func (b *Broker) declared(name string) int32 {
	for _, d := range b.opts.Topics {
		if d.Name == name {
			return int32(d.Queues)
		}
	}
	return 0
}

// topicSet lists the node's topics (not groups' internal ones), sorted by
// name, with the counts in change applied.
func (b *Broker) topicSet(change map[string]*sdk.ReplicatedTopic) []*sdk.ReplicatedTopic {
	held := map[string]*sdk.ReplicatedTopic{}
	b.topicsMu.RLock()
	for _, t := range b.topics {
		if !t.internal {
			held[t.name] = &sdk.ReplicatedTopic{Name: t.name, Queues: t.queues(), Settings: normSettings(t.settingsOf())}
		}
	}
	b.topicsMu.RUnlock()
	for n, rt := range change {
		held[n] = rt
	}
	out := make([]*sdk.ReplicatedTopic, 0, len(held))
	for _, rt := range held {
		out = append(out, rt)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ApplyTopics applies a replicated change of the topic metadata
// (sdk.ReplicaCore.ApplyTopics).
func (c replicaCore) ApplyTopics(ctx context.Context, ch *sdk.TopicChange) error {
	return c.b.applyTopics(ctx, ch)
}

// applyTopics applies a replicated change to this node, idempotently: a
// topic is created, or grown, to at least the queues the change names; a
// delete of a topic this node lacks does nothing. The node's pipeline
// stays the baseline: a delete of a topic it declares, or a set that
// lacks one, is not applied to that topic, and a replicated count below the
// one it declares leaves the declared count; each such conflict is logged
// as an error naming the topic (the metadata differs between the nodes
// until the pipelines agree).
func (b *Broker) applyTopics(ctx context.Context, ch *sdk.TopicChange) error {
	switch ch.Op {
	case sdk.TopicCreate, sdk.TopicAlter:
		return b.ensureTopic(ctx, ch.Name, ch.Queues, ch.Settings)
	case sdk.TopicDelete:
		return b.applyDelete(ctx, ch.Name, "deleted")
	case sdk.TopicSet:
		want := map[string]bool{}
		var errs []error
		for _, t := range ch.Topics {
			want[t.Name] = true
			if err := b.ensureTopic(ctx, t.Name, t.Queues, t.Settings); err != nil {
				errs = append(errs, err)
			}
		}
		for _, t := range b.topicSet(nil) {
			if !want[t.Name] {
				if err := b.applyDelete(ctx, t.Name, "absent from the replicated topics"); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	}
	return fmt.Errorf("%w: unknown topic change %q", sdk.ErrInvalidArgument, ch.Op)
}

// ensureTopic creates topic name, or grows it, to at least queues queues,
// and gives it settings (the replicated topic's whole settings). A
// retention this node's store cannot keep is logged, not refused: the
// topic must exist here as on every node.
func (b *Broker) ensureTopic(ctx context.Context, name string, queues int32, settings *sdk.TopicSettings) error {
	if err := names.Topic(name); err != nil {
		return fmt.Errorf("%w: replicated topic: %v", sdk.ErrInvalidArgument, err)
	}
	if queues < 1 || queues > MaxQueues {
		return fmt.Errorf("%w: replicated topic %q: queues must be between 1 and %d, got %d", sdk.ErrInvalidArgument, name, MaxQueues, queues)
	}
	if err := checkSettings(name, settings); err != nil {
		return fmt.Errorf("replicated topic: %w", err)
	}
	settings = normSettings(settings)
	switch d := b.declared(name); {
	case d > queues:
		b.log.Error("topic metadata conflict: the replicated metadata has fewer queues than this node's pipeline declares; this node keeps the declared queues (declare the same queues on every node)",
			"topic", name, "replicated", queues, "declared", d)
	case d > 0 && d < queues:
		// The group holds more queues than this node's pipeline declares
		// (an alter while the pipelines stayed). The node serves the
		// group's queues, so that routing agrees on every node, but says
		// so: with the data dir holding them, its next start refuses the
		// pipeline until it declares them (OpenTopics).
		b.log.Error("topic metadata conflict: the replicated metadata has more queues than this node's pipeline declares; this node serves the replicated queues (they are never removed) and refuses to start with this pipeline: declare the replicated queues in every node's pipeline",
			"topic", name, "replicated", queues, "declared", d)
	}
	if d := b.declaredTopic(name); d != nil && d.Settings != nil {
		if _, errs := declaredSettings(*d, settings); len(errs) > 0 {
			b.log.Error("topic metadata conflict: the replicated settings differ from those this node's pipeline declares; this node takes the replicated ones (settings agree on every node) and refuses to start with this pipeline: declare the same settings in every node's pipeline",
				"topic", name, "error", errors.Join(errs...))
		}
	}
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t != nil && t.queues() >= queues && sameSettings(t.settingsOf(), settings) {
		return nil
	}
	var old *sdk.TopicSettings
	if t != nil {
		old = t.settingsOf()
		queues = max(queues, t.queues())
	}
	if err := b.retentionFor(ctx, name, old, settings); err != nil {
		b.log.Error("a replicated topic's retention is not kept by this node's store", "topic", name, "error", err)
	}
	if err := b.saveTopics(map[string]topicMeta{name: metaOf(name, queues, settings)}); err != nil {
		return err
	}
	if t != nil {
		from := t.queues()
		t.nqueues.Store(queues)
		t.settings.Store(settings)
		if from != queues {
			b.log.Info("topic queues added (replicated)", "topic", name, "from", from, "to", queues)
		}
		if !sameSettings(old, settings) {
			b.log.Info("topic settings changed (replicated)", "topic", name)
		}
		return nil
	}
	t = newTopic(name, queues, false)
	t.settings.Store(settings)
	b.topicsMu.Lock()
	b.topics[name] = t
	b.topicsMu.Unlock()
	b.log.Info("topic created (replicated)", "topic", name, "queues", queues)
	return nil
}

// declaredTopic is this node's pipeline's topic name, nil when it does not
// declare it.
func (b *Broker) declaredTopic(name string) *Topic {
	for i := range b.opts.Topics {
		if b.opts.Topics[i].Name == name {
			return &b.opts.Topics[i]
		}
	}
	return nil
}

// checkRetentionCapability refuses, on the node that takes produce, a
// change of a topic's retention that its store cannot keep, before the
// change is replicated: the store is handed the retention it keeps now,
// which it refuses without the capability.
func (b *Broker) checkRetentionCapability(ctx context.Context, name string, old, s *sdk.TopicSettings) error {
	if sameRetention(old, s) {
		return nil
	}
	if err := b.pushRetention(ctx, nil); err != nil {
		return fmt.Errorf("topic %q: its retention (retention_bytes %d, retention_age %s) cannot be kept: %w",
			name, s.GetRetentionBytes(), time.Duration(s.GetRetentionAgeNanos()), err)
	}
	return nil
}

// applyDelete deletes topic name here, unless this node's pipeline declares
// it (a conflict, reported) or it is gone already.
func (b *Broker) applyDelete(ctx context.Context, name, why string) error {
	if _, _, internal := sdk.InternalTopic(name); internal {
		return nil
	}
	if b.declared(name) > 0 {
		b.log.Error("topic metadata conflict: the replicated metadata has no topic this node's pipeline declares; this node keeps it (remove it from the pipeline of every node)",
			"topic", name, "replicated", why)
		return nil
	}
	err := b.removeTopic(ctx, name)
	if errors.Is(err, sdk.ErrNotFound) {
		return nil
	}
	if err == nil {
		b.log.Info("topic deleted (replicated)", "topic", name, "why", why)
	}
	return err
}

// stopProducing refuses new produces of topic name (as deleted) and waits
// for those under way to be answered.
func (b *Broker) stopProducing(ctx context.Context, name string) error {
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t == nil {
		return fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
	}
	t.deleted.Store(true)
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	for t.producing.Load() > 0 {
		select {
		case <-cctx.Done():
			t.deleted.Store(false)
			return fmt.Errorf("topic %q not deleted: produces of it still under way: %w", name, cctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// resumeProducing undoes stopProducing when the topic is still there.
func (b *Broker) resumeProducing(name string) {
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t != nil {
		t.deleted.Store(false)
	}
}

// removeTopic deletes topic name from this node: out of routing first (no
// append starts for it from now on), then out of the store, then out of the
// metadata; a store that fails, or cannot delete, leaves the topic as it
// was. Produces of it under way are answered before its data is deleted.
func (b *Broker) removeTopic(ctx context.Context, name string) error {
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	b.topicsMu.Lock()
	t := b.topics[name]
	if t == nil || t.internal {
		b.topicsMu.Unlock()
		return fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
	}
	delete(b.topics, name)
	b.topicsMu.Unlock()
	t.deleted.Store(true)
	restore := func() {
		t.deleted.Store(false)
		b.topicsMu.Lock()
		b.topics[name] = t
		b.topicsMu.Unlock()
	}
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	for t.producing.Load() > 0 {
		select {
		case <-cctx.Done():
			restore()
			return fmt.Errorf("topic %q not deleted: produces of it still under way: %w", name, cctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	if err := b.storageCall(cctx, func(s sdk.Storage) error {
		td, ok := s.(sdk.TopicDeleter)
		if !ok {
			return fmt.Errorf("%w: this node's store cannot delete a topic's data", errors.ErrUnsupported)
		}
		return td.DeleteTopicData(cctx, name)
	}); err != nil {
		restore()
		return fmt.Errorf("topic %q not deleted: %w", name, err)
	}
	if err := b.saveTopics(nil); err != nil {
		restore()
		return fmt.Errorf("topic %q: its data is deleted, but not the topic: %w", name, err)
	}
	t.notify() // fetches waiting on it end (and find it gone)
	if s := t.settingsOf(); s.GetRetentionBytes() > 0 || s.GetRetentionAgeNanos() > 0 {
		// A topic created again with the name starts without it.
		if err := b.pushRetention(ctx, nil); err != nil {
			b.log.Warn("a deleted topic's retention is still with the store", "topic", name, "error", err)
		}
	}
	return nil
}
