package file

import (
	"context"

	"github.com/ferrymq/ferry/core/sdk"
)

var _ sdk.QueueSizer = (*Store)(nil)

// QueueBytes sums, per queue, the sizes of its records in the log
// (sdk.QueueSizer), from the queue's start to its visible end: what its
// messages take in the segments (record headers included; the segments'
// index files and the offsets file not). The queues share the segments, so
// a queue's bytes go with retention, when the oldest segment holding them
// is removed. An unknown queue holds 0.
func (s *Store) QueueBytes(_ context.Context, queues []*sdk.QueueRef) ([]int64, error) {
	for _, r := range queues {
		if err := checkQueue(r.GetTopic(), r.GetQueue()); err != nil {
			return nil, err
		}
	}
	out := make([]int64, len(queues))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	durable := s.durable.Load()
	for i, r := range queues {
		q := s.queues[queueKey{r.Topic, r.Queue}]
		if q == nil {
			continue
		}
		for _, e := range q.ents[:q.visibleEnd(durable)-q.start] {
			out[i] += int64(e.size)
		}
	}
	return out, nil
}
