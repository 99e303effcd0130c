package sdktest

import (
	"errors"
	"fmt"
	"slices"

	"github.com/ferrymq/ferry/core/sdk"
)

// GroupStore (sdk.GroupStore, for the stores that have it; through the
// plugin boundary the host's client has it and a plugin without it answers
// errors.ErrUnsupported, which skips the case): StoredGroups lists exactly
// the groups with committed offsets; DeleteGroupOffsets removes one group's
// offsets, and only its (a durable store still has them removed after a
// reopen); deleting a group with none is no error.
func testGroupStore(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	gs, ok := s.Storage.(sdk.GroupStore)
	if !ok {
		return Skip("%T does not implement sdk.GroupStore", s.Storage)
	}
	ctx, cancel := ctxT()
	defer cancel()
	if _, err := gs.StoredGroups(ctx); errors.Is(err, errors.ErrUnsupported) {
		return Skip("the plugin answers %v", err)
	}
	for _, g := range []string{"keep", "drop"} {
		if err := s.CommitOffsets(ctx, g, []*sdk.GroupOffset{{Topic: "gs", Queue: 0, Offset: 0}, {Topic: "gs", Queue: 1, Offset: 0}}); err != nil {
			return fmt.Errorf("CommitOffsets %s: %w", g, err)
		}
	}
	if err := checkStoredGroups(s, "keep", "drop"); err != nil {
		return err
	}
	if err := gs.DeleteGroupOffsets(ctx, "drop"); err != nil {
		return fmt.Errorf("DeleteGroupOffsets: %w", err)
	}
	if err := gs.DeleteGroupOffsets(ctx, "never-committed"); err != nil {
		return fmt.Errorf("DeleteGroupOffsets of a group without offsets: %w", err)
	}
	if err := checkStoredGroups(s, "keep"); err != nil {
		return err
	}
	if h.Features().Durable {
		if s, err = reopen(h, s); err != nil {
			return err
		}
		if err := checkStoredGroups(s, "keep"); err != nil {
			return fmt.Errorf("after a reopen: %w", err)
		}
	}
	return nil
}

// checkStoredGroups checks that s lists exactly want and that their
// offsets are there, and not those of the others.
func checkStoredGroups(s *Store, want ...string) error {
	ctx, cancel := ctxT()
	defer cancel()
	got, err := s.Storage.(sdk.GroupStore).StoredGroups(ctx)
	if err != nil {
		return fmt.Errorf("StoredGroups: %w", err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("StoredGroups = %q, want %q", got, want)
	}
	for _, g := range []string{"keep", "drop"} {
		offs, err := s.GetOffsets(ctx, g, []*sdk.QueueRef{{Topic: "gs", Queue: 1}})
		if err != nil {
			return fmt.Errorf("GetOffsets %s: %w", g, err)
		}
		wantC := int64(-1)
		if slices.Contains(want, g) {
			wantC = 0
		}
		if len(offs) != 1 || offs[0].Committed != wantC {
			return fmt.Errorf("group %s: GetOffsets = %v, want committed %d", g, offs, wantC)
		}
	}
	return nil
}
