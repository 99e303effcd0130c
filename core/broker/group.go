package broker

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Session timeouts of consumer-group members.
const (
	DefaultSessionTimeout = 6 * time.Second
	minSessionTimeout     = 500 * time.Millisecond
	maxSessionTimeout     = 5 * time.Minute
)

// groups tracks the live members of consumer groups. Members rebalance
// themselves from the member list (RocketMQ's model), so the broker keeps no
// assignment: only who is alive, and which topics each consumes (a group
// used on several topics is split per topic).
type groups struct {
	mu      sync.Mutex
	members map[string]map[string]member // group → member id → state
	now     func() time.Time
	swept   time.Time // last sweep of expired members and empty groups
}

type member struct {
	expires time.Time
	last    time.Time // its last heartbeat
	topics  []string
	queues  []*ferryv1.QueueRef // what it held at its last heartbeat
}

func newGroups() *groups {
	return &groups{members: map[string]map[string]member{}, now: time.Now}
}

// heartbeat records member as alive (or gone, when leave) and returns the
// group's live members, sorted, and per topic of topics the live members
// that consume it (a group used on several topics: each topic's queues are
// split among its own consumers).
func (g *groups) heartbeat(group, id string, topics []string, queues []*ferryv1.QueueRef, leave bool, timeout time.Duration) ([]string, []*ferryv1.TopicMembers) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	ms := g.members[group]
	if ms == nil {
		ms = map[string]member{}
		g.members[group] = ms
	}
	if leave {
		delete(ms, id)
	} else {
		ms[id] = member{expires: now.Add(timeout), last: now, topics: topics, queues: queues}
	}
	out := make([]string, 0, len(ms))
	perTopic := make([]*ferryv1.TopicMembers, len(topics))
	for i, t := range topics {
		perTopic[i] = &ferryv1.TopicMembers{Topic: t}
	}
	for mid, m := range ms {
		if now.After(m.expires) {
			delete(ms, mid)
			continue
		}
		out = append(out, mid)
		for _, tm := range perTopic {
			if slices.Contains(m.topics, tm.Topic) {
				tm.Members = append(tm.Members, mid)
			}
		}
	}
	for _, tm := range perTopic {
		sort.Strings(tm.Members)
	}
	if len(ms) == 0 {
		delete(g.members, group)
	}
	if now.Sub(g.swept) > time.Second {
		// Groups whose members all expired without leaving go too: made-up
		// groups cost memory only while their members live.
		g.swept = now
		for name, ms := range g.members {
			for mid, m := range ms {
				if now.After(m.expires) {
					delete(ms, mid)
				}
			}
			if len(ms) == 0 {
				delete(g.members, name)
			}
		}
	}
	sort.Strings(out)
	return out, perTopic
}

// live returns the live members of group, sorted.
func (g *groups) live(group string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var out []string
	for id, m := range g.members[group] {
		if !now.After(m.expires) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// describe returns the live members of group, sorted by id.
func (g *groups) describe(group string) []*ferryv1.GroupMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var out []*ferryv1.GroupMember
	for id, m := range g.members[group] {
		if !now.After(m.expires) {
			out = append(out, &ferryv1.GroupMember{Id: id, Topics: slices.Clone(m.topics), Queues: m.queues,
				LastHeartbeatUnixNano: m.last.UnixNano(), ExpiresUnixNano: m.expires.UnixNano()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// names returns the groups with live members.
func (g *groups) names() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var out []string
	for name, ms := range g.members {
		for _, m := range ms {
			if !now.After(m.expires) {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// Heartbeat keeps a consumer in its group and returns the group's members.
func (b *Broker) Heartbeat(ctx context.Context, req *sdk.HeartbeatRequest) (*sdk.HeartbeatResponse, error) {
	if req.Group == "" || req.Member == "" {
		return nil, fmt.Errorf("%w: heartbeat needs a group and a member id", sdk.ErrInvalidArgument)
	}
	for _, t := range req.Topics {
		if _, err := b.clientTopic(ctx, t, req.Group); err != nil {
			return nil, err
		}
	}
	timeout := DefaultSessionTimeout
	if req.SessionTimeoutNanos > 0 {
		timeout = min(max(time.Duration(req.SessionTimeoutNanos), minSessionTimeout), maxSessionTimeout)
	}
	var queues []*ferryv1.QueueRef
	for _, q := range req.Queues {
		queues = append(queues, &ferryv1.QueueRef{Topic: q.Topic, Queue: q.Queue})
	}
	b.eph.mu.Lock()
	defer b.eph.mu.Unlock()
	if !req.Leave {
		if err := b.checkEphemeralLocked(ctx, req.Group, req.Ephemeral); err != nil {
			return nil, err
		}
	}
	gen, err := b.gens.get(req.Group)
	if err != nil {
		return nil, err
	}
	members, perTopic := b.groups.heartbeat(req.Group, req.Member, slices.Clone(req.Topics), queues, req.Leave, timeout)
	b.noteEphemeralLocked(req.Group, len(members))
	return &sdk.HeartbeatResponse{Members: members, TopicMembers: perTopic, Generation: gen}, nil
}

// maxRecentFetchers bounds recentSet of the groups that fetched lately.
const maxRecentFetchers = 4096

// recentSet holds the last max distinct names added, the oldest dropped
// first: bounded memory whatever names clients make up.
type recentSet struct {
	mu    sync.Mutex
	max   int
	names map[string]bool
	order []string // ring of the names, oldest at next
	next  int
}

func newRecentSet(max int) *recentSet {
	return &recentSet{max: max, names: map[string]bool{}}
}

// add records name; called by Fetch for its group.
func (s *recentSet) add(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[name] {
		return
	}
	if len(s.order) < s.max {
		s.order = append(s.order, name)
	} else {
		delete(s.names, s.order[s.next])
		s.order[s.next] = name
		s.next = (s.next + 1) % s.max
	}
	s.names[name] = true
}

func (s *recentSet) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[name]
}
