package sdktest

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// TimeSeeker (sdk.TimeSeeker, for the stores that have it; through the
// plugin boundary a plugin without it answers errors.ErrUnsupported, which
// skips the case): batches appended while the clock moves on get their own
// stored times; for every stored time T of a message (and T-1, T+1),
// OffsetsForTime answers the first offset whose message, as Read returns
// it, has StoredUnixNano >= T. The expectation is computed from what the
// store itself reports, so a clock that stamps several batches alike
// weakens the case but never fails it wrongly. A time before everything is
// the queue's start, one after everything its end, an unknown queue 0; the
// answers come in the order of the queues asked; a durable store answers
// the same after a reopen (it rebuilt what it seeks with); under retention
// the answers stay within the queue's start.
func testTimeSeeker(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	seeker, ok := s.Storage.(sdk.TimeSeeker)
	if !ok {
		return Skip("%T does not implement sdk.TimeSeeker", s.Storage)
	}
	ctx, cancel := ctxT()
	defer cancel()
	if _, err := seeker.OffsetsForTime(ctx, 0, []*sdk.QueueRef{{Topic: "ts", Queue: 0}}); errors.Is(err, errors.ErrUnsupported) {
		return Skip("the plugin answers %v", err)
	} else if err != nil {
		return fmt.Errorf("OffsetsForTime on an empty store: %w", err)
	}
	if _, err := seeker.OffsetsForTime(ctx, 0, []*sdk.QueueRef{{Topic: "", Queue: 0}}); !errors.Is(err, sdk.ErrInvalidArgument) {
		return fmt.Errorf("OffsetsForTime of an empty topic: %v, want ErrInvalidArgument", err)
	}
	// 8 batches of 40 messages on queue 0 (more than one sparse index
	// block in a store that keeps one), 8 on queue 1, each batch stored
	// after the clock passed the previous one's stored time.
	var last int64
	for b := range 8 {
		for time.Now().UnixNano() <= last {
			// The clock's resolution: polled, not slept.
		}
		var batch []*sdk.Message
		for i := range 40 {
			batch = append(batch, msg("ts", 0, fmt.Sprintf("ts0-%d-%02d", b, i)))
		}
		batch = append(batch, msg("ts", 1, fmt.Sprintf("ts1-%d", b)))
		if _, err := appendAll(s, batch...); err != nil {
			return err
		}
		got, err := readAll(s, "ts", 0, 0)
		if err != nil {
			return err
		}
		if len(got) == 0 {
			return fmt.Errorf("read nothing after an append")
		}
		last = got[len(got)-1].StoredUnixNano
	}
	check := func(when string) error {
		q0, err := readAll(s, "ts", 0, 0)
		if err != nil {
			return err
		}
		q1, err := readAll(s, "ts", 1, 0)
		if err != nil {
			return err
		}
		o0, err := offsetsOf(s, "", "ts", 0)
		if err != nil {
			return err
		}
		o1, err := offsetsOf(s, "", "ts", 1)
		if err != nil {
			return err
		}
		times := []int64{math.MinInt64, 0, math.MaxInt64}
		for _, m := range append(q0, q1...) {
			times = append(times, m.StoredUnixNano-1, m.StoredUnixNano, m.StoredUnixNano+1)
		}
		for _, t := range times {
			ctx, cancel := ctxT()
			got, err := seeker.OffsetsForTime(ctx, t, []*sdk.QueueRef{{Topic: "ts", Queue: 1}, {Topic: "ts", Queue: 0}, {Topic: "ts-unknown", Queue: 3}})
			cancel()
			if err != nil {
				return fmt.Errorf("%sOffsetsForTime(%d): %w", when, t, err)
			}
			want := []int64{firstAtOrAfter(q1, o1, t), firstAtOrAfter(q0, o0, t), 0}
			if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
				return fmt.Errorf("%sOffsetsForTime(%d) of ts/1, ts/0, ts-unknown/3 = %v, want %v (the first offsets stored at or after it)", when, t, got, want)
			}
		}
		if got := firstAtOrAfter(q0, o0, math.MinInt64); got != o0.Start {
			return fmt.Errorf("%sa time before everything: %d, want the start %d", when, got, o0.Start)
		}
		return nil
	}
	if err := check(""); err != nil {
		return err
	}
	if h.Features().Durable {
		if s, err = reopen(h, s); err != nil {
			return err
		}
		seeker = s.Storage.(sdk.TimeSeeker)
		if err := check("after a reopen: "); err != nil {
			return err
		}
	}
	if rc := h.Features().RetentionConfig; rc != nil {
		fh, err := h.Fresh()
		if err != nil {
			return err
		}
		rs, err := fh.Open(rc)
		if err != nil {
			return err
		}
		for i := 0; i < 300; i += 10 {
			var batch []*sdk.Message
			for j := range 10 {
				batch = append(batch, bigMsg("tr", 0, fmt.Sprintf("tr%03d", i+j), 1024))
			}
			if _, err := appendAll(rs, batch...); err != nil {
				return err
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		var o *sdk.QueueOffsets
		for {
			if o, err = offsetsOf(rs, "", "tr", 0); err != nil {
				return err
			}
			if o.Start > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		ctx, cancel := ctxT()
		defer cancel()
		got, err := rs.Storage.(sdk.TimeSeeker).OffsetsForTime(ctx, 0, []*sdk.QueueRef{{Topic: "tr", Queue: 0}})
		if err != nil {
			return fmt.Errorf("OffsetsForTime under retention: %w", err)
		}
		if o2, err := offsetsOf(rs, "", "tr", 0); err != nil {
			return err
		} else if len(got) != 1 || got[0] < o.Start || got[0] > o2.Start {
			return fmt.Errorf("under retention (start %d, then %d): OffsetsForTime(0) = %v, want the queue's start", o.Start, o2.Start, got)
		}
	}
	return nil
}

// firstAtOrAfter is what OffsetsForTime must answer for a queue holding
// msgs (all of it, in offset order) with offsets o.
func firstAtOrAfter(msgs []*sdk.Message, o *sdk.QueueOffsets, t int64) int64 {
	for _, m := range msgs {
		if m.StoredUnixNano >= t {
			return m.Offset
		}
	}
	return o.End
}
