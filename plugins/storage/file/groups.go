package file

import (
	"context"

	"github.com/ferrymq/ferry/core/sdk"
)

var _ sdk.GroupStore = (*Store)(nil)

// StoredGroups lists the groups with committed offsets in the offsets file
// (sdk.GroupStore). Called concurrently.
func (s *Store) StoredGroups(context.Context) ([]string, error) {
	s.mu.RLock()
	err := s.usable()
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	s.offMu.Lock()
	defer s.offMu.Unlock()
	out := make([]string, 0, len(s.offsets))
	for g, offs := range s.offsets {
		if len(offs) > 0 {
			out = append(out, g)
		}
	}
	return out, nil
}

// DeleteGroupOffsets removes group's committed offsets and returns once the
// offsets file without them is on disk (sdk.GroupStore). Called
// concurrently, like CommitOffsets, with which it shares the file's writes.
func (s *Store) DeleteGroupOffsets(_ context.Context, group string) error {
	s.mu.RLock()
	err := s.usable()
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	s.offMu.Lock()
	if _, ok := s.offsets[group]; !ok {
		s.offMu.Unlock()
		return nil
	}
	delete(s.offsets, group)
	s.offVersion++
	mine := s.offVersion
	s.offMu.Unlock()

	s.offWriteMu.Lock()
	defer s.offWriteMu.Unlock()
	if s.offWritten >= mine {
		return nil
	}
	return s.writeOffsets()
}
