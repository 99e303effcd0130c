package sdktest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ferrymq/ferry/core/sdk"
)

// EarlyOffsets (sdk.EarlyOffsets, for the stores that have it; through the
// plugin boundary always, since the host's client has it whether the plugin
// answers early or not): the offsets an AppendWritten tells are the ones the
// batch's AppendWait returns, for batches issued from one goroutine, in order,
// and awaited concurrently as the broker does; duplicates (within a batch and
// of earlier batches) get their original offsets early too; every message
// reads back at the offset it was told.
func testEarlyOffsets(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	es, ok := s.Storage.(sdk.EarlyOffsets)
	if !ok {
		return Skip("%T does not implement sdk.EarlyOffsets", s.Storage)
	}
	const batches, queues = 60, 3
	type outcome struct {
		msgs           []*sdk.Message
		written, final []int64
		err            error
	}
	outs := make([]outcome, batches)
	var wg sync.WaitGroup
	for i := range batches {
		var batch []*sdk.Message
		for j := range 4 {
			q := int32((i + j) % queues)
			batch = append(batch, msg("early", q, fmt.Sprintf("m%d-%d", i, j)))
		}
		if i%5 == 4 {
			// A retry of a message of an earlier batch, and the same
			// id twice in this one.
			batch = append(batch, msg("early", int32((i-3)%queues), fmt.Sprintf("m%d-0", i-3)), msg("early", batch[1].Queue, batch[1].Id))
		}
		outs[i].msgs = batch
		written, wait, err := es.AppendEarly(context.Background(), batch)
		if err != nil {
			wg.Wait()
			return fmt.Errorf("AppendEarly batch %d: %w", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := ctxT()
			defer cancel()
			o := &outs[i]
			if o.written, o.err = written(ctx); o.err != nil {
				o.err = fmt.Errorf("AppendWritten: %w", o.err)
				return
			}
			if o.final, o.err = wait(ctx); o.err != nil {
				o.err = fmt.Errorf("AppendWait: %w", o.err)
			}
		}()
	}
	wg.Wait()
	byQueue := map[int32]map[int64]string{}
	for q := range int32(queues) {
		byQueue[q] = map[int64]string{}
	}
	for i, o := range outs {
		if o.err != nil {
			return fmt.Errorf("batch %d: %v", i, o.err)
		}
		if len(o.written) != len(o.msgs) {
			return fmt.Errorf("batch %d: AppendWritten told %d offsets for %d messages", i, len(o.written), len(o.msgs))
		}
		if !slices.Equal(o.written, o.final) {
			return fmt.Errorf("batch %d: offsets told early %v, AppendWait returned %v: they must be equal", i, o.written, o.final)
		}
		for j, m := range o.msgs {
			if id, ok := byQueue[m.Queue][o.written[j]]; ok && id != m.Id {
				return fmt.Errorf("batch %d: %s and %s both told queue %d offset %d", i, id, m.Id, m.Queue, o.written[j])
			}
			byQueue[m.Queue][o.written[j]] = m.Id
		}
	}
	for q := range int32(queues) {
		got, err := readAll(s, "early", q, 0)
		if err != nil {
			return err
		}
		if len(got) != len(byQueue[q]) {
			return fmt.Errorf("queue %d: read %d messages, %d distinct offsets were told", q, len(got), len(byQueue[q]))
		}
		for i, m := range got {
			if want := byQueue[q][int64(i)]; m.Id != want {
				return fmt.Errorf("queue %d offset %d holds %q, %q was told that offset", q, i, m.Id, want)
			}
		}
	}
	return nil
}
