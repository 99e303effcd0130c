package sdktest

import (
	"errors"
	"fmt"

	"github.com/ferrymq/ferry/core/sdk"
)

// TopicDeleter (sdk.TopicDeleter, for the stores that have it; a plugin
// without it answers errors.ErrUnsupported, which skips the case): after
// DeleteTopicData a topic's queues read nothing and report start = end,
// groups' offsets on them are gone and those on other topics kept, the
// other topics keep their messages, and a message appended to the topic
// afterwards gets an offset at or past the old end (offsets are not reused)
// and is read alone; a durable store keeps all of that across a reopen.
func testTopicDeleter(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	td, ok := s.Storage.(sdk.TopicDeleter)
	if !ok {
		return Skip("%T does not implement sdk.TopicDeleter", s.Storage)
	}
	if _, err := appendAll(s, msg("gone", 0, "g1"), msg("gone", 1, "g2"), msg("gone", 1, "g3"), msg("kept", 0, "k1")); err != nil {
		return err
	}
	ctx, cancel := ctxT()
	defer cancel()
	if err := s.CommitOffsets(ctx, "grp", []*sdk.GroupOffset{{Topic: "gone", Queue: 1, Offset: 1}, {Topic: "kept", Queue: 0, Offset: 1}}); err != nil {
		return err
	}
	if err := td.DeleteTopicData(ctx, "gone"); errors.Is(err, errors.ErrUnsupported) {
		return Skip("the plugin answers %v", err)
	} else if err != nil {
		return fmt.Errorf("DeleteTopicData: %w", err)
	}
	if err := td.DeleteTopicData(ctx, "never-held"); err != nil {
		return fmt.Errorf("DeleteTopicData of a topic the store never held: %w", err)
	}
	check := func(when string, s *Store) error {
		offs, err := s.GetOffsets(ctx, "grp", []*sdk.QueueRef{{Topic: "gone", Queue: 0}, {Topic: "gone", Queue: 1}, {Topic: "kept", Queue: 0}})
		if err != nil {
			return err
		}
		for _, o := range offs[:2] {
			if o.Start != o.End || o.Committed != -1 {
				return fmt.Errorf("%s: deleted queue %v: want start = end and nothing committed", when, o)
			}
		}
		if offs[1].End < 2 {
			return fmt.Errorf("%s: deleted queue %v: its end went back below 2 (offsets are never reused)", when, offs[1])
		}
		if k := offs[2]; k.End-k.Start != 1 || k.Committed != 1 {
			return fmt.Errorf("%s: the other topic's queue %v: want its message and its group's offset kept", when, k)
		}
		got, err := readAll(s, "gone", 1, 0)
		if err != nil {
			return err
		}
		if len(got) > 0 && got[0].Id != "after" {
			return fmt.Errorf("%s: the deleted queue reads %q", when, got[0].Id)
		}
		return nil
	}
	if err := check("after the delete", s); err != nil {
		return err
	}
	offs, err := appendAll(s, msg("gone", 1, "after"))
	if err != nil {
		return err
	}
	if offs[0] < 2 {
		return fmt.Errorf("a message appended after the delete got offset %d, an offset the deleted messages had", offs[0])
	}
	got, err := readAll(s, "gone", 1, 0)
	if err != nil || len(got) != 1 || got[0].Id != "after" {
		return fmt.Errorf("after a new append the queue reads %v, %v; want only the new message", msgIDs(got), err)
	}
	if h.Features().Durable {
		if s, err = reopen(h, s); err != nil {
			return err
		}
		got, err := readAll(s, "gone", 1, 0)
		if err != nil || len(got) != 1 || got[0].Id != "after" {
			return fmt.Errorf("after a reopen the queue reads %v, %v; want only the message appended after the delete", msgIDs(got), err)
		}
		if got, err := readAll(s, "gone", 0, 0); err != nil || len(got) != 0 {
			return fmt.Errorf("after a reopen queue 0 of the deleted topic reads %v, %v", msgIDs(got), err)
		}
	}
	return nil
}

func msgIDs(msgs []*sdk.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Id
	}
	return out
}
