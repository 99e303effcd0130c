package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// memCore is a test double of the broker core (sdk.Core) that behaves like a
// log: per-queue offsets from 0, de-duplication by message id as storage does,
// committed offsets per group, long-polling Fetch.
type memCore struct {
	mu        sync.Mutex
	topics    map[string]int32
	queues    map[queueKey]*memQueue
	committed map[groupKey]int64
	commits   []commitRecord // every commit, in order
	changed   chan struct{}  // closed and replaced on every append

	// beforeStore, when set, runs before a produce request is stored; an
	// error fails the request with nothing stored.
	beforeStore func(ctx context.Context, req *ferryv1.ProduceRequest) error
	// afterStore, when set, runs after a request was stored and before it
	// is answered (a stall here is an answer lost in transit).
	afterStore func(ctx context.Context, req *ferryv1.ProduceRequest)

	produceCalls atomic.Int64
	fetchCalls   atomic.Int64
}

type queueKey struct {
	topic string
	queue int32
}

type groupKey struct {
	group string
	queueKey
}

type commitRecord struct {
	group  string
	queue  int32
	offset int64
}

type memQueue struct {
	start int64
	msgs  []*ferryv1.Message // msgs[i] has offset start+i
	ids   map[string]int64
}

func (q *memQueue) end() int64 { return q.start + int64(len(q.msgs)) }

var _ sdk.Core = (*memCore)(nil)

func newMemCore(topics map[string]int32) *memCore {
	c := &memCore{topics: topics, queues: map[queueKey]*memQueue{}, committed: map[groupKey]int64{}, changed: make(chan struct{})}
	for t, n := range topics {
		for q := range n {
			c.queues[queueKey{t, q}] = &memQueue{ids: map[string]int64{}}
		}
	}
	return c
}

func (c *memCore) Produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	c.produceCalls.Add(1)
	if c.beforeStore != nil {
		if err := c.beforeStore(ctx, req); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	offsets := make([]int64, len(req.Messages))
	for _, m := range req.Messages {
		if _, ok := c.topics[m.Topic]; !ok {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: topic %q", sdk.ErrNotFound, m.Topic)
		}
		if c.queues[queueKey{m.Topic, m.Queue}] == nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: topic %q has no queue %d", sdk.ErrNotFound, m.Topic, m.Queue)
		}
	}
	for i, m := range req.Messages {
		q := c.queues[queueKey{m.Topic, m.Queue}]
		if off, ok := q.ids[m.Id]; ok {
			offsets[i] = off
			continue
		}
		s := proto.Clone(m).(*ferryv1.Message)
		s.Offset, s.StoredUnixNano = q.end(), time.Now().UnixNano()
		q.ids[m.Id] = s.Offset
		q.msgs = append(q.msgs, s)
		offsets[i] = s.Offset
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if c.afterStore != nil {
		c.afterStore(ctx, req)
	}
	return &ferryv1.ProduceResponse{Offsets: offsets, Status: ferryv1.Status_STATUS_OK}, nil
}

func (c *memCore) Fetch(ctx context.Context, req *ferryv1.FetchRequest) (*ferryv1.FetchResponse, error) {
	c.fetchCalls.Add(1)
	deadline := time.Now().Add(time.Duration(req.MaxWaitNanos))
	for {
		c.mu.Lock()
		if _, ok := c.topics[req.Topic]; !ok {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: topic %q", sdk.ErrNotFound, req.Topic)
		}
		resp := &ferryv1.FetchResponse{}
		for _, p := range req.Positions {
			q := c.queues[queueKey{req.Topic, p.Queue}]
			if q == nil {
				c.mu.Unlock()
				return nil, fmt.Errorf("%w: topic %q has no queue %d", sdk.ErrNotFound, req.Topic, p.Queue)
			}
			resp.Offsets = append(resp.Offsets, &ferryv1.QueueOffsets{Topic: req.Topic, Queue: p.Queue, Start: q.start, End: q.end(), Committed: -1})
			for off := max(p.Offset, q.start); off < q.end() && len(resp.Messages) < int(req.MaxMessages); off++ {
				resp.Messages = append(resp.Messages, proto.Clone(q.msgs[off-q.start]).(*ferryv1.Message))
			}
		}
		changed := c.changed
		c.mu.Unlock()
		wait := time.Until(deadline)
		if len(resp.Messages) > 0 || wait <= 0 {
			return resp, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

func (c *memCore) CommitOffsets(_ context.Context, req *ferryv1.CommitOffsetsRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range req.Offsets {
		c.committed[groupKey{req.Group, queueKey{o.Topic, o.Queue}}] = o.Offset
		c.commits = append(c.commits, commitRecord{req.Group, o.Queue, o.Offset})
	}
	return nil
}

func (c *memCore) GetOffsets(_ context.Context, req *ferryv1.GetOffsetsRequest) (*ferryv1.GetOffsetsResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &ferryv1.GetOffsetsResponse{}
	for _, r := range req.Queues {
		o := &ferryv1.QueueOffsets{Topic: r.Topic, Queue: r.Queue, Committed: -1}
		if q := c.queues[queueKey{r.Topic, r.Queue}]; q != nil {
			o.Start, o.End = q.start, q.end()
		}
		if off, ok := c.committed[groupKey{req.Group, queueKey{r.Topic, r.Queue}}]; ok && req.Group != "" {
			o.Committed = off
		}
		resp.Offsets = append(resp.Offsets, o)
	}
	return resp, nil
}

func (c *memCore) Metadata(_ context.Context, req *ferryv1.MetadataRequest) (*ferryv1.MetadataResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &ferryv1.MetadataResponse{Brokers: []*ferryv1.BrokerInfo{{Node: "test", Role: "master"}}}
	add := func(t string) {
		if n, ok := c.topics[t]; ok {
			resp.Topics = append(resp.Topics, &ferryv1.TopicInfo{Name: t, Queues: n, Leaders: make([]int32, n)})
		}
	}
	if len(req.Topics) == 0 {
		for t := range c.topics {
			add(t)
		}
	}
	for _, t := range req.Topics {
		add(t)
	}
	return resp, nil
}

// stored returns a queue's messages.
func (c *memCore) Heartbeat(_ context.Context, req *ferryv1.HeartbeatRequest) (*ferryv1.HeartbeatResponse, error) {
	return &ferryv1.HeartbeatResponse{Members: []string{req.Member}}, nil
}

func (c *memCore) stored(topic string, queue int32) []*ferryv1.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ferryv1.Message(nil), c.queues[queueKey{topic, queue}].msgs...)
}

// storedCount counts a topic's messages.
func (c *memCore) storedCount(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, q := range c.queues {
		if k.topic == topic {
			n += len(q.msgs)
		}
	}
	return n
}

// committedOffset is the group's committed offset on a queue, -1 if none.
func (c *memCore) committedOffset(group, topic string, queue int32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off, ok := c.committed[groupKey{group, queueKey{topic, queue}}]; ok {
		return off
	}
	return -1
}

// truncate drops a queue's messages below start, as retention does.
func (c *memCore) truncate(topic string, queue int32, start int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[queueKey{topic, queue}]
	q.msgs = q.msgs[start-q.start:]
	q.start = start
}

// setQueues changes a topic's queue count, dropping or adding queues.
func (c *memCore) setQueues(topic string, n int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for q := range max(n, c.topics[topic]) {
		k := queueKey{topic, q}
		switch {
		case q >= n:
			delete(c.queues, k)
		case c.queues[k] == nil:
			c.queues[k] = &memQueue{ids: map[string]int64{}}
		}
	}
	c.topics[topic] = n
}
