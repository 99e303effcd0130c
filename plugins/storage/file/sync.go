package file

import (
	"context"
	"fmt"

	"github.com/ferrymq/ferry/core/sdk"
)

// Appends durable elsewhere (sdk.Syncer).
//
// With flush sync, an append whose context is sdk.LogDurable (a raft node
// applying committed entries, which the raft log made durable) is written
// and answered without an fsync when nothing else in its group commit
// needs one: it is readable and answered once it is in the page cache. The
// flusher fsyncs such data on the async policy's terms (flush_interval,
// flush_bytes), with the next group that needs an fsync, at close, or for
// Sync. The log is one file sequence in append order, and recovery cuts it
// at the first damaged record, so after a crash the store holds a prefix of
// what it was sent, across all its queues, as sdk.Syncer requires. With
// flush async every append is written so already.

var _ sdk.Syncer = (*Store)(nil)

// Sync returns once the log is fsynced up to every append made before the
// call (sdk.Syncer), the store failed or ctx ended. Called concurrently.
func (s *Store) Sync(ctx context.Context) error {
	s.mu.Lock()
	if err := s.usable(); err != nil {
		s.mu.Unlock()
		return err
	}
	target := s.apos
	s.syncWant = max(s.syncWant, target)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	for {
		ch, err := s.waitState()
		if s.fsynced.Load() >= target {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("storage-file: sync: %w", ctx.Err())
		}
	}
}
