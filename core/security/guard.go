package security

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Guard is the broker core as a transport sees it on a node with users: it
// authenticates every call from the credentials its transport attached
// (sdk.ClientCredentialsFrom), checks the caller's permissions, and only
// then hands the call to the core. It is the one place where clients are
// checked, for every transport and both data planes.
//
// What each call needs (a group's retry and dead-letter topics,
// %RETRY%<group> and %DLQ%<group>, count as the group, Group:<group>):
//
//	Produce        Pub on the topic (Sub on the group for its retry and DLQ topics)
//	Fetch          Sub on the topic, and Sub on the group when one is named
//	CommitOffsets  Sub on the group and on each topic; Delete on group g to move
//	               the cursor of g's dead-letter queue (ferry dlq purge, redrive)
//	GetOffsets     Sub or Get on the group and on each topic
//	Heartbeat      Sub on the group and on each topic; a member id is bound to
//	               the user that first heartbeats it, until it leaves or expires
//	Metadata       named topics: Get, Pub or Sub on each; all topics: List on
//	               Cluster, else only the topics the user has any of Get, Pub,
//	               Sub or List on are listed
//	CreateTopic    Create on the topic
//	AlterTopic     Update on the topic
//	DeleteTopic    Delete on the topic
//	ListGroups     List on Cluster, else only the groups the user has any of
//	               Get, Sub or List on are listed
//	DescribeGroup  Get on the group
//	ResetOffsets   Update on the group
//	DeleteGroup    Delete on the group
type Guard struct {
	next   sdk.Core
	admin  sdk.TopicAdmin // nil when next has no topic calls
	groups sdk.GroupAdmin // nil when next has no group calls
	auth   *Auth

	members members
}

var (
	_ sdk.Core       = (*Guard)(nil)
	_ sdk.TopicAdmin = (*Guard)(nil)
	_ sdk.GroupAdmin = (*Guard)(nil)
)

// NewGuard returns next guarded by auth.
func NewGuard(next sdk.Core, auth *Auth) *Guard {
	g := &Guard{next: next, auth: auth, members: members{owners: map[memberKey]owner{}, now: time.Now}}
	g.admin, _ = next.(sdk.TopicAdmin)
	g.groups, _ = next.(sdk.GroupAdmin)
	return g
}

// enter authenticates the call of ctx.
func (g *Guard) enter(ctx context.Context) (*Principal, error) {
	return g.auth.Authenticate(sdk.ClientCredentialsFrom(ctx))
}

// topicResource is the resource that governs topic: the topic, or for a
// group's retry and dead-letter topics the group.
func topicResource(topic string) Resource {
	if g, _, ok := sdk.InternalTopic(topic); ok {
		return Group(g)
	}
	return Topic(topic)
}

// topicAction is act on a topic, or, when it is a group's retry or
// dead-letter topic, act on the group that owns it with Pub read as Sub (a
// consumer writes them as part of consuming).
func topicAction(act Action, topic string) (Action, Resource) {
	r := topicResource(topic)
	if r.Type == GroupResource && act&Pub != 0 {
		act = act&^Pub | Sub
	}
	return act, r
}

func (g *Guard) check(p *Principal, act Action, r Resource) error { return g.auth.Authorize(p, act, r) }

func (g *Guard) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	var last string
	for i, m := range req.Messages {
		if i > 0 && m.Topic == last {
			continue
		}
		last = m.Topic
		if err := g.checkTopic(p, Pub, m.Topic); err != nil {
			return nil, err
		}
	}
	return g.next.Produce(ctx, req)
}

// checkTopic is Authorize of act on topic, by the rule of topicAction.
func (g *Guard) checkTopic(p *Principal, act Action, topic string) error {
	a, r := topicAction(act, topic)
	return g.auth.Authorize(p, a, r)
}

func (g *Guard) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	return g.fetch(ctx, req, g.next.Fetch)
}

var _ sdk.ProducePreparer = (*Guard)(nil)

// PrepareProduce passes the hint on (sdk.ProducePreparer); a produce the
// guard then refuses costs the store one wake-up.
func (g *Guard) PrepareProduce() {
	if p, ok := g.next.(sdk.ProducePreparer); ok {
		p.PrepareProduce()
	}
}

var _ sdk.WireFetcher = (*Guard)(nil)

// FetchWire is Fetch, the answer's messages in their wire form where the
// core behind the guard can (sdk.WireFetcher).
func (g *Guard) FetchWire(ctx context.Context, req *sdk.FetchRequest) (resp *sdk.FetchResponse, parts []sdk.EncodedMessages, err error) {
	wf, ok := g.next.(sdk.WireFetcher)
	if !ok {
		resp, err = g.Fetch(ctx, req)
		return resp, nil, err
	}
	resp, err = g.fetch(ctx, req, func(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
		var err error
		resp, parts, err = wf.FetchWire(ctx, req)
		return resp, err
	})
	return resp, parts, err
}

