package file

import (
	"context"
	"fmt"

	"github.com/ferrymq/ferry/core/sdk"
)

var _ sdk.TopicDeleter = (*Store)(nil)

// DeleteTopicData removes every message of topic's queues and every group's
// offsets on them (sdk.TopicDeleter). The log is shared by all queues, so no
// record is removed here: each queue's start moves to its end, in memory and
// in queues.json (as retention moves it), so that nothing of the topic is
// read again, after a restart too; retention frees the space with the
// segments that held it. Offsets are not reused: a topic created again with
// the name continues from the ends. Called concurrently with everything.
func (s *Store) DeleteTopicData(_ context.Context, topic string) error {
	if err := checkQueue(topic, 0); err != nil {
		return err
	}
	s.startsMu.Lock()
	defer s.startsMu.Unlock()
	s.mu.Lock()
	if err := s.usable(); err != nil {
		s.mu.Unlock()
		return err
	}
	starts := make(map[queueKey]int64, len(s.queues))
	dropped := 0
	for k, q := range s.queues {
		if k.topic == topic {
			q.start, q.ents, q.dedup, q.times = q.end(), nil, dedup{}, timeIndex{}
			dropped++
		}
		starts[k] = q.start
	}
	s.mu.Unlock()
	if dropped > 0 {
		if err := writeQueueStarts(s.dir, starts); err != nil {
			return err
		}
	}

	s.offMu.Lock()
	changed := false
	for _, g := range s.offsets {
		for k := range g {
			if k.topic == topic {
				delete(g, k)
				changed = true
			}
		}
	}
	if !changed {
		s.offMu.Unlock()
		return nil
	}
	s.offVersion++
	mine := s.offVersion
	s.offMu.Unlock()
	s.offWriteMu.Lock()
	defer s.offWriteMu.Unlock()
	if s.offWritten >= mine {
		return nil
	}
	if err := s.writeOffsets(); err != nil {
		return fmt.Errorf("storage-file: topic %q deleted, its groups' offsets not: %w", topic, err)
	}
	return nil
}
