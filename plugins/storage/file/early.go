package file

import (
	"context"

	"github.com/ferrymq/ferry/core/sdk"
)

var (
	_ sdk.EarlyOffsets = (*Store)(nil)
	_ sdk.WireAppender = (*Store)(nil)
)

// waitWritten blocks until the flusher wrote the log up to end (see
// Store.written), the store failed or ctx ends, and returns offsets, the
// batch's offsets as Append assigned them.
func (s *Store) waitWritten(ctx context.Context, ep *epoch, end int64, offsets []int64) ([]int64, error) {
	for {
		ch := s.wnotify.Load()
		if w := s.written.Load(); ep.over.Load() {
			return ep.outcome(end, offsets, true)
		} else if w >= end {
			return offsets, nil
		}
		if err := s.failure(); err != nil {
			return nil, err
		}
		select {
		case <-*ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// publishWritten publishes a new written position and wakes its waiters.
// Flusher only.
func (s *Store) publishWritten(pos int64) {
	s.written.Store(pos)
	s.wakeWritten()
}

func (s *Store) wakeWritten() {
	ch := make(chan struct{})
	if old := s.wnotify.Swap(&ch); old != nil {
		close(*old)
	}
}
