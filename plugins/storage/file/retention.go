package file

import (
	"math"
	"os"
	"sort"
	"time"
)

// janitor writes the index files of sealed segments and enforces
// retention_bytes and retention_age. It runs when Append seals a segment and
// on a timer. Retention deletes whole segments from the oldest on, never the
// one being written and never one not yet fsynced.
func (s *Store) janitor() {
	defer close(s.janitorDone)
	period := time.Second
	if age := time.Duration(s.cfg.RetentionAge); age > 0 {
		period = min(max(age/4, 10*time.Millisecond), time.Second)
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		case <-s.janitorKick:
		}
		if err := s.writeSealedIndexes(); err != nil {
			s.log.Warn("segment index", "error", err)
		}
		if s.cfg.RetentionBytes == 0 && s.cfg.RetentionAge == 0 && len(s.topicRetentions()) == 0 {
			continue
		}
		if err := s.enforceRetention(time.Now()); err != nil {
			s.log.Error("retention", "error", err)
		}
	}
}

// enforceRetention deletes the segments retention no longer keeps. It first
// moves every queue's start past them in memory and on disk (queues.json),
// then removes the files; a read in flight keeps its segment open until done.
func (s *Store) enforceRetention(now time.Time) error {
	s.startsMu.Lock()
	defer s.startsMu.Unlock()
	s.mu.Lock()
	s.segRolled = false
	var total int64
	for _, g := range s.segs {
		total += segmentHeaderSize + g.size
	}
	fsynced := s.fsynced.Load()
	// The topics' own retention moves their queues' starts first; then a
	// segment no queue reads from any more goes too.
	trimmed := s.trimTopics(now, fsynced)
	firstRef := int64(math.MaxInt64)
	useRefs := len(s.topicRetentions()) > 0
	if useRefs {
		for _, q := range s.queues {
			if len(q.ents) > 0 {
				firstRef = min(firstRef, q.ents[0].pos)
			}
		}
	}
	minStored := now.Add(-time.Duration(s.cfg.RetentionAge)).UnixNano()
	n := 0
	for n < len(s.segs)-1 {
		g, next := s.segs[n], s.segs[n+1]
		if next.base > fsynced {
			break
		}
		overSize := s.cfg.RetentionBytes > 0 && total > int64(s.cfg.RetentionBytes)
		tooOld := s.cfg.RetentionAge > 0 && g.maxStored < minStored
		unread := useRefs && next.base <= firstRef
		if !overSize && !tooOld && !unread {
			break
		}
		total -= segmentHeaderSize + g.size
		n++
	}
	if n == 0 && !trimmed {
		s.mu.Unlock()
		return nil
	}
	drop := append([]*segment(nil), s.segs[:n]...)
	if n > 0 {
		s.segs = append([]*segment(nil), s.segs[n:]...)
	}
	logStart := s.segs[0].base
	starts := make(map[queueKey]int64, len(s.queues))
	for k, q := range s.queues {
		if i := sort.Search(len(q.ents), func(i int) bool { return q.ents[i].pos >= logStart }); i > 0 {
			q.start += int64(i)
			q.ents = q.ents[i:]
			q.times.trim(q.start)
			if cap(q.ents) > 2*len(q.ents)+1024 {
				q.ents = append([]entry(nil), q.ents...)
			}
		}
		starts[k] = q.start
	}
	s.mu.Unlock()

	if err := writeQueueStarts(s.dir, starts); err != nil {
		return err
	}
	var firstErr error
	for _, g := range drop {
		s.log.Info("retention: deleting segment", "segment", g.path, "bytes", segmentHeaderSize+g.size)
		_ = os.Remove(indexPath(g.path))
		if err := os.Remove(g.path); err != nil && firstErr == nil {
			firstErr = err
		}
		g.release()
	}
	if err := syncDir(s.dir); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}
