package file

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

var _ sdk.TopicRetainer = (*Store)(nil)

// topicRetentionFileName holds the topics' own retention, as the broker
// handed it last (sdk.TopicRetainer), so that a restarted store applies it
// before the broker hands it again.
const topicRetentionFileName = "topic-retention.json"

type topicRetentionFile struct {
	Version int                  `json:"version"`
	Topics  []topicRetentionJSON `json:"topics"`
}

type topicRetentionJSON struct {
	Topic string `json:"topic"`
	// Bytes per queue; 0: unset.
	Bytes int64 `json:"retention_bytes,omitempty"`
	// AgeNanos; 0: unset.
	AgeNanos int64 `json:"retention_age_nanos,omitempty"`
}

// topicRetention is one topic's own retention.
type topicRetention struct {
	bytes int64         // per queue; 0: unset
	age   time.Duration // 0: unset
}

// SetTopicRetention replaces the topics' own retention (sdk.TopicRetainer):
// written durably to topic-retention.json first, then applied from the
// next retention pass on, which it starts. Both settings are supported.
func (s *Store) SetTopicRetention(_ context.Context, topics []*sdk.TopicRetention) error {
	m := make(map[string]topicRetention, len(topics))
	f := topicRetentionFile{Version: formatVersion}
	for _, t := range topics {
		if err := checkQueue(t.GetTopic(), 0); err != nil {
			return err
		}
		if t.RetentionBytes < 0 || t.RetentionAgeNanos < 0 {
			return fmt.Errorf("%w: topic %q: a retention must not be negative (retention_bytes %d, retention_age %s)",
				sdk.ErrInvalidArgument, t.Topic, t.RetentionBytes, time.Duration(t.RetentionAgeNanos))
		}
		if t.RetentionBytes == 0 && t.RetentionAgeNanos == 0 {
			continue
		}
		m[t.Topic] = topicRetention{bytes: t.RetentionBytes, age: time.Duration(t.RetentionAgeNanos)}
		f.Topics = append(f.Topics, topicRetentionJSON{Topic: t.Topic, Bytes: t.RetentionBytes, AgeNanos: t.RetentionAgeNanos})
	}
	sort.Slice(f.Topics, func(i, j int) bool { return f.Topics[i].Topic < f.Topics[j].Topic })
	s.topicRetMu.Lock()
	defer s.topicRetMu.Unlock()
	if err := writeState(s.dir, topicRetentionFileName, f); err != nil {
		return err
	}
	s.topicRet.Store(&m)
	select {
	case s.janitorKick <- struct{}{}:
	default:
	}
	return nil
}

// loadTopicRetention reads topic-retention.json (none: no topic has a
// retention of its own).
func loadTopicRetention(dir string) (map[string]topicRetention, error) {
	out := map[string]topicRetention{}
	var f topicRetentionFile
	ok, err := readState(dir, topicRetentionFileName, &f)
	if err != nil || !ok {
		return out, err
	}
	if err := checkStateVersion(dir, topicRetentionFileName, f.Version); err != nil {
		return nil, err
	}
	for _, t := range f.Topics {
		if t.Bytes < 0 || t.AgeNanos < 0 {
			return nil, fmt.Errorf("storage-file: %s: topic %q has a negative retention", topicRetentionFileName, t.Topic)
		}
		out[t.Topic] = topicRetention{bytes: t.Bytes, age: time.Duration(t.AgeNanos)}
	}
	return out, nil
}

// topicRetentions is the topics' own retention now (never nil).
func (s *Store) topicRetentions() map[string]topicRetention {
	if p := s.topicRet.Load(); p != nil {
		return *p
	}
	return nil
}

// trimTopics applies the topics' own retention to their queues, in
// memory: a queue of a topic with retention_bytes drops its oldest
// messages, a whole segment's worth at a time, while it holds more than
// that; one with retention_age drops its messages in segments whose newest
// message is older. Only fsynced segments, never the one being written.
// It returns whether any queue's start moved. Called by enforceRetention
// with s.mu held.
func (s *Store) trimTopics(now time.Time, fsynced int64) bool {
	rets := s.topicRetentions()
	if len(rets) == 0 || len(s.segs) < 2 {
		return false
	}
	// The segments a topic's retention may drop from: every one but the
	// last, and only those fsynced whole.
	limit := 0
	for limit < len(s.segs)-1 && s.segs[limit+1].base <= fsynced {
		limit++
	}
	moved := false
	for k, q := range s.queues {
		r, ok := rets[k.topic]
		if !ok || len(q.ents) == 0 {
			continue
		}
		var size int64
		for _, e := range q.ents {
			size += int64(e.size)
		}
		minStored := now.Add(-r.age).UnixNano()
		drop := 0 // entries of q to drop, from its front
		for g := 0; g < limit && drop < len(q.ents); g++ {
			seg, end := s.segs[g], s.segs[g+1].base
			if q.ents[drop].pos >= end {
				continue // nothing of q in it
			}
			overSize := r.bytes > 0 && size > r.bytes
			tooOld := r.age > 0 && seg.maxStored < minStored
			if !overSize && !tooOld {
				break
			}
			for drop < len(q.ents) && q.ents[drop].pos < end {
				size -= int64(q.ents[drop].size)
				drop++
			}
		}
		if drop == 0 {
			continue
		}
		q.start += int64(drop)
		q.ents = q.ents[drop:]
		q.times.trim(q.start)
		if cap(q.ents) > 2*len(q.ents)+1024 {
			q.ents = append([]entry(nil), q.ents...)
		}
		moved = true
	}
	return moved
}
