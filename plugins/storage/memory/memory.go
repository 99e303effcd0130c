// Package memory is a storage plugin that keeps every queue in memory. It is
// fast and loses everything when its process ends: use it for demos and tests,
// and the file store for anything that must survive a restart.
package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Config is the memory store's config section.
type Config struct {
	// MaxMessages bounds each queue; the oldest messages are dropped past
	// it (retention). 0 means unbounded.
	MaxMessages int64 `json:"max_messages"`
}

// Store is an in-memory sdk.Storage.
type Store struct {
	mu      sync.RWMutex
	cfg     Config
	queues  map[qref]*queue
	offsets map[string]map[qref]int64 // group → queue → next offset
	ready   bool
}

var (
	_ sdk.Storage      = (*Store)(nil)
	_ sdk.EarlyOffsets = (*Store)(nil)
)

// qref names a queue as a map key.
type qref struct {
	Topic string
	Queue int32
}

type queue struct {
	start int64          // offset of msgs[0]
	msgs  []*sdk.Message // offsets start .. start+len-1
	ids   map[string]int64
	ring  []string // recent ids in append order, for evicting ids
	next  int      // next ring slot
}

// New returns an unconfigured store.
func New() *Store {
	return &Store{queues: map[qref]*queue{}, offsets: map[string]map[qref]int64{}}
}

func (s *Store) Validate(config []byte) sdk.Problems {
	var cfg Config
	if ps := sdk.DecodeConfig(config, &cfg); ps != nil {
		return ps
	}
	if cfg.MaxMessages < 0 {
		return sdk.Problems{{Path: "max_messages", Message: fmt.Sprintf("must be 0 (unbounded) or more, got %d", cfg.MaxMessages)}}
	}
	return nil
}

func (s *Store) Configure(_ context.Context, config []byte, _ *sdk.Environment) error {
	var cfg Config
	if ps := sdk.DecodeConfig(config, &cfg); ps != nil {
		return ps
	}
	s.mu.Lock()
	s.cfg, s.ready = cfg, true
	s.mu.Unlock()
	return nil
}

func (s *Store) Close() error { return nil }

func (s *Store) queue(ref qref, create bool) *queue {
	q := s.queues[ref]
	if q == nil && create {
		q = &queue{ids: map[string]int64{}, ring: make([]string, sdk.DedupWindow)}
		s.queues[ref] = q
	}
	return q
}

// AppendEarly is Append with its offsets told at once (sdk.EarlyOffsets):
// a batch is as durable as it gets when Append returns.
func (s *Store) AppendEarly(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWritten, sdk.AppendWait, error) {
	offsets, err := s.append(msgs)
	if err != nil {
		return nil, nil, err
	}
	return sdk.Written(offsets), sdk.Appended(offsets), nil
}

func (s *Store) Append(_ context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	offsets, err := s.append(msgs)
	if err != nil {
		return nil, err
	}
	return sdk.Appended(offsets), nil
}

func (s *Store) append(msgs []*sdk.Message) ([]int64, error) {
	for _, m := range msgs {
		if m.Topic == "" || m.Queue < 0 {
			return nil, fmt.Errorf("%w: message %q needs a topic and a queue >= 0", sdk.ErrInvalidArgument, m.Id)
		}
	}
	now := time.Now().UnixNano()
	offsets := make([]int64, len(msgs))
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		return nil, sdk.ErrNotConfigured
	}
	for i, m := range msgs {
		q := s.queue(qref{Topic: m.Topic, Queue: m.Queue}, true)
		if m.Id != "" {
			if off, dup := q.ids[m.Id]; dup {
				offsets[i] = off
				continue
			}
		}
		off := q.start + int64(len(q.msgs))
		m.Offset, m.StoredUnixNano = off, now
		q.msgs = append(q.msgs, m)
		offsets[i] = off
		if m.Id != "" {
			if old := q.ring[q.next]; old != "" {
				delete(q.ids, old)
			}
			q.ring[q.next] = m.Id
			q.next = (q.next + 1) % len(q.ring)
			q.ids[m.Id] = off
		}
		if max := s.cfg.MaxMessages; max > 0 && int64(len(q.msgs)) > max {
			drop := int64(len(q.msgs)) - max
			clear(q.msgs[:drop])
			q.msgs = q.msgs[drop:]
			q.start += drop
		}
	}
	return offsets, nil
}

