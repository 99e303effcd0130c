package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

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
	if b.repl != nil {
		if _, err := b.replicateTopics(ctx, &sdk.TopicChange{Op: sdk.TopicCreate, Name: req.Name, Queues: req.Queues}, false); err != nil {
			return nil, err
		}
	} else if err := b.NewTopic(req.Name, req.Queues); err != nil {
		return nil, err
	}
	return &sdk.CreateTopicResponse{Topic: b.topicInfo(req.Name)}, nil
}

// AlterTopic is Broker.AlterTopic: AddQueues over the wire, replicated like
// CreateTopic.
func (b *Broker) AlterTopic(ctx context.Context, req *sdk.AlterTopicRequest) (*sdk.AlterTopicResponse, error) {
	if b.repl != nil {
		if _, err := b.replicateTopics(ctx, &sdk.TopicChange{Op: sdk.TopicAlter, Name: req.Name, Queues: req.Queues}, false); err != nil {
			return nil, err
		}
	} else if err := b.AddQueues(req.Name, req.Queues); err != nil {
		return nil, err
	}
	return &sdk.AlterTopicResponse{Topic: b.topicInfo(req.Name)}, nil
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
	if err := b.saveTopics(map[string]int32{name: queues}); err != nil {
		return err
	}
	b.topicsMu.Lock()
	b.topics[name] = newTopic(name, queues, false)
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
		err = b.NewTopic(name, queues)
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
	switch n := t.queues(); {
	case queues < n:
		return fmt.Errorf("%w: topic %q has %d queues; it cannot shrink to %d (queues are never removed)", sdk.ErrInvalidArgument, name, n, queues)
	case queues == n:
		return fmt.Errorf("%w: topic %q already has %d queues", sdk.ErrInvalidArgument, name, n)
	case queues > MaxQueues:
		return fmt.Errorf("%w: topic %q: queues must be at most %d, got %d", sdk.ErrInvalidArgument, name, MaxQueues, queues)
	}
	if err := b.saveTopics(map[string]int32{name: queues}); err != nil {
		return err
	}
	from := t.queues()
	t.nqueues.Store(queues)
	b.log.Info("topic queues added", "topic", name, "from", from, "to", queues)
	return nil
}

// saveTopics writes the node's topics, with the counts in change applied,
// to its metadata. Callers hold metaMu. Without a data dir it does nothing.
func (b *Broker) saveTopics(change map[string]int32) error {
	if b.opts.DataDir == "" {
		return nil
	}
	var tf topicsFile
	b.topicsMu.RLock()
	for _, t := range b.topics {
		if _, ok := change[t.name]; !ok && !t.internal {
			tf.Topics = append(tf.Topics, topicMeta{Name: t.name, Queues: t.queues()})
		}
	}
	b.topicsMu.RUnlock()
	for n, q := range change {
		tf.Topics = append(tf.Topics, topicMeta{Name: n, Queues: q})
	}
	return writeTopicsFile(b.opts.DataDir, tf)
}
