package file

import (
	"fmt"
	"time"
)

// flushLoop is the one goroutine that writes the log: it takes what Append
// buffered, writes it to the segment files and fsyncs them, then publishes
// the new durable position, which answers every append it covers at once
// (group commit: one fsync for any number of appends, on any queues).
//
// Sync policy: after a group commit the producers it answered usually come
// back within microseconds. When the previous group held more than one
// message, the flusher waits (at most group_commit_max_wait) until as many
// messages as that group held have arrived, so that one fsync covers them all
// instead of splitting producers into alternating half-size groups. A lone
// producer never waits: its previous group held one message.
//
// Async policy: data is written as soon as it is there (which is when async
// appends are answered and reads see it) and fsynced every flush_interval or
// flush_bytes.
func (s *Store) flushLoop() {
	defer close(s.flusherDone)
	syncMode := s.cfg.Flush == FlushSync
	maxWait := time.Duration(s.cfg.GroupCommitMaxWait)
	interval := time.Duration(s.cfg.FlushInterval)
	lastCohort := 0
	var lastIO time.Duration // of the last group commit: write and fsync
	var lingerStart time.Time
	var lastDone time.Time // end of the last group commit
	lastSync := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	sleep := func(d time.Duration) {
		if d <= 0 {
			select {
			case <-s.kick:
			case <-s.stop:
			}
			return
		}
		timer.Reset(d)
		select {
		case <-s.kick:
		case <-s.stop:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}

	for {
		if s.crashed.Load() {
			return
		}
		stopping := false
		select {
		case <-s.stop:
			stopping = true
		default:
		}
		s.mu.Lock()
		// Unsynced data with flush sync: log_durable appends, written
		// without an fsync (sync.go); they are fsynced on the async
		// policy's terms, by the next append that needs an fsync, or for
		// a Sync.
		unsynced := s.wpos - s.fpos
		dueSync := unsynced > 0 && (stopping || time.Since(lastSync) >= interval || unsynced >= int64(s.cfg.FlushBytes) ||
			(syncMode && (s.bufSync || s.syncWant > s.fpos)))
		if len(s.buf) == 0 && !dueSync {
			if stopping {
				s.mu.Unlock()
				return
			}
			wait := time.Duration(0)
			if unsynced > 0 {
				wait = max(interval-time.Since(lastSync), time.Millisecond)
			}
			s.kickAt = 1
			s.mu.Unlock()
			sleep(wait)
			continue
		}
		if syncMode && maxWait > 0 && lastCohort > 1 && s.arrived < lastCohort && len(s.buf) < lingerMaxBytes && !stopping {
			if lingerStart.IsZero() {
				lingerStart = time.Now()
			}
			// Waiting longer than a fraction of an fsync costs
			// more than it gains: the producers are slow to come
			// back (busy CPUs), and fsyncing the ones that are
			// here while the rest come back overlaps the two.
			limit := min(maxWait, max(lastIO/lingerShare, 10*time.Microsecond))
			if left := limit - time.Since(lingerStart); left > 0 {
				s.kickAt = lastCohort
				s.mu.Unlock()
				sleep(left)
				continue
			}
		}
		if !lingerStart.IsZero() {
			s.lingerNanos.Add(int64(time.Since(lingerStart)))
		}
		lingerStart = time.Time{}
		if !lastDone.IsZero() {
			s.gapNanos.Add(int64(time.Since(lastDone)))
		}
		data, from, msgs := s.buf, s.wpos, s.bufMsgs
		needSync := syncMode && (s.bufSync || s.syncWant > s.fpos)
		s.buf, s.spareBuf, s.bufMsgs, s.bufSync = s.spareBuf[:0], nil, 0, false
		s.kickAt = 0
		segs := s.segmentsFrom(from, from+int64(len(data)))
		s.mu.Unlock()

		t0 := time.Now()
		err := s.write(segs, data, from)
		if err == nil {
			s.publishWritten(s.wpos) // in the page cache: early offsets
		}
		if err == nil && (needSync || dueSync || s.wpos-s.fpos >= int64(s.cfg.FlushBytes)) {
			if s.beforeSync != nil {
				s.beforeSync()
			}
			if s.crashed.Load() {
				return
			}
			err = s.fsyncDirty()
			lastSync = time.Now()
			lastIO = lastSync.Sub(t0)
			s.fsyncs.Add(1)
			s.groupsSinceRoll.Add(1)
			s.bytesSinceRoll.Add(int64(len(data)))
			s.ioNanos.Add(int64(lastIO))
		}
		s.fsyncedMsgs.Add(int64(msgs))
		s.mu.Lock()
		if cap(data) <= 2*maxBuffered {
			s.spareBuf = data[:0]
		}
		// Count arrivals from the end of this group commit: those are
		// the producers it answers coming back.
		s.arrived = 0
		s.mu.Unlock()
		if err != nil {
			s.log.Error("commit log write failed; the store accepts no more appends until it is recovered", "error", err)
			s.fail(err)
			return
		}
		if syncMode {
			lastCohort = msgs
			// fpos, or beyond it log_durable appends written
			// without an fsync: readable and answered now.
			s.advance(s.wpos)
			lastDone = time.Now()
		} else {
			s.advance(s.wpos)
		}
	}
}

// segmentsFrom returns the segments overlapping [from, to). Called with mu
// held.
func (s *Store) segmentsFrom(from, to int64) []*segment {
	var out []*segment
	for i := len(s.segs) - 1; i >= 0; i-- {
		g := s.segs[i]
		if g.base < to {
			out = append(out, g)
		}
		if g.base <= from {
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// write writes data, the log's bytes from position from on, into the
// segments they belong to, creating segment files as needed. Flusher only.
func (s *Store) write(segs []*segment, data []byte, from int64) error {
	pos := from
	for i, g := range segs {
		end := pos + int64(len(data))
		if i+1 < len(segs) {
			end = segs[i+1].base
		}
		n := end - pos
		if n <= 0 {
			continue
		}
		if g.f == nil {
			if err := s.newSegmentFile(g); err != nil {
				return err
			}
		}
		s.writeCalls.Add(1)
		if _, err := g.f.WriteAt(data[:n], segmentHeaderSize+pos-g.base); err != nil {
			return fmt.Errorf("storage-file: write %s: %w", g.path, classify(err))
		}
		if len(s.dirty) == 0 || s.dirty[len(s.dirty)-1] != g {
			s.dirty = append(s.dirty, g)
		}
		data = data[n:]
		pos = end
	}
	s.wpos = pos
	return nil
}

func (s *Store) newSegmentFile(g *segment) error {
	f, err := s.takeSpare(g)
	if err != nil {
		return err
	}
	if f == nil {
		ng := &segment{base: g.base, path: g.path}
		if err := s.createSegment(ng); err != nil {
			return err
		}
		f = ng.f
	}
	s.mu.Lock()
	g.f = f
	s.mu.Unlock()
	s.dirDirty = true
	return nil
}

// fsyncDirty makes everything written durable: the segments written since
// their last fsync and, after a roll, the directory. Flusher only.
func (s *Store) fsyncDirty() error {
	for _, g := range s.dirty {
		if err := syncFile(g.f); err != nil {
			return fmt.Errorf("storage-file: fsync %s: %w", g.path, classify(err))
		}
	}
	if s.dirDirty {
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("storage-file: fsync %s: %w", s.dir, classify(err))
		}
		s.dirDirty = false
		for _, g := range s.dirty {
			g.durableHeader = true
		}
	}
	s.dirty = s.dirty[:0]
	s.fpos = s.wpos
	s.fsynced.Store(s.fpos)
	return nil
}
