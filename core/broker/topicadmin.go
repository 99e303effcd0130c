package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// This file holds the broker's side of the runtime topic calls: each change
// is written to the node's topic metadata (TopicsFile) before it is served,
// so that what a caller was told is done survives a restart. CreateTopic and
// AlterTopic are the Broker API's calls (sdk.TopicAdmin), which `ferry topic`
// makes; NewTopic and AddQueues are the same for code that holds the broker.

// CreateTopic is Broker.CreateTopic: NewTopic over the wire. On a node with
// a replication plugin the topic is created on every node through the plugin
// (topicrepl.go), on the node that takes produce only.
func (b *Broker) CreateTopic(ctx context.Context, req *sdk.CreateTopicRequest) (*sdk.CreateTopicResponse, error) {
	if err := checkSettings(req.Name, req.Settings); err != nil {
		return nil, err
	}
	settings := normSettings(req.Settings)
	if b.repl != nil {
		if _, err := b.replicateTopics(ctx, &sdk.TopicChange{Op: sdk.TopicCreate, Name: req.Name, Queues: req.Queues, Settings: settings}, false); err != nil {
			return nil, err
		}
	} else if err := b.newTopic(ctx, req.Name, req.Queues, settings); err != nil {
		return nil, err
	}
	return &sdk.CreateTopicResponse{Topic: b.topicInfo(req.Name)}, nil
}

// AlterTopic is Broker.AlterTopic: AddQueues over the wire, and the topic's
// settings (a field 0 keeps one, -1 unsets it), replicated like
// CreateTopic. Queues 0 keeps the queues.
func (b *Broker) AlterTopic(ctx context.Context, req *sdk.AlterTopicRequest) (*sdk.AlterTopicResponse, error) {
	ch, err := b.alterChange(req)
	if err != nil {
		return nil, err
	}
	if b.repl != nil {
		if _, err := b.replicateTopics(ctx, ch, false); err != nil {
			return nil, err
		}
	} else if err := b.alterTopic(ctx, ch.Name, ch.Queues, ch.Settings); err != nil {
		return nil, err
	}
	return &sdk.AlterTopicResponse{Topic: b.topicInfo(req.Name)}, nil
}

// alterChange is an alter as a change with the topic's whole settings
// after it (its queues when req keeps them).
func (b *Broker) alterChange(req *sdk.AlterTopicRequest) (*sdk.TopicChange, error) {
	name := req.Name
	if _, _, internal := sdk.InternalTopic(name); internal {
		return nil, fmt.Errorf("%w: topic %q is a consumer group's internal topic; its queues and settings are fixed", sdk.ErrInvalidArgument, name)
	}
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t == nil {
		return nil, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
	}
	queues := req.Queues
	if queues == 0 {
		if req.Settings == nil {
			return nil, fmt.Errorf("%w: topic %q: an alter names the queues to grow to or a setting to change", sdk.ErrInvalidArgument, name)
		}
		queues = t.queues()
	}
	s := req.Settings
	for _, v := range []int64{s.GetRetentionBytes(), s.GetRetentionAgeNanos(), s.GetMaxMessageBytes()} {
		if v < -1 {
			return nil, fmt.Errorf("%w: topic %q: a setting of an alter is 0 (keep it), -1 (unset it) or a new value, got %d", sdk.ErrInvalidArgument, name, v)
		}
	}
	merged, err := alterSettings(name, t.settingsOf(), req.Settings)
	if err != nil {
		return nil, err
	}
	return &sdk.TopicChange{Op: sdk.TopicAlter, Name: name, Queues: queues, Settings: merged}, nil
}

var _ sdk.TopicAdmin = (*Broker)(nil)

