// Command ferry-storage-example is a storage plugin written out of tree, as a
// third party would: its own Go module that depends on Ferry's SDK only
// (github.com/ferrymq/ferry/core/sdk). It keeps messages in memory; build it
// as ferry-storage-example into a directory of plugins.dirs, or test it:
//
//	go build -o ferry-storage-example . && ferry plugin test storage ./ferry-storage-example
package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/sdk"
)

// Config is the plugin's config section; it has no settings yet.
type Config struct{}

type queueKey struct {
	topic string
	queue int32
}

type queue struct {
	msgs  []*sdk.Message
	ids   map[string]int64 // the de-dup window: id -> offset
	order []string         // ids in the window, oldest first
}

// store is the plugin: one mutex over every queue.
type store struct {
	mu         sync.Mutex
	configured bool
	queues     map[queueKey]*queue
	committed  map[string]map[queueKey]int64
}

func (s *store) Validate(config []byte) sdk.Problems {
	var c Config
	return sdk.DecodeConfig(config, &c)
}

func (s *store) Configure(_ context.Context, config []byte, _ *sdk.Environment) error {
	if ps := s.Validate(config); ps != nil {
		return ps
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configured = true
	s.queues = map[queueKey]*queue{}
	s.committed = map[string]map[queueKey]int64{}
	return nil
}

func (s *store) Close() error { return nil }

func checkQueue(topic string, q int32) error {
	if topic == "" || q < 0 {
		return fmt.Errorf("%w: topic %q queue %d", sdk.ErrInvalidArgument, topic, q)
	}
	return nil
}

// Append stores a batch at once; all or nothing when a message is invalid.
func (s *store) Append(_ context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.configured {
		return nil, sdk.ErrNotConfigured
	}
	for _, m := range msgs {
		if err := checkQueue(m.Topic, m.Queue); err != nil {
			return nil, err
		}
	}
	offs := make([]int64, len(msgs))
	now := time.Now().UnixNano()
	for i, m := range msgs {
		k := queueKey{m.Topic, m.Queue}
		q := s.queues[k]
		if q == nil {
			q = &queue{ids: map[string]int64{}}
			s.queues[k] = q
		}
		if off, dup := q.ids[m.Id]; dup && m.Id != "" {
			offs[i] = off
			continue
		}
		c := proto.Clone(m).(*sdk.Message) // the broker keeps m
		c.Offset, c.StoredUnixNano = int64(len(q.msgs)), now
		q.msgs = append(q.msgs, c)
		offs[i] = c.Offset
		if m.Id != "" {
			q.ids[m.Id] = c.Offset
			q.order = append(q.order, m.Id)
			if len(q.order) > sdk.DedupWindow {
				delete(q.ids, q.order[0])
				q.order = q.order[1:]
			}
		}
	}
	return sdk.Appended(offs), nil
}

func (s *store) Read(_ context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.configured {
		return nil, sdk.ErrNotConfigured
	}
	if err := checkQueue(req.Topic, req.Queue); err != nil {
		return nil, err
	}
	var all []*sdk.Message
	if q := s.queues[queueKey{req.Topic, req.Queue}]; q != nil {
		all = q.msgs
	}
	resp := &sdk.ReadResponse{Offsets: &sdk.QueueOffsets{Topic: req.Topic, Queue: req.Queue, End: int64(len(all)), Committed: -1}}
	var size int64
	for off := max(req.Offset, 0); off < int64(len(all)) && int32(len(resp.Messages)) < max(req.MaxMessages, 1); off++ {
		m := all[off]
		size += int64(len(m.Body))
		if len(resp.Messages) > 0 && req.MaxBytes > 0 && size > req.MaxBytes {
			break
		}
		resp.Messages = append(resp.Messages, m)
	}
	return resp, nil
}

func (s *store) CommitOffsets(_ context.Context, group string, offsets []*sdk.GroupOffset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.configured {
		return sdk.ErrNotConfigured
	}
	if group == "" {
		return fmt.Errorf("%w: empty group", sdk.ErrInvalidArgument)
	}
	for _, o := range offsets {
		if err := checkQueue(o.Topic, o.Queue); err != nil {
			return err
		}
	}
	if s.committed[group] == nil {
		s.committed[group] = map[queueKey]int64{}
	}
	for _, o := range offsets {
		s.committed[group][queueKey{o.Topic, o.Queue}] = o.Offset
	}
	return nil
}

func (s *store) GetOffsets(_ context.Context, group string, queues []*sdk.QueueRef) ([]*sdk.QueueOffsets, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.configured {
		return nil, sdk.ErrNotConfigured
	}
	out := make([]*sdk.QueueOffsets, len(queues))
	for i, r := range queues {
		k := queueKey{r.Topic, r.Queue}
		o := &sdk.QueueOffsets{Topic: r.Topic, Queue: r.Queue, Committed: -1}
		if q := s.queues[k]; q != nil {
			o.End = int64(len(q.msgs))
		}
		if c, ok := s.committed[group][k]; ok {
			o.Committed = c
		}
		out[i] = o
	}
	return out, nil
}

func main() { sdk.Serve(sdk.ServeOpts{Storage: &store{}}) }
