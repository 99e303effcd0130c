package file

import (
	"cmp"
	"fmt"
	"os"
	"slices"

	"github.com/ferrymq/ferry/core/sdk"
)

// CrashLoseUnflushed is for tests only: it stops the store the way a machine
// crash would. Nothing more is written, every segment file is cut back to
// what the last fsync covered (what the OS would lose from its page cache),
// a segment whose creation was never fsynced is deleted, and the directory
// lock is released. The store is then closed; open a new one on the same
// directory to test recovery. Appends still waiting fail or time out.
func (s *Store) CrashLoseUnflushed() error {
	_, _, err := s.crash(0)
	return err
}

// CrashLyingDisk is CrashLoseUnflushed on a disk whose write cache lied
// about fsync: the newer half of the records the store had fsynced is gone
// too (the files keep their bytes only up to the first of them). It returns
// how many fsynced records were dropped. It breaks what every flush policy
// promises, so it exists for one purpose: a negative control of ferry
// verify's verdict on a power loss, reachable only from a test build's node
// that a running ferry verify started (cmd/ferry/faults_on.go).
func (s *Store) CrashLyingDisk() (dropped int, err error) {
	_, _, err = s.crashTo(0, func() int64 { // under s.mu, the loops stopped
		var synced []int64
		for _, q := range s.queues {
			for _, e := range q.ents {
				if e.pos < s.fpos {
					synced = append(synced, e.pos)
				}
			}
		}
		if len(synced) == 0 {
			return -1
		}
		slices.Sort(synced)
		dropped = len(synced) - len(synced)/2
		return synced[len(synced)/2]
	})
	return dropped, err
}

// CrashTearUnflushed is CrashLoseUnflushed with a torn write: of what the
// last fsync did not cover, the first half of the first record survives
// (its record, at global log position pos, is size bytes long), as when
// the power goes while the disk writes that record. It returns pos and
// size (size 0: nothing was unsynced, so nothing was torn). For tests only:
// recovery at the next open must cut the torn record.
func (s *Store) CrashTearUnflushed() (pos int64, size int32, err error) {
	return s.crash(1)
}

// CrashTearUnflushedAt is CrashTearUnflushed, except that the first n-1
// records the last fsync did not cover survive whole (the disk wrote them
// before the power went) and the n-th is torn (the last one, when fewer
// were written): a batch of several messages, such as a raft entry's, then
// survives in part. n < 1 is 1.
func (s *Store) CrashTearUnflushedAt(n int) (pos int64, size int32, err error) {
	return s.crash(max(n, 1))
}

// crash crashes the store; tear > 0 tears the tear-th unsynced record.
func (s *Store) crash(tear int) (int64, int32, error) {
	return s.crashTo(tear, nil)
}

// crashTo is crash; a non-nil keepAt gives (under s.mu) the position up to
// which the files keep their bytes instead of the fsynced one (-1: that one).
func (s *Store) crashTo(tear int, keepAt func() int64) (int64, int32, error) {
	s.mu.Lock()
	if s.closed || !s.configured {
		s.mu.Unlock()
		return 0, 0, fmt.Errorf("storage-file: %w", sdk.ErrClosed)
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
	// keepTo: the global log position up to which the files keep their
	// bytes (the fsynced position, or half into the record after it).
	keepTo := s.fpos
	if keepAt != nil {
		if k := keepAt(); k >= 0 {
			keepTo = min(k, s.fpos)
		}
	}
	var tornPos int64
	var tornSize int32
	if tear > 0 {
		var unsynced []entry // in log order
		for _, q := range s.queues {
			for i := len(q.ents) - 1; i >= 0 && q.ents[i].pos >= s.fpos; i-- {
				unsynced = append(unsynced, q.ents[i])
			}
		}
		slices.SortFunc(unsynced, func(a, b entry) int { return cmp.Compare(a.pos, b.pos) })
		if len(unsynced) > 0 {
			e := unsynced[min(tear, len(unsynced))-1]
			tornPos, tornSize = e.pos, e.size
		}
		if tornSize > 0 {
			keepTo = tornPos + int64(tornSize)/2
		}
	}
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
			cut := segmentHeaderSize + min(max(keepTo-g.base, 0), g.size)
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
	return tornPos, tornSize, firstErr
}