func (g *Guard) fetch(ctx context.Context, req *sdk.FetchRequest, next func(context.Context, *sdk.FetchRequest) (*sdk.FetchResponse, error)) (*sdk.FetchResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.checkTopic(p, Sub, req.Topic); err != nil {
		return nil, err
	}
	if req.Group != "" {
		if err := g.checkGroup(p, Sub, req.Group); err != nil {
			return nil, err
		}
	}
	return next(ctx, req)
}

// checkGroup is Authorize of act on a group; a group named like a group's
// internal topic (the cursor of a dead-letter queue is the group
// %DLQ%<group>) counts as that group.
func (g *Guard) checkGroup(p *Principal, act Action, group string) error {
	if owner, _, ok := sdk.InternalTopic(group); ok {
		group = owner
	}
	return g.auth.Authorize(p, act, Group(group))
}

func (g *Guard) CommitOffsets(ctx context.Context, req *sdk.CommitOffsetsRequest) error {
	p, err := g.enter(ctx)
	if err != nil {
		return err
	}
	act := Sub
	if owner, _, ok := sdk.InternalTopic(req.Group); ok && req.Group == sdk.DLQTopic(owner) {
		// Moving a dead-letter queue's cursor drops dead letters.
		act = Delete
	}
	if err := g.checkGroup(p, act, req.Group); err != nil {
		return err
	}
	for _, o := range req.Offsets {
		if err := g.checkTopic(p, Sub, o.GetTopic()); err != nil {
			return err
		}
	}
	err = g.next.CommitOffsets(ctx, req)
	if act == Delete {
		// ferry dlq purge or redrive: dead letters skipped.
		g.audit(p, act, Group(req.Group), err)
	}
	return err
}

func (g *Guard) GetOffsets(ctx context.Context, req *sdk.GetOffsetsRequest) (*sdk.GetOffsetsResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if req.Group != "" {
		if err := g.checkGroup(p, Sub|Get, req.Group); err != nil {
			return nil, err
		}
	}
	for _, q := range req.Queues {
		if err := g.checkTopic(p, Sub|Get, q.GetTopic()); err != nil {
			return nil, err
		}
	}
	return g.next.GetOffsets(ctx, req)
}

func (g *Guard) Metadata(ctx context.Context, req *sdk.MetadataRequest) (*sdk.MetadataResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	auto := req.AutoCreate
	for _, t := range req.Topics {
		if err := g.checkTopic(p, Get|Pub|Sub, t); err != nil {
			return nil, err
		}
		// Auto-creation is part of publishing: only for a user who may
		// publish to every topic named.
		auto = auto && g.checkTopic(p, Pub, t) == nil
	}
	if auto != req.AutoCreate {
		req = &sdk.MetadataRequest{Topics: req.Topics}
	}
	resp, err := g.next.Metadata(ctx, req)
	if err != nil || resp == nil || len(req.Topics) > 0 || p.Allowed(List, Cluster) {
		return resp, err
	}
	// A listing of all topics shows only those the user may see.
	out := &sdk.MetadataResponse{Brokers: resp.Brokers}
	for _, t := range resp.Topics {
		if a, r := topicAction(Get|Pub|Sub|List, t.GetName()); p.Allowed(a, r) {
			out.Topics = append(out.Topics, t)
		}
	}
	return out, nil
}

func (g *Guard) Heartbeat(ctx context.Context, req *sdk.HeartbeatRequest) (*sdk.HeartbeatResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.checkGroup(p, Sub, req.Group); err != nil {
		return nil, err
	}
	for _, t := range req.Topics {
		if err := g.checkTopic(p, Sub, t); err != nil {
			return nil, err
		}
	}
	if err := g.members.claim(p.User, req); err != nil {
		g.auth.denied(p, "Heartbeat", Group(req.Group).String(), "member", req.Member)
		return nil, err
	}
	return g.next.Heartbeat(ctx, req)
}

func (g *Guard) CreateTopic(ctx context.Context, req *sdk.CreateTopicRequest) (*sdk.CreateTopicResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.check(p, Create, Topic(req.Name)); err != nil {
		return nil, err
	}
	if g.admin == nil {
		return nil, fmt.Errorf("%w: this broker core has no topic administration", errors.ErrUnsupported)
	}
	resp, err := g.admin.CreateTopic(ctx, req)
	g.audit(p, Create, Topic(req.Name), err)
	return resp, err
}

func (g *Guard) AlterTopic(ctx context.Context, req *sdk.AlterTopicRequest) (*sdk.AlterTopicResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.check(p, Update, Topic(req.Name)); err != nil {
		return nil, err
	}
	if g.admin == nil {
		return nil, fmt.Errorf("%w: this broker core has no topic administration", errors.ErrUnsupported)
	}
	resp, err := g.admin.AlterTopic(ctx, req)
	g.audit(p, Update, Topic(req.Name), err)
	return resp, err
}

