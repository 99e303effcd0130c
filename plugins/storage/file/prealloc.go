package file

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// errStopped: preallocation gave up because the store is closing.
var errStopped = errors.New("store closing")

// preallocMaxGroup is the average group commit size above which
// preallocation stops paying: writing the zeros first costs more (CPU and
// disk bandwidth) than the journal commits it saves on so few fsyncs.
const preallocMaxGroup = 64 << 10

// preallocator keeps one zero-filled, fsynced spare segment file ready, so
// that the flusher's fsyncs overwrite allocated blocks instead of growing the
// file (see Config.Preallocate). After each roll it makes a new spare, unless
// the group commits of the segment just sealed averaged more than
// preallocMaxGroup.
func (s *Store) preallocator() {
	defer close(s.preallocDone)
	for {
		s.mu.Lock()
		ready := s.spareReady
		s.mu.Unlock()
		if n := s.groupsSinceRoll.Swap(0); n > 0 && s.bytesSinceRoll.Swap(0)/n > preallocMaxGroup {
			ready = true // skip this one
		}
		if !ready {
			err := s.makeSpare(s.stop)
			if errors.Is(err, errStopped) {
				return
			}
			if err != nil {
				s.log.Warn("could not preallocate the next segment; it will be created empty", "error", err)
			} else {
				s.mu.Lock()
				s.spareReady = true
				s.mu.Unlock()
			}
		}
		select {
		case <-s.stop:
			return
		case <-s.preallocKick:
		}
	}
}

// makeSpare writes the spare segment file: zeros, fsynced, then renamed into
// place, so that a spare that exists is complete.
func (s *Store) makeSpare(stop <-chan struct{}) error {
	tmp := filepath.Join(s.dir, spareFileName+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return classify(err)
	}
	err = zeroFill(f, 0, int64(s.cfg.SegmentBytes), stop)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, spareFileName))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		if errors.Is(err, errStopped) {
			return err
		}
		return fmt.Errorf("storage-file: preallocate segment: %w", classify(err))
	}
	return nil
}

// zeroFill writes zeros over [from, to) of f in 1MiB writes, checking stop
// between them.
func zeroFill(f *os.File, from, to int64, stop <-chan struct{}) error {
	zeros := make([]byte, 1<<20)
	for off := from; off < to; {
		select {
		case <-stop:
			return errStopped
		default:
		}
		n := min(int64(len(zeros)), to-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// takeSpare turns the spare file, if one is ready, into segment g: rename it
// and write g's header over its first bytes. The header, the rename and the
// data are made durable by the flusher's next fsync (the directory is dirty).
// It returns nil, nil when there is no spare.
func (s *Store) takeSpare(g *segment) (*os.File, error) {
	s.mu.Lock()
	ready := s.spareReady
	s.spareReady = false
	s.mu.Unlock()
	// A roll: time to decide about the next spare.
	select {
	case s.preallocKick <- struct{}{}:
	default:
	}
	if !ready {
		return nil, nil
	}
	if err := os.Rename(filepath.Join(s.dir, spareFileName), g.path); err != nil {
		s.log.Warn("could not use the preallocated segment", "error", err)
		return nil, nil
	}
	f, err := os.OpenFile(g.path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("storage-file: open segment: %w", classify(err))
	}
	if _, err := f.WriteAt(segmentHeader(g.base), 0); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("storage-file: write segment header %s: %w", g.path, classify(err))
	}
	return f, nil
}
