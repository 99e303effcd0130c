package masterslave

import (
	"context"
	"fmt"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Topic metadata (see the package doc, "Topics").
//
// The master's broker calls ReplicateTopics with its whole topic set on
// each change: before it serves a created topic or added queues, after it
// deleted a topic. The master keeps the latest set with a version (topicVer);
// a session ships it with its next frame when its mark is older, in the same
// critical section that picks the frame's messages, so that no message of a
// new topic or queue reaches a slave before the set that holds it. A new
// session opens with the master's set (the latest one, or the broker's from
// NodeInfo when none came yet). A slave applies a set (ReplicaCore.ApplyTopics,
// op set) once every apply started before it is done, and before it starts
// the applies of the frame that carries it.

var _ sdk.TopicReplication = (*Plugin)(nil)

// ReplicateTopics records the master's topic set, to be shipped to every
// slave with its next frame; it does not wait for them. On a node that is
// not master (one that stepped down since its broker checked its role) it
// refuses with sdk.ErrNotLeader: a create or alter is then not made.
func (p *Plugin) ReplicateTopics(_ context.Context, ch *sdk.TopicChange) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role != sdk.RoleMaster {
		return fmt.Errorf("%w: this node is not master", sdk.ErrNotLeader)
	}
	p.topics = &ferryv1.TopicChange{Op: sdk.TopicSet, Topics: ch.Topics}
	p.topicVer++
	signal(&p.wake)
	return nil
}

// takeTopicsLocked returns the master's set when the session has not
// shipped its latest version, and moves the session's mark. Called with p.mu
// held.
func (p *Plugin) takeTopicsLocked(s *session) *ferryv1.TopicChange {
	if p.topicVer <= s.topicSent {
		return nil
	}
	s.topicSent = p.topicVer
	return p.topics
}

// openingTopicsLocked is the set a new session opens with. Called with p.mu
// held.
func (p *Plugin) openingTopicsLocked(s *session, info *sdk.NodeInfo) *ferryv1.TopicChange {
	s.topicSent = p.topicVer
	if p.topics != nil {
		return p.topics
	}
	return &ferryv1.TopicChange{Op: sdk.TopicSet, Topics: info.Topics}
}

// heldTopics is the set of topics a NodeInfo lists.
func heldTopics(info *sdk.NodeInfo) map[string]bool {
	out := map[string]bool{}
	for _, t := range info.Topics {
		out[t.Name] = true
	}
	return out
}
