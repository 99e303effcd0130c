package client

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// heartbeat tells the broker the member is alive (or leaving) and returns
// the group's live members per topic of rt.topics, sorted (every topic gets
// the whole group from a broker that does not tell them apart).
func (rt *runtime) heartbeat(ctx context.Context, leave bool) (map[string][]string, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := rt.c.rpc.Heartbeat(cctx, &ferryv1.HeartbeatRequest{
		Group: rt.group, Member: rt.opts.Member, Topics: rt.topics, Leave: leave, Ephemeral: rt.opts.Ephemeral,
		SessionTimeoutNanos: int64(rt.opts.SessionTimeout), Queues: rt.held(),
	}, grpc.WaitForReady(!leave))
	if err != nil {
		return nil, rt.c.callError("heartbeat", err)
	}
	if resp.Generation != 0 && !leave {
		// Carried on the commits from now on: one sent before a deletion
		// of the group and arriving after it is refused (a deletion
		// forced while the member lives is learned here, and its next
		// commits start the group again, as they did before generations).
		rt.generation.Store(resp.Generation)
	}
	out := make(map[string][]string, len(rt.topics))
	for _, t := range rt.topics {
		out[t] = resp.Members
	}
	for _, tm := range resp.TopicMembers {
		if _, ok := out[tm.Topic]; ok {
			out[tm.Topic] = tm.Members
		}
	}
	return out, nil
}

// held lists the queues the member owns now, sorted, for the broker's
// DescribeGroup (the heartbeat reports them).
func (rt *runtime) held() []*ferryv1.QueueRef {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make([]*ferryv1.QueueRef, 0, len(rt.lanes))
	for r, l := range rt.lanes {
		if !l.revoked {
			out = append(out, &ferryv1.QueueRef{Topic: r.topic, Queue: r.queue})
		}
	}
	slices.SortFunc(out, func(a, b *ferryv1.QueueRef) int {
		if a.Topic != b.Topic {
			return strings.Compare(a.Topic, b.Topic)
		}
		return int(a.Queue - b.Queue)
	})
	return out
}

// heartbeatLoop heartbeats every HeartbeatInterval and takes the share of
// the queues the member list gives. While the broker cannot be reached the
// consumer keeps its queues.
func (rt *runtime) heartbeatLoop() {
	defer rt.bg.Done()
	t := time.NewTicker(rt.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-rt.ctx.Done():
			return
		}
		rt.refreshCounts(rt.ctx)
		want, err := rt.share(rt.ctx)
		if err == nil {
			err = rt.assign(rt.ctx, want)
		}
		if err != nil && rt.ctx.Err() == nil {
			rt.log.Warn("ferry consumer: heartbeat or rebalance failed; keeping the current queues", "group", rt.group, "member", rt.opts.Member, "error", err)
		}
	}
}

