package file

import (
	"fmt"
	"os"

	"github.com/ferrymq/ferry/core/sdk"
)

// CrashLoseUnflushed is for tests only: it stops the store the way a machine
// crash would. Nothing more is written, every segment file is cut back to
// what the last fsync covered (what the OS would lose from its page cache),
// a segment whose creation was never fsynced is deleted, and the directory
// lock is released. The store is then closed; open a new one on the same
// directory to test recovery. Appends still waiting fail or time out.
func (s *Store) CrashLoseUnflushed() error {
	s.mu.Lock()
	if s.closed || !s.configured {
		s.mu.Unlock()
		return fmt.Errorf("storage-file: %w", sdk.ErrClosed)
	}
	s.closed = true
	s.crashed.Store(true)
	s.mu.Unlock()
	close(s.closing)
	s.life.Lock()
	defer s.life.Unlock()
	s.stopLoops()
	s.fail(fmt.Errorf("storage-file: crashed (test): %w", sdk.ErrClosed))

	s.mu.Lock()
	defer s.mu.Unlock()
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, g := range s.segs {
		if g.f == nil {
			continue
		}
		if !g.durableHeader {
			keep(os.Remove(g.path))
		} else {
			// What was not fsynced is gone: a preallocated file
			// has its zeros back, another file is shorter.
			cut := segmentHeaderSize + min(max(s.fpos-g.base, 0), g.size)
			st, err := g.f.Stat()
			keep(err)
			keep(g.f.Truncate(cut))
			if err == nil && st.Size() > cut {
				keep(zeroFill(g.f, cut, st.Size(), nil))
			}
		}
		g.release()
	}
	s.segs = nil
	keep(s.lock.Close())
	return firstErr
}
