package file

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// A full disk (ENOSPC, EDQUOT: sdk.ErrFull) fails the write or fsync it hits
// like any I/O error: the appends it covers, and every append after it, are
// answered ErrFull, because after a failed write the store's memory is ahead
// of its files. Unlike other failures it does not wait for a restart: a
// goroutine probes the directory for space (writes and fsyncs a small file)
// with a backoff of up to probeMaxDelay, and once the probe succeeds it
// reopens the store in place: the background goroutines stop, the log is
// recovered from the files exactly as a restarted process would (whatever
// the failed write left of a record is a torn tail), and appends are taken
// again. Reads and offsets keep being served from memory while the disk is
// full. Full reports the state for health checks.

// Probe sizes and delays while the disk is full.
const (
	probeBytes    = 64 << 10
	probeMinDelay = 50 * time.Millisecond
	probeMaxDelay = time.Second
	probeFileName = "space-probe" + tmpSuffix
)

// Full reports whether the store refuses appends because its disk is full,
// since when, and the error that started it. Called by health checks, any
// time.
func (s *Store) Full() (bool, time.Time, error) {
	if !s.recovering.Load() {
		return false, time.Time{}, nil
	}
	var err error
	if p := s.fullErr.Load(); p != nil {
		err = *p
	}
	return true, time.Unix(0, s.fullSince.Load()), err
}

// recoverWhenSpace waits for space and reopens the store; it ends when the
// store takes appends again or is closed. Started by fail.
func (s *Store) recoverWhenSpace() {
	s.log.Error("disk full: appends are refused until there is space again; the store retries by itself", "dir", s.dir, "error", s.failure())
	delay := probeMinDelay
	for {
		select {
		case <-s.closing:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, probeMaxDelay)
		if err := s.probeSpace(); err != nil {
			continue
		}
		err := s.reopen()
		switch {
		case err == nil:
			s.log.Info("disk has space again: the store was recovered from its files and takes appends", "dir", s.dir,
				"full_for", time.Since(time.Unix(0, s.fullSince.Load())).Round(time.Millisecond).String())
			return
		case errors.Is(err, sdk.ErrClosed):
			return
		default:
			s.log.Warn("disk full: reopening the store failed; retrying", "error", err)
		}
	}
}

// probeSpace writes and fsyncs probeBytes in the store's directory, then
// removes the file.
func (s *Store) probeSpace() error {
	path := filepath.Join(s.dir, probeFileName)
	_ = os.Remove(path)
	defer os.Remove(path)
	f, err := s.createFile(path)
	if err != nil {
		return classify(err)
	}
	_, err = f.Write(make([]byte, probeBytes))
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return classify(err)
}

// reopen recovers the store from its files in place, as Configure did, and
// clears the sticky failure. On an error the store answers every call with it
// (broken) until a later reopen succeeds.
func (s *Store) reopen() error {
	s.life.Lock()
	defer s.life.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return fmt.Errorf("storage-file: %w", sdk.ErrClosed)
	}
	s.stopLoops()
	// No offsets file write runs while the state is reloaded.
	s.offWriteMu.Lock()
	defer s.offWriteMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("storage-file: %w", sdk.ErrClosed)
	}
	for _, g := range s.segs {
		g.release()
	}
	s.segs = nil
	if s.lock != nil {
		_ = s.lock.Close()
		s.lock = nil
	}
	s.buf, s.spareBuf, s.bufMsgs, s.arrived, s.kickAt, s.segRolled = nil, nil, 0, 0, 0, false
	s.dirty, s.dirDirty, s.spareReady = nil, false, false
	s.damagedStretches, s.holes = 0, 0
	// End the epoch before open sets the positions anew (see wait).
	if ep := s.epoch.Load(); !ep.over.Load() {
		ep.final, ep.written, ep.err = s.durable.Load(), s.written.Load(), s.failure()
		if ep.err == nil {
			ep.err = fmt.Errorf("storage-file: %w", sdk.ErrFull)
		}
		ep.over.Store(true)
		s.epoch.Store(&epoch{})
	}
	if err := s.open(); err != nil {
		s.broken = fmt.Errorf("storage-file: reopening after a full disk: %w", err)
		s.queues = map[queueKey]*queue{}
		return err
	}
	s.broken = nil
	s.failed.Store(nil)
	s.recovering.Store(false)
	s.startLoops()
	s.wake()
	s.wakeWritten()
	return nil
}