// DeleteTopic is Broker.DeleteTopic. It is refused, changing nothing, for a
// group's internal topic, an unknown one, one the pipeline declares (the
// next start would create it again), one that groups consume (live
// members name it, or they committed offsets on it) unless req.Force, a
// store without sdk.TopicDeleter. On a replicated node it is made on every
// node through the plugin (topicrepl.go). Otherwise the
// topic leaves routing first, so that produce and fetch of it answer
// ErrNotFound at once, then its data leaves the store, then it leaves the
// node's metadata (TopicsFile). Produces of it under way when it left
// routing are answered before its data is deleted.
func (b *Broker) DeleteTopic(ctx context.Context, req *sdk.DeleteTopicRequest) (*sdk.DeleteTopicResponse, error) {
	if b.repl != nil {
		groups, err := b.replicateTopics(ctx, &sdk.TopicChange{Op: sdk.TopicDelete, Name: req.Name}, req.Force)
		if err != nil {
			return nil, err
		}
		return &sdk.DeleteTopicResponse{Groups: groups}, nil
	}
	name := req.Name
	if _, _, internal := sdk.InternalTopic(name); internal {
		return nil, fmt.Errorf("%w: topic %q is a consumer group's internal topic; it goes with the group's messages (retention), not on its own", sdk.ErrInvalidArgument, name)
	}
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t == nil {
		return nil, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
	}
	if slices.ContainsFunc(b.opts.Topics, func(d Topic) bool { return d.Name == name }) {
		return nil, fmt.Errorf("%w: topic %q is declared in the pipeline's topics, which would create it again at the next start: remove it there and restart the node, then delete it", sdk.ErrInvalidArgument, name)
	}
	groups, err := b.consumingGroups(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(groups) > 0 && !req.Force {
		return nil, fmt.Errorf("%w: topic %q is consumed by group(s) %s (live members or committed offsets); delete those groups, or force the delete (their offsets on it go with it)",
			sdk.ErrInvalidArgument, name, strings.Join(groups, ", "))
	}
	// Out of routing, then out of the store, then out of the metadata
	// (removeTopic, topicrepl.go).
	if err := b.removeTopic(ctx, name); err != nil {
		return nil, err
	}
	b.log.Info("topic deleted", "topic", name, "groups", groups)
	return &sdk.DeleteTopicResponse{Groups: groups}, nil
}

// consumingGroups returns, sorted, the groups that consume topic: live
// members name it, or they committed offsets on one of its queues.
func (b *Broker) consumingGroups(ctx context.Context, topic string) ([]string, error) {
	set := map[string]bool{}
	b.knownMu.Lock()
	for g := range b.known {
		set[g] = true
	}
	b.knownMu.Unlock()
	for _, g := range b.groups.names() {
		set[g] = true
	}
	stored, err := b.storedGroups(ctx)
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return nil, err
	}
	for _, g := range stored {
		set[g] = true
	}
	b.topicsMu.RLock()
	t := b.topics[topic]
	b.topicsMu.RUnlock()
	var refs []*sdk.QueueRef
	if t != nil {
		for q := range t.queues() {
			refs = append(refs, &sdk.QueueRef{Topic: topic, Queue: q})
		}
	}
	var out []string
	for g := range set {
		if _, _, internal := sdk.InternalTopic(g); internal {
			continue
		}
		consumes := false
		for _, m := range b.groups.describe(g) {
			consumes = consumes || slices.Contains(m.Topics, topic)
		}
		if !consumes {
			offs, err := b.storeOffsets(ctx, g, refs)
			if err != nil {
				return nil, err
			}
			for _, o := range offs {
				consumes = consumes || o.Committed >= 0
			}
		}
		if consumes {
			out = append(out, g)
		}
	}
	sort.Strings(out)
	return out, nil
}

// topicInfo is the Metadata entry of topic name.
func (b *Broker) topicInfo(name string) *ferryv1.TopicInfo {
	resp, _ := b.Metadata(context.Background(), &sdk.MetadataRequest{Topics: []string{name}})
	if resp == nil || len(resp.Topics) == 0 {
		return &ferryv1.TopicInfo{Name: name}
	}
	return resp.Topics[0]
}

// NewTopic creates topic name with queues queues. A bad name or count, a
// group's internal topic, or a topic that exists is ErrInvalidArgument with
// one message naming what is wrong. Safe from many goroutines.
func (b *Broker) NewTopic(name string, queues int32) error {
	return b.newTopic(context.Background(), name, queues, nil)
}

// newTopic is NewTopic with the topic's own settings (nil: none; checked
// by the caller). A retention the store cannot keep is refused.
func (b *Broker) newTopic(ctx context.Context, name string, queues int32, settings *sdk.TopicSettings) error {
	if err := names.Topic(name); err != nil {
		return fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
	}
	if queues < 1 || queues > MaxQueues {
		return fmt.Errorf("%w: topic %q: queues must be between 1 and %d, got %d", sdk.ErrInvalidArgument, name, MaxQueues, queues)
	}
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	b.topicsMu.RLock()
	old := b.topics[name]
	b.topicsMu.RUnlock()
	if old != nil {
		return fmt.Errorf("%w: topic %q already exists (with %d queues)", sdk.ErrInvalidArgument, name, old.queues())
	}
	if err := b.retentionFor(ctx, name, nil, settings); err != nil {
		return err
	}
	if err := b.saveTopics(map[string]topicMeta{name: metaOf(name, queues, settings)}); err != nil {
		return err
	}
	t := newTopic(name, queues, false)
	t.settings.Store(settings)
	b.topicsMu.Lock()
	b.topics[name] = t
	b.topicsMu.Unlock()
	b.log.Info("topic created", "topic", name, "queues", queues)
	return nil
}