// refreshCounts re-reads the queue counts of the consumer's own topics (a
// topic can grow at runtime: Broker.AlterTopic), so that a new queue gets an
// owner at the next rebalance, as RocketMQ's clients refresh their routes.
// Internal topics keep theirs (fixed). A failed read keeps the old count.
func (rt *runtime) refreshCounts(ctx context.Context) {
	if rt.opts.Queues != nil {
		return
	}
	for _, topic := range rt.topics {
		if _, _, internal := sdk.InternalTopic(topic); internal {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		rt.c.forgetTopic(topic)
		n, err := rt.c.queueCount(cctx, topic)
		cancel()
		if err == nil && n > rt.counts[topic] {
			rt.log.Info("ferry consumer: topic grew; rebalancing its queues", "group", rt.group, "topic", topic, "from", rt.counts[topic], "to", n)
			rt.counts[topic] = n
		}
	}
}

// share returns the queues this consumer should own now: the given Queues,
// every queue (broadcast), or its share of each topic's queues among the
// group's live members (after a heartbeat).
func (rt *runtime) share(ctx context.Context) ([]queueRef, error) {
	o := rt.opts
	if o.Queues != nil {
		var out []queueRef
		for _, q := range o.Queues {
			out = append(out, queueRef{o.Topic, q})
		}
		return out, nil
	}
	members := map[string][]string{}
	if o.Broadcast {
		for _, t := range rt.topics {
			members[t] = []string{o.Member}
		}
	} else {
		var err error
		if members, err = rt.heartbeat(ctx, false); err != nil {
			return nil, err
		}
	}
	var out []queueRef
	for _, topic := range rt.topics {
		for _, q := range Allocate(allQueues(rt.counts[topic]), members[topic], o.Member) {
			out = append(out, queueRef{topic, q})
		}
	}
	return out, nil
}

// Allocate is RocketMQ's AllocateMessageQueueAveragely: it splits queues
// (sorted) into len(members) contiguous ranges, the first len(queues) %
// len(members) members getting one more, and returns member's range. members
// must be sorted and the same on every member for the shares to agree;
// a member not in the list gets nothing.
func Allocate(queues []int32, members []string, member string) []int32 {
	idx := slices.Index(members, member)
	n, m := len(queues), len(members)
	if idx < 0 || n == 0 {
		return nil
	}
	mod := n % m
	size := n / m
	if n <= m {
		size = 1
	} else if mod > 0 && idx < mod {
		size++
	}
	start := idx*size + mod
	if mod > 0 && idx < mod {
		start = idx * size
	}
	var out []int32
	for i := range min(size, n-start) {
		out = append(out, queues[(start+i)%n])
	}
	return out
}

// assign makes the consumer own exactly want: queues it no longer owns are
// revoked (fetched no more; their unprocessed deliveries are abandoned,
// those in progress finish and are committed), new ones start at the
// group's committed offset.
func (rt *runtime) assign(ctx context.Context, want []queueRef) error {
	wanted := make(map[queueRef]bool, len(want))
	for _, r := range want {
		wanted[r] = true
	}
	rt.mu.Lock()
	var add []queueRef
	for _, r := range want {
		if l := rt.lanes[r]; l == nil || l.revoked {
			add = append(add, r)
		}
	}
	revoked := false
	for r, l := range rt.lanes {
		if !wanted[r] && !l.revoked {
			l.revoked, revoked = true, true
			for _, d := range l.queued {
				rt.abandonLocked(d)
			}
			l.queued = nil
			rt.log.Debug("ferry consumer: queue revoked", "group", rt.group, "member", rt.opts.Member, "topic", r.topic, "queue", r.queue)
		}
	}
	rt.wakeLocked()
	rt.mu.Unlock()
	if revoked {
		select {
		case rt.kick <- struct{}{}: // commit what the revoked queues processed
		default:
		}
	}
	if len(add) == 0 {
		return nil
	}
	refs := make([]*ferryv1.QueueRef, len(add))
	for i, r := range add {
		refs[i] = &ferryv1.QueueRef{Topic: r.topic, Queue: r.queue}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	offs, err := rt.c.GetOffsets(cctx, rt.group, refs)
	if err != nil {
		return err
	}
	if len(offs) != len(add) {
		return rt.c.callError("get offsets", errShortAnswer)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for i, r := range add {
		if l := rt.lanes[r]; l != nil && !l.revoked {
			continue
		}
		rt.lanes[r] = rt.newLane(r, offs[i])
		rt.log.Debug("ferry consumer: queue assigned", "group", rt.group, "member", rt.opts.Member, "topic", r.topic, "queue", r.queue, "from", rt.lanes[r].next)
	}
	rt.wakeLocked()
	return nil
}

// newLane starts a lane at the group's committed offset, or where StartAt
// says when the group never committed (the retry topic: its earliest),
// within the queue's stored range.
func (rt *runtime) newLane(r queueRef, o *ferryv1.QueueOffsets) *lane {
	l := &lane{ref: r, retry: r.topic != rt.opts.Topic, committed: o.Committed, next: o.Committed, epoch: o.Epoch}
	if o.Committed < 0 {
		l.next = o.Start
		if !l.retry && rt.opts.StartAt == StartCommittedOrLatest {
			l.next = o.End
		}
	}
	switch {
	case l.next < o.Start:
		rt.log.Warn("ferry consumer: messages removed before they were consumed; moving on",
			"topic", r.topic, "group", rt.group, "queue", r.queue, "from", l.next, "to", o.Start)
		l.next = o.Start
	case l.next > o.End:
		rt.log.Warn("ferry consumer: committed offset past the end of the queue; moving back",
			"topic", r.topic, "group", rt.group, "queue", r.queue, "from", l.next, "to", o.End)
		l.next = o.End
	}
	l.commitTo = l.next
	return l
}