func (s *Store) Read(_ context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	if req.Topic == "" || req.Queue < 0 {
		return nil, fmt.Errorf("%w: read needs a topic and a queue >= 0", sdk.ErrInvalidArgument)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.ready {
		return nil, sdk.ErrNotConfigured
	}
	resp := &sdk.ReadResponse{Offsets: &sdk.QueueOffsets{Topic: req.Topic, Queue: req.Queue, Committed: -1}}
	q := s.queue(qref{Topic: req.Topic, Queue: req.Queue}, false)
	if q == nil {
		return resp, nil
	}
	end := q.start + int64(len(q.msgs))
	resp.Offsets.Start, resp.Offsets.End = q.start, end
	from := max(req.Offset, q.start)
	var bytes int64
	for off := from; off < end; off++ {
		if req.MaxMessages > 0 && len(resp.Messages) >= int(req.MaxMessages) {
			break
		}
		m := q.msgs[off-q.start]
		size := int64(len(m.Body))
		if req.MaxBytes > 0 && len(resp.Messages) > 0 && bytes+size > req.MaxBytes {
			break
		}
		bytes += size
		resp.Messages = append(resp.Messages, m)
	}
	return resp, nil
}

func (s *Store) CommitOffsets(_ context.Context, group string, offsets []*sdk.GroupOffset) error {
	if group == "" {
		return fmt.Errorf("%w: commit needs a group", sdk.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.offsets[group]
	if g == nil {
		g = map[qref]int64{}
		s.offsets[group] = g
	}
	for _, o := range offsets {
		if o.Topic == "" || o.Queue < 0 || o.Offset < 0 {
			return fmt.Errorf("%w: bad offset %v", sdk.ErrInvalidArgument, o)
		}
		g[qref{Topic: o.Topic, Queue: o.Queue}] = o.Offset
	}
	return nil
}

func (s *Store) GetOffsets(_ context.Context, group string, queues []*sdk.QueueRef) ([]*sdk.QueueOffsets, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*sdk.QueueOffsets, len(queues))
	for i, ref := range queues {
		o := &sdk.QueueOffsets{Topic: ref.Topic, Queue: ref.Queue, Committed: -1}
		if q := s.queue(qref{Topic: ref.Topic, Queue: ref.Queue}, false); q != nil {
			o.Start, o.End = q.start, q.start+int64(len(q.msgs))
		}
		if c, ok := s.offsets[group][qref{Topic: ref.Topic, Queue: ref.Queue}]; ok {
			o.Committed = c
		}
		out[i] = o
	}
	return out, nil
}

var _ sdk.GroupStore = (*Store)(nil)

// StoredGroups lists the groups with committed offsets (sdk.GroupStore).
func (s *Store) StoredGroups(context.Context) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for g, offs := range s.offsets {
		if len(offs) > 0 {
			out = append(out, g)
		}
	}
	return out, nil
}

// DeleteGroupOffsets forgets group's committed offsets (sdk.GroupStore).
func (s *Store) DeleteGroupOffsets(_ context.Context, group string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.offsets, group)
	return nil
}

var _ sdk.TopicDeleter = (*Store)(nil)

// DeleteTopicData drops topic's messages (each queue's start moves to its
// end) and every group's offsets on it (sdk.TopicDeleter).
func (s *Store) DeleteTopicData(_ context.Context, topic string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ref, q := range s.queues {
		if ref.Topic == topic {
			q.start += int64(len(q.msgs))
			q.msgs = nil
			clear(q.ids)
			clear(q.ring)
		}
	}
	for _, g := range s.offsets {
		for ref := range g {
			if ref.Topic == topic {
				delete(g, ref)
			}
		}
	}
	return nil
}

var _ sdk.TimeSeeker = (*Store)(nil)

// OffsetsForTime finds each queue's first message stored at or after
// unixNano (sdk.TimeSeeker) by looking at the messages it holds, oldest
// first: the memory store keeps every message's StoredUnixNano anyway.
func (s *Store) OffsetsForTime(_ context.Context, unixNano int64, queues []*sdk.QueueRef) ([]int64, error) {
	for _, ref := range queues {
		if ref.GetTopic() == "" || ref.GetQueue() < 0 {
			return nil, fmt.Errorf("%w: seeking by time needs a topic and a queue >= 0", sdk.ErrInvalidArgument)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.ready {
		return nil, sdk.ErrNotConfigured
	}
	out := make([]int64, len(queues))
	for i, ref := range queues {
		q := s.queue(qref{Topic: ref.Topic, Queue: ref.Queue}, false)
		if q == nil {
			continue
		}
		out[i] = q.start + int64(len(q.msgs))
		for j, m := range q.msgs {
			if m.StoredUnixNano >= unixNano {
				out[i] = q.start + int64(j)
				break
			}
		}
	}
	return out, nil
}

var _ sdk.QueueSizer = (*Store)(nil)

// QueueBytes sums the encoded size of each queue's messages
// (sdk.QueueSizer): what the store holds of them, without its own
// bookkeeping. An unknown queue holds 0.
func (s *Store) QueueBytes(_ context.Context, queues []*sdk.QueueRef) ([]int64, error) {
	for _, ref := range queues {
		if ref.GetTopic() == "" || ref.GetQueue() < 0 {
			return nil, fmt.Errorf("%w: sizing a queue needs a topic and a queue >= 0", sdk.ErrInvalidArgument)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.ready {
		return nil, sdk.ErrNotConfigured
	}
	out := make([]int64, len(queues))
	for i, ref := range queues {
		if q := s.queue(qref{Topic: ref.Topic, Queue: ref.Queue}, false); q != nil {
			for _, m := range q.msgs {
				out[i] += int64(m.SizeVT())
			}
		}
	}
	return out, nil
}