// autoCreate is node.auto_create_topics: a producer's first send to name,
// a topic the node does not have, creates it with Options.AutoCreateQueues
// queues through NewTopic (durably, as CreateTopic does). It returns the
// topic, or nil and no error when nothing is to be created: the option is
// off, the topic exists, or name has a reserved prefix (a group's internal
// topics are never created by clients; the caller answers as before). A
// name that breaks the name rule is its one clear error. Called by
// Produce and by Metadata with auto_create.
func (b *Broker) autoCreate(ctx context.Context, name string) (*topic, error) {
	queues := b.opts.AutoCreateQueues
	if queues <= 0 {
		return nil, nil
	}
	if _, _, internal := sdk.InternalTopic(name); internal {
		return nil, nil
	}
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t != nil {
		return nil, nil
	}
	if err := names.Topic(name); err != nil {
		if strings.HasPrefix(name, "%RETRY%") || strings.HasPrefix(name, "%DLQ%") {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
	}
	var err error
	if b.repl != nil {
		if !sdk.TakesProduce(b.role.get().Role) {
			// Only the node that takes produce creates (replicated);
			// here the answer is as without the option: the client's
			// routing names the leader, which creates it.
			return nil, nil
		}
		_, err = b.replicateTopics(ctx, &sdk.TopicChange{Op: sdk.TopicCreate, Name: name, Queues: queues}, false)
	} else {
		err = b.newTopic(ctx, name, queues, nil)
	}
	b.topicsMu.RLock()
	t = b.topics[name]
	b.topicsMu.RUnlock()
	if t != nil {
		// Created here, or by a send racing this one.
		if err == nil {
			b.log.Info("topic auto-created", "topic", name, "queues", queues)
		}
		return t, nil
	}
	return nil, err
}

// AddQueues grows topic name to queues queues. Queues are never removed: a
// count below the topic's is ErrInvalidArgument naming both, as are an
// unchanged count, an unknown topic (ErrNotFound) and an internal topic.
// Producers and consumers see the new queues once they refresh their
// metadata; the old queues keep their messages and offsets.
func (b *Broker) AddQueues(name string, queues int32) error {
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	var keep *sdk.TopicSettings
	if t != nil {
		keep = t.settingsOf()
	}
	return b.alterTopic(context.Background(), name, queues, keep)
}

// alterTopic grows topic name to queues queues (its count: unchanged) and
// gives it settings (its whole settings after the alter; checked by the
// caller). An alter that changes neither is ErrInvalidArgument; a
// retention the store cannot keep is refused.
func (b *Broker) alterTopic(ctx context.Context, name string, queues int32, settings *sdk.TopicSettings) error {
	if _, _, internal := sdk.InternalTopic(name); internal {
		return fmt.Errorf("%w: topic %q is a consumer group's internal topic; its queues are fixed", sdk.ErrInvalidArgument, name)
	}
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t == nil {
		return fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
	}
	old := t.settingsOf()
	switch n := t.queues(); {
	case queues < n:
		return fmt.Errorf("%w: topic %q has %d queues; it cannot shrink to %d (queues are never removed)", sdk.ErrInvalidArgument, name, n, queues)
	case queues == n && sameSettings(old, settings):
		return fmt.Errorf("%w: topic %q already has %d queues and these settings", sdk.ErrInvalidArgument, name, n)
	case queues > MaxQueues:
		return fmt.Errorf("%w: topic %q: queues must be at most %d, got %d", sdk.ErrInvalidArgument, name, MaxQueues, queues)
	}
	if err := b.retentionFor(ctx, name, old, settings); err != nil {
		return err
	}
	if err := b.saveTopics(map[string]topicMeta{name: metaOf(name, queues, settings)}); err != nil {
		return err
	}
	from := t.queues()
	t.nqueues.Store(queues)
	t.settings.Store(normSettings(settings))
	if from != queues {
		b.log.Info("topic queues added", "topic", name, "from", from, "to", queues)
	}
	if !sameSettings(old, settings) {
		b.log.Info("topic settings changed", "topic", name, "retention_bytes", settings.GetRetentionBytes(),
			"retention_age", time.Duration(settings.GetRetentionAgeNanos()), "max_message_bytes", settings.GetMaxMessageBytes())
	}
	return nil
}

// saveTopics writes the node's topics, with the counts in change applied,
// to its metadata. Callers hold metaMu. Without a data dir it does nothing.
func (b *Broker) saveTopics(change map[string]topicMeta) error {
	if b.opts.DataDir == "" {
		return nil
	}
	var tf topicsFile
	b.topicsMu.RLock()
	for _, t := range b.topics {
		if _, ok := change[t.name]; !ok && !t.internal {
			tf.Topics = append(tf.Topics, metaOf(t.name, t.queues(), t.settingsOf()))
		}
	}
	b.topicsMu.RUnlock()
	for _, m := range change {
		tf.Topics = append(tf.Topics, m)
	}
	return writeTopicsFile(b.opts.DataDir, tf)
}
