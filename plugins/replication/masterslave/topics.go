package masterslave

import (
	"context"
	"fmt"
	"strings"
	"time"

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
// slave with its next frame. Async, it does not wait for them. Sync, it
// returns once min_replicas slaves confirmed they applied it (or a later
// set); after the plugin's timeout it fails with sdk.ErrReplicaTimeout, and
// at once with sdk.ErrReplicaNotAvailable when fewer than min_replicas
// slaves are linked, naming the slaves. The set stays recorded (and shipped)
// either way: the broker makes the change on the master and reports it as
// not confirmed. On a node that is not master (one that stepped down since
// its broker checked its role) it refuses with sdk.ErrNotLeader: the broker
// then does not make a create or alter.
func (p *Plugin) ReplicateTopics(ctx context.Context, ch *sdk.TopicChange) error {
	p.mu.Lock()
	if p.role != sdk.RoleMaster {
		p.mu.Unlock()
		return fmt.Errorf("%w: this node is not master", sdk.ErrNotLeader)
	}
	p.topics = &ferryv1.TopicChange{Op: sdk.TopicSet, Topics: ch.Topics}
	p.topicVer++
	ver := p.topicVer
	signal(&p.wake)
	p.mu.Unlock()
	if p.mode != ModeSync {
		return nil
	}
	return p.waitTopics(ctx, ver)
}

// waitTopics waits until min_replicas slaves applied the master's topic set
// of version ver, for at most the plugin's timeout.
func (p *Plugin) waitTopics(ctx context.Context, ver uint64) error {
	timeout := time.Duration(p.cfg.Timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		var confirmed, linked []string
		for s := range p.sessions {
			linked = append(linked, s.node)
			if s.topicAcked >= ver {
				confirmed = append(confirmed, s.node)
			}
		}
		progress := p.progress
		p.mu.Unlock()
		if len(confirmed) >= p.cfg.MinReplicas {
			return nil
		}
		if len(linked) < p.cfg.MinReplicas {
			return fmt.Errorf("%w: sync replication: %d slave(s) linked (%s), min_replicas is %d: the topic change cannot be confirmed",
				sdk.ErrReplicaNotAvailable, len(linked), strings.Join(linked, ", "), p.cfg.MinReplicas)
		}
		select {
		case <-progress:
		case <-timer.C:
			return fmt.Errorf("%w: sync replication: the topic change was not confirmed by min_replicas (%d) slaves within the timeout (%s); linked: %s, confirmed: %s",
				sdk.ErrReplicaTimeout, p.cfg.MinReplicas, timeout, strings.Join(linked, ", "), strings.Join(confirmed, ", "))
		case <-ctx.Done():
			return fmt.Errorf("%w: sync replication: waiting for the slaves to confirm the topic change: %v", sdk.ErrReplicaTimeout, ctx.Err())
		}
	}
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