func (g *Guard) DeleteTopic(ctx context.Context, req *sdk.DeleteTopicRequest) (*sdk.DeleteTopicResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.check(p, Delete, Topic(req.Name)); err != nil {
		return nil, err
	}
	if g.admin == nil {
		return nil, fmt.Errorf("%w: this broker core has no topic administration", errors.ErrUnsupported)
	}
	resp, err := g.admin.DeleteTopic(ctx, req)
	g.audit(p, Delete, Topic(req.Name), err)
	return resp, err
}

// groupCall checks act on group, then makes the core's group call.
func groupCall[Resp any](g *Guard, ctx context.Context, act Action, group string, call func(sdk.GroupAdmin) (*Resp, error)) (*Resp, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.check(p, act, Group(group)); err != nil {
		return nil, err
	}
	if g.groups == nil {
		return nil, fmt.Errorf("%w: this broker core has no group administration", errors.ErrUnsupported)
	}
	resp, err := call(g.groups)
	if act != Get {
		g.audit(p, act, Group(group), err)
	}
	return resp, err
}

// audit logs an administrative action that was allowed, with who did it,
// from where, on what and how it ended: one structured line an event
// (docs/security.md, "Audit log"). Denials are logged by Authorize.
func (g *Guard) audit(p *Principal, act Action, r Resource, err error) {
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	g.auth.log.Info("audit: admin action", "user", p.User, "source", p.Addr, "action", act.String(), "resource", r.String(), "result", result)
}

func (g *Guard) ListGroups(ctx context.Context, req *sdk.ListGroupsRequest) (*sdk.ListGroupsResponse, error) {
	p, err := g.enter(ctx)
	if err != nil {
		return nil, err
	}
	if g.groups == nil {
		return nil, fmt.Errorf("%w: this broker core has no group administration", errors.ErrUnsupported)
	}
	resp, err := g.groups.ListGroups(ctx, req)
	if err != nil || resp == nil || p.Allowed(List, Cluster) {
		return resp, err
	}
	// Only the groups the user has rights on.
	kept := resp.Groups[:0]
	for _, s := range resp.Groups {
		if p.Allowed(Get|Sub|List, Group(s.Name)) {
			kept = append(kept, s)
		}
	}
	resp.Groups = kept
	return resp, nil
}

func (g *Guard) DescribeGroup(ctx context.Context, req *sdk.DescribeGroupRequest) (*sdk.DescribeGroupResponse, error) {
	return groupCall(g, ctx, Get, req.Group, func(a sdk.GroupAdmin) (*sdk.DescribeGroupResponse, error) { return a.DescribeGroup(ctx, req) })
}

func (g *Guard) ResetOffsets(ctx context.Context, req *sdk.ResetOffsetsRequest) (*sdk.ResetOffsetsResponse, error) {
	return groupCall(g, ctx, Update, req.Group, func(a sdk.GroupAdmin) (*sdk.ResetOffsetsResponse, error) { return a.ResetOffsets(ctx, req) })
}

func (g *Guard) DeleteGroup(ctx context.Context, req *sdk.DeleteGroupRequest) (*sdk.DeleteGroupResponse, error) {
	return groupCall(g, ctx, Delete, req.Group, func(a sdk.GroupAdmin) (*sdk.DeleteGroupResponse, error) { return a.DeleteGroup(ctx, req) })
}

// members binds consumer-group member ids to the users that heartbeat
// them, so that nobody else can keep a member alive, make it leave, or
// take its queues under its id.
type members struct {
	mu     sync.Mutex
	owners map[memberKey]owner
	now    func() time.Time
	swept  time.Time
}

type memberKey struct{ group, member string }

type owner struct {
	user    string
	expires time.Time
}

// Bounds of the session timeout, as the broker applies them
// (core/broker: DefaultSessionTimeout, minSessionTimeout,
// maxSessionTimeout), and the margin a binding outlives the broker's view
// of the member by.
const (
	defaultSession = 6 * time.Second
	minSession     = 500 * time.Millisecond
	maxSession     = 5 * time.Minute
	bindMargin     = 2 * time.Second
)

// claim binds req's member to user, or refuses when another user holds it.
func (m *members) claim(user string, req *sdk.HeartbeatRequest) error {
	timeout := defaultSession
	if req.SessionTimeoutNanos > 0 {
		timeout = min(max(time.Duration(req.SessionTimeoutNanos), minSession), maxSession)
	}
	k := memberKey{req.Group, req.Member}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if now.Sub(m.swept) > time.Second {
		m.swept = now
		for k, o := range m.owners {
			if now.After(o.expires) {
				delete(m.owners, k)
			}
		}
	}
	if o, ok := m.owners[k]; ok && !now.After(o.expires) && o.user != user {
		return fmt.Errorf("%w: user %q may not heartbeat member %q of group %q: another user's consumer is that member",
			sdk.ErrPermissionDenied, user, req.Member, req.Group)
	}
	if req.Leave {
		delete(m.owners, k)
		return nil
	}
	m.owners[k] = owner{user: user, expires: now.Add(timeout + bindMargin)}
	return nil
}
