package file

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// With flush sync, log_durable appends are answered and readable without an
// fsync of their own: a machine crash loses them (the raft log holds them),
// an append without the mark fsyncs them along with itself, and Sync makes
// them durable. Without the mark (the control), the same appends survive.
func TestLogDurableAppendsSkipTheFsync(t *testing.T) {
	for _, lazy := range []bool{true, false} {
		t.Run(fmt.Sprintf("log_durable=%v", lazy), func(t *testing.T) {
			dataDir := t.TempDir()
			const config = `{"flush": "sync", "flush_interval": "1h", "segment_bytes": "64KiB"}`
			s := openStore(t, dataDir, config)
			c := ctx(t)
			if lazy {
				c = sdk.WithLogDurable(c)
			}
			// Synced first: 5 appends with Sync after them.
			for i := range 5 {
				appendCtx(t, s, c, testMsg(0, i))
			}
			if err := s.Sync(ctx(t)); err != nil {
				t.Fatal(err)
			}
			before := s.fsyncs.Load()
			for i := 5; i < 10; i++ {
				appendCtx(t, s, c, testMsg(0, i))
			}
			if got := len(readQueue(t, s, 0)); got != 10 {
				t.Fatalf("readable before the crash: %d, want 10", got)
			}
			fsyncs := s.fsyncs.Load() - before
			if lazy && fsyncs != 0 {
				t.Fatalf("%d fsyncs for log_durable appends, want 0", fsyncs)
			}
			if err := s.CrashLoseUnflushed(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dataDir, config)
			want := 10
			if lazy {
				want = 5 // the unsynced ones are gone, those before Sync kept
			}
			if got := len(readQueue(t, s, 0)); got != want {
				t.Fatalf("after the crash: %d messages, want %d", got, want)
			}
			// An append without the mark fsyncs the lazy ones before it.
			lc := sdk.WithLogDurable(ctx(t))
			for i := 20; i < 23; i++ {
				appendCtx(t, s, lc, testMsg(0, i))
			}
			appendCtx(t, s, ctx(t), testMsg(0, 30))
			if err := s.CrashLoseUnflushed(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dataDir, config)
			if got := len(readQueue(t, s, 0)); got != want+4 {
				t.Fatalf("after an fsynced append and a crash: %d messages, want %d", got, want+4)
			}
		})
	}
}

