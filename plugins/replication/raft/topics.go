package raft

import (
	"context"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Topic metadata through the raft log (see the package doc, "Topics").
//
// The leader's broker hands each topic change (create, alter, delete),
// checked against its own topics, to ReplicateTopics, which raft.Apply()s it
// as an entry of kind kindTopics and waits until it is committed and
// applied on this node. Every node's FSM applies such an entry in log
// order, after the appends of the entries before it are stored and before
// any later entry's append starts, through ReplicaCore.ApplyTopics (durable
// in the node's topics.json before the entry counts as applied). So a
// batch of a new topic, later in the log, always finds the topic on every
// node. Snapshots carry the node's whole topic set (ReplicaCore.NodeInfo);
// a follower that restores one applies it as a set before it fetches the
// messages the snapshot's ends name.

var _ sdk.TopicReplication = (*Plugin)(nil)

// encodeTopics is the entry of a topic change.
func encodeTopics(ch *sdk.TopicChange) ([]byte, error) {
	b, err := proto.Marshal(ch)
	if err != nil {
		return nil, err
	}
	return append([]byte{entryTagged, kindTopics}, b...), nil
}

func decodeTopics(payload []byte) (*sdk.TopicChange, error) {
	var ch ferryv1.TopicChange
	if err := proto.Unmarshal(payload, &ch); err != nil {
		return nil, fmt.Errorf("raft topics entry: %w", err)
	}
	return &ch, nil
}

// isTopics reports whether a log entry is a topic change.
func isTopics(l *hraft.Log) bool {
	return l.Type == hraft.LogCommand && len(l.Data) >= 2 && l.Data[0] == entryTagged && l.Data[1] == kindTopics
}

// ReplicateTopics commits a topic change through the log, on the leader,
// and returns once this node's FSM applied it, with the apply's error. A
// leader deposed meanwhile answers an error: the change may or may not be
// committed (it is applied by every node or by none).
func (p *Plugin) ReplicateTopics(ctx context.Context, ch *sdk.TopicChange) error {
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w: raft is starting", sdk.ErrNotLeader)
	}
	if r.State() != hraft.Leader {
		_, id := r.LeaderWithID()
		return fmt.Errorf("%w: this node is not the raft leader (leader: %q)", sdk.ErrNotLeader, id)
	}
	switch ch.Op {
	case sdk.TopicCreate, sdk.TopicAlter, sdk.TopicDelete:
	default:
		return fmt.Errorf("%w: topic change %q does not go through the raft log", sdk.ErrInvalidArgument, ch.Op)
	}
	data, err := encodeTopics(&sdk.TopicChange{Op: ch.Op, Name: ch.Name, Queues: ch.Queues, Settings: ch.Settings})
	if err != nil {
		return err
	}
	return p.applyAndWait(ctx, r, data, "topic change")
}

// applyTopicEntry applies one topic change entry (the entries before it
// are stored). An entry applied already (before a restart) is skipped. A
// change the core refuses for good (a bad name) is applied as a no-op on
// every node alike and answered with its error; a core that cannot take it
// now is asked again until the node stops.
func (f *fsm) applyTopicEntry(l *hraft.Log) any {
	if l.Index <= f.applied {
		return nil
	}
	_, payload, err := decodeEntry(l.Data)
	var ch *sdk.TopicChange
	if err == nil {
		ch, err = decodeTopics(payload)
	}
	if err == nil {
		err = f.applyTopics(ch)
		if f.ctx.Err() != nil {
			return err // not applied: again after the restart
		}
	}
	if err != nil {
		f.p.log.Error("a topic change from the raft log was not applied", "index", l.Index, "error", err)
	}
	f.applied = l.Index
	f.saveApplied()
	if err != nil {
		return err
	}
	return nil
}

// applyTopics applies a change through the core, retrying while the core
// cannot take it; it returns the core's lasting refusal, or an error once
// the node stops.
func (f *fsm) applyTopics(ch *sdk.TopicChange) error {
	for {
		ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
		err := f.core.ApplyTopics(ctx, ch)
		cancel()
		if err == nil || errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, errors.ErrUnsupported) || f.ctx.Err() != nil {
			return err
		}
		f.warnOffsets("applying a topic change from the raft log failed; retrying", "op", ch.Op, "topic", ch.Name, "error", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// snapTopic is a topic as a snapshot records it.
type snapTopic struct {
	Name   string `json:"name"`
	Queues int32  `json:"queues"`
	// The topic's own settings, absent when unset.
	RetentionBytes    int64 `json:"retention_bytes,omitempty"`
	RetentionAgeNanos int64 `json:"retention_age_nanos,omitempty"`
	MaxMessageBytes   int64 `json:"max_message_bytes,omitempty"`
}

// settings is t's settings, nil when it has none.
func (t snapTopic) settings() *sdk.TopicSettings {
	if t.RetentionBytes == 0 && t.RetentionAgeNanos == 0 && t.MaxMessageBytes == 0 {
		return nil
	}
	return &sdk.TopicSettings{RetentionBytes: t.RetentionBytes, RetentionAgeNanos: t.RetentionAgeNanos, MaxMessageBytes: t.MaxMessageBytes}
}

// snapTopics lists a NodeInfo's topics for a snapshot (never nil: an empty
// list is a node without topics, an absent one an older snapshot).
func snapTopics(ts []*sdk.ReplicatedTopic) []snapTopic {
	out := make([]snapTopic, 0, len(ts))
	for _, t := range ts {
		s := t.GetSettings()
		out = append(out, snapTopic{Name: t.Name, Queues: t.Queues,
			RetentionBytes: s.GetRetentionBytes(), RetentionAgeNanos: s.GetRetentionAgeNanos(), MaxMessageBytes: s.GetMaxMessageBytes()})
	}
	return out
}

// restoreTopics makes the node's topics a snapshot's (before its messages
// are fetched). A snapshot written before topics went through the log
// (Topics nil) changes nothing.
func (f *fsm) restoreTopics(s *snapshot) error {
	if s.Topics == nil {
		return nil
	}
	set := &sdk.TopicChange{Op: sdk.TopicSet}
	for _, t := range s.Topics {
		set.Topics = append(set.Topics, &sdk.ReplicatedTopic{Name: t.Name, Queues: t.Queues, Settings: t.settings()})
	}
	return f.applyTopics(set)
}
