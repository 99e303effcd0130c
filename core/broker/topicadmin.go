package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// This file holds the broker's side of the runtime topic calls: each change
// is written to the node's topic metadata (TopicsFile) before it is served,
// so that what a caller was told is done survives a restart. CreateTopic and
// AlterTopic are the Broker API's calls (sdk.TopicAdmin), which `ferry topic`
// makes; NewTopic and AddQueues are the same for code that holds the broker.

// CreateTopic is Broker.CreateTopic: NewTopic over the wire. A node with a
// replication plugin refuses it (errors.ErrUnsupported): topic metadata is
// not replicated yet, and a topic on one node only would be lost or refused
// at a failover.
func (b *Broker) CreateTopic(_ context.Context, req *sdk.CreateTopicRequest) (*sdk.CreateTopicResponse, error) {
	if err := b.checkTopicAdmin(); err != nil {
		return nil, err
	}
	if err := b.NewTopic(req.Name, req.Queues); err != nil {
		return nil, err
	}
	return &sdk.CreateTopicResponse{Topic: b.topicInfo(req.Name)}, nil
}

// AlterTopic is Broker.AlterTopic: AddQueues over the wire, refused like
// CreateTopic on a replicated node.
func (b *Broker) AlterTopic(_ context.Context, req *sdk.AlterTopicRequest) (*sdk.AlterTopicResponse, error) {
	if err := b.checkTopicAdmin(); err != nil {
		return nil, err
	}
	if err := b.AddQueues(req.Name, req.Queues); err != nil {
		return nil, err
	}
	return &sdk.AlterTopicResponse{Topic: b.topicInfo(req.Name)}, nil
}

var _ sdk.TopicAdmin = (*Broker)(nil)

func (b *Broker) checkTopicAdmin() error {
	if b.repl != nil {
		return fmt.Errorf("%w: runtime topic changes on a node with a replication plugin: topic metadata is not replicated yet; declare the topic in the pipeline of every node", errors.ErrUnsupported)
	}
	return nil
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