func appendCtx(t *testing.T, s *Store, c context.Context, msgs ...*sdk.Message) []int64 {
	t.Helper()
	w, err := s.Append(c, msgs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	offs, err := w(c)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return offs
}

// A power loss that tears the first record the last fsync did not cover
// (CrashTearUnflushed: half of it reaches the disk): the bytes of the torn
// half are in the file, and recovery cuts the torn record, keeping every
// message before it. This is what a raft node's store holds after such a
// crash (its entries were appended log-durable); raft applies the rest
// again from its log.
func TestTornTailAfterPowerLoss(t *testing.T) {
	dataDir := t.TempDir()
	const config = `{"flush": "sync", "flush_interval": "1h", "segment_bytes": "64KiB"}`
	s := openStore(t, dataDir, config)
	for i := range 5 {
		appendCtx(t, s, ctx(t), testMsg(0, i))
	}
	lc := sdk.WithLogDurable(ctx(t))
	for i := 5; i < 10; i++ {
		appendCtx(t, s, lc, testMsg(0, i))
	}
	pos, size, err := s.CrashTearUnflushed()
	if err != nil {
		t.Fatal(err)
	}
	if size == 0 {
		t.Fatal("nothing was torn: the log-durable appends were fsynced")
	}
	seg := segments(t, dataDir)
	if len(seg) != 1 {
		t.Fatalf("%d segments, want 1", len(seg))
	}
	b, err := os.ReadFile(seg[0])
	if err != nil {
		t.Fatal(err)
	}
	at := segmentHeaderSize + pos
	half := at + int64(size)/2
	if int64(len(b)) < half || bytes.Count(b[at:half], []byte{0}) == int(half-at) {
		t.Fatalf("the torn record's first half (bytes %d to %d of %d) is not in the file", at, half, len(b))
	}
	if end := min(at+int64(size), int64(len(b))); bytes.Count(b[half:end], []byte{0}) != int(end-half) {
		t.Fatalf("the torn record's second half (bytes %d to %d) survived the power loss", half, end)
	}
	s = openStore(t, dataDir, config)
	if got := len(readQueue(t, s, 0)); got != 5 {
		t.Fatalf("after the torn power loss: %d messages, want the 5 fsynced", got)
	}
	if offs := appendCtx(t, s, ctx(t), testMsg(0, 50)); offs[0] != 5 {
		t.Fatalf("the next append got offset %d, want 5 (the torn record cut)", offs[0])
	}
}

// A power loss that tears a record inside a batch of several messages (a
// raft entry's, appended log-durable in one call): the records of the batch
// before the torn one survive whole (CrashTearUnflushedAt), recovery cuts
// the torn one, and the batch appended again whole, as raft applies its
// entry again from its log, takes the survivors back at their offsets (the
// store de-duplicates them by id) and stores the rest after them, once
// each, in the batch's order.
func TestTornBatchAppliedAgainAfterPowerLoss(t *testing.T) {
	dataDir := t.TempDir()
	const config = `{"flush": "sync", "flush_interval": "1h", "segment_bytes": "64KiB"}`
	s := openStore(t, dataDir, config)
	for i := range 5 {
		appendCtx(t, s, ctx(t), testMsg(0, i))
	}
	var entry []*sdk.Message // one entry of 5 messages
	for i := 5; i < 10; i++ {
		entry = append(entry, testMsg(0, i))
	}
	if offs := appendCtx(t, s, sdk.WithLogDurable(ctx(t)), entry...); offs[0] != 5 || offs[4] != 9 {
		t.Fatalf("the entry was stored at %v, want 5 to 9", offs)
	}
	if _, size, err := s.CrashTearUnflushedAt(3); err != nil || size == 0 {
		t.Fatalf("tear the 3rd unsynced record: size %d, %v", size, err)
	}
	s = openStore(t, dataDir, config)
	if got := readQueue(t, s, 0); len(got) != 7 || got[6].Id != entry[1].Id {
		t.Fatalf("after the power loss: %d messages, want the 5 fsynced and the entry's first 2", len(got))
	}
	offs := appendCtx(t, s, sdk.WithLogDurable(ctx(t)), entry...)
	if !slices.Equal(offs, []int64{5, 6, 7, 8, 9}) {
		t.Fatalf("the entry applied again was stored at %v, want 5 to 9", offs)
	}
	got := readQueue(t, s, 0)
	if len(got) != 10 {
		t.Fatalf("%d messages after the entry was applied again, want 10", len(got))
	}
	for i, m := range got {
		if want := testMsg(0, i).Id; m.Id != want || m.Offset != int64(i) {
			t.Errorf("offset %d holds %s at offset %d, want %s", i, m.Id, m.Offset, want)
		}
	}
}

// The lying-disk power loss (verify's negative control) drops the newer half
// of what was fsynced as well as what was not; a plain power loss of the same
// log keeps every fsynced record (the control).
func TestCrashLyingDiskDropsFsyncedRecords(t *testing.T) {
	const config = `{"flush": "sync", "flush_interval": "1h", "segment_bytes": "64KiB"}`
	fill := func(t *testing.T) (string, *Store) {
		dataDir := t.TempDir()
		s := openStore(t, dataDir, config)
		for i := range 10 {
			appendCtx(t, s, ctx(t), testMsg(0, i)) // fsynced before the ack
		}
		lc := sdk.WithLogDurable(ctx(t))
		for i := 10; i < 13; i++ {
			appendCtx(t, s, lc, testMsg(0, i)) // not fsynced
		}
		return dataDir, s
	}
	dataDir, s := fill(t)
	if err := s.CrashLoseUnflushed(); err != nil {
		t.Fatal(err)
	}
	if got := len(readQueue(t, openStore(t, dataDir, config), 0)); got != 10 {
		t.Fatalf("after a power loss: %d messages, want the 10 fsynced", got)
	}
	dataDir, s = fill(t)
	dropped, err := s.CrashLyingDisk()
	if err != nil || dropped != 5 {
		t.Fatalf("lying disk: dropped %d fsynced records (%v), want 5", dropped, err)
	}
	got := readQueue(t, openStore(t, dataDir, config), 0)
	if len(got) != 5 || got[4].Id != testMsg(0, 4).Id {
		t.Fatalf("after a lying disk's power loss: %d messages, want the first 5", len(got))
	}
}
