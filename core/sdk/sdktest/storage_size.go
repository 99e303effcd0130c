package sdktest

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/ferrymq/ferry/core/sdk"
)

// QueueSizer (sdk.QueueSizer, for the stores that have it; through the
// plugin boundary a plugin without it answers errors.ErrUnsupported, which
// skips the case): an unknown queue holds 0 bytes and a bad one is
// ErrInvalidArgument; a queue holding messages holds at least the bytes of
// their bodies (random, so not compressible) unless the store says -1
// (it cannot size that queue); answers come in the order of the queues
// asked, a queue grows with its appends, and a durable store answers the
// same after a reopen.
func testQueueSizer(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	sizer, ok := s.Storage.(sdk.QueueSizer)
	if !ok {
		return Skip("%T does not implement sdk.QueueSizer", s.Storage)
	}
	ctx, cancel := ctxT()
	defer cancel()
	refs := []*sdk.QueueRef{{Topic: "qs", Queue: 1}, {Topic: "qs", Queue: 0}, {Topic: "qs-unknown", Queue: 0}}
	got, err := sizer.QueueBytes(ctx, refs)
	if errors.Is(err, errors.ErrUnsupported) {
		return Skip("the plugin answers %v", err)
	} else if err != nil {
		return fmt.Errorf("QueueBytes on an empty store: %w", err)
	}
	if len(got) != len(refs) || got[0] != 0 || got[1] != 0 || got[2] != 0 {
		return fmt.Errorf("QueueBytes of unknown queues: %v, want [0 0 0]", got)
	}
	if _, err := sizer.QueueBytes(ctx, []*sdk.QueueRef{{Topic: "", Queue: 0}}); !errors.Is(err, sdk.ErrInvalidArgument) {
		return fmt.Errorf("QueueBytes of an empty topic: %v, want ErrInvalidArgument", err)
	}
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rand.IntN(256))
		}
		return b
	}
	var batch []*sdk.Message
	for i := range 10 {
		m := msg("qs", 0, fmt.Sprintf("qs0-%d", i))
		m.Body = body(100)
		batch = append(batch, m)
	}
	for i := range 3 {
		m := msg("qs", 1, fmt.Sprintf("qs1-%d", i))
		m.Body = body(1000)
		batch = append(batch, m)
	}
	if _, err := appendAll(s, batch...); err != nil {
		return err
	}
	check := func(when string, min0, min1 int64) ([]int64, error) {
		got, err := sizer.QueueBytes(ctx, refs)
		if err != nil {
			return nil, fmt.Errorf("%s: QueueBytes: %w", when, err)
		}
		if len(got) != len(refs) {
			return nil, fmt.Errorf("%s: QueueBytes answered %d sizes for %d queues", when, len(got), len(refs))
		}
		if (got[0] != -1 && got[0] < min1) || (got[1] != -1 && got[1] < min0) || got[2] != 0 {
			return nil, fmt.Errorf("%s: QueueBytes of qs/1 (3000 body bytes), qs/0 (%d), an unknown queue: %v", when, min0, got)
		}
		return got, nil
	}
	first, err := check("after the appends", 1000, 3000)
	if err != nil {
		return err
	}
	var more []*sdk.Message
	for i := range 5 {
		m := msg("qs", 0, fmt.Sprintf("qs0-more-%d", i))
		m.Body = body(100)
		more = append(more, m)
	}
	if _, err := appendAll(s, more...); err != nil {
		return err
	}
	second, err := check("after more appends to qs/0", 1500, 3000)
	if err != nil {
		return err
	}
	if first[1] != -1 && second[1] <= first[1] {
		return fmt.Errorf("qs/0 holds %d bytes after 5 more messages, %d before", second[1], first[1])
	}
	if first[0] != second[0] {
		return fmt.Errorf("qs/1 went from %d to %d bytes without appends", first[0], second[0])
	}
	if !h.Features().Durable {
		return nil
	}
	if s, err = reopen(h, s); err != nil {
		return err
	}
	if sizer, ok = s.Storage.(sdk.QueueSizer); !ok {
		return fmt.Errorf("%T lost sdk.QueueSizer on reopen", s.Storage)
	}
	after, err := check("after a reopen", 1500, 3000)
	if err != nil {
		return err
	}
	if after[0] != second[0] || after[1] != second[1] {
		return fmt.Errorf("QueueBytes after a reopen %v, before %v", after, second)
	}
	return nil
}
