package file

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
)

// The sparse index keeps a running maximum, so a clock set back (a stored
// time below an earlier one) never makes it point past a message stored at
// or after the time sought; trimming keeps that.
func TestTimeIndexRunningMax(t *testing.T) {
	var x timeIndex
	// offset → stored: block 0 has 100..163, block 1 goes back to 50
	// and up, block 2 has one message at 500, then 10 (clock set back).
	for off := int64(0); off < 64; off++ {
		x.note(off, 100+off)
	}
	for off := int64(64); off < 128; off++ {
		x.note(off, 50+off-64)
	}
	x.note(128, 500)
	x.note(129, 10)
	for _, c := range []struct {
		t    int64
		from int64
		ok   bool
	}{
		{math.MinInt64, 0, true}, {100, 0, true}, {163, 0, true}, {164, 128, true}, {500, 128, true}, {501, 0, false},
	} {
		if from, ok := x.from(c.t); from != c.from || ok != c.ok {
			t.Errorf("from(%d) = %d, %v; want %d, %v", c.t, from, ok, c.from, c.ok)
		}
	}
	x.trim(130)
	if from, ok := x.from(0); !ok || from != 128 {
		t.Errorf("after trim(130): from(0) = %d, %v; want 128 (the block of the start)", from, ok)
	}
	if _, ok := x.from(501); ok {
		t.Error("after trim: from(501) found a block")
	}
	// A gap of offsets (holes) keeps the running max.
	x.note(64*5+3, 7)
	if from, ok := x.from(500); !ok || from != 128 {
		t.Errorf("after a gap: from(500) = %d, %v; want 128", from, ok)
	}
}

// logBuffer collects a store's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func openLogged(t *testing.T, dataDir, config string) (*Store, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	s := New()
	s.log = hclog.New(&hclog.LoggerOptions{Name: "storage-file", Output: io.MultiWriter(lb, sdktest.TestWriter(t)), Level: hclog.Info})
	if err := s.Configure(ctx(t), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, lb
}

// seekAll answers OffsetsForTime of queue 0 for every stored time of msgs
// (and one past each), and checks each against msgs.
func seekAll(t *testing.T, s *Store, msgs []*sdk.Message, skip map[int64]bool) map[int64]int64 {
	t.Helper()
	got := map[int64]int64{}
	for _, m := range msgs {
		for _, ts := range []int64{m.StoredUnixNano, m.StoredUnixNano + 1} {
			offs, err := s.OffsetsForTime(ctx(t), ts, []*sdk.QueueRef{{Topic: "t", Queue: 0}})
			if err != nil {
				t.Fatalf("OffsetsForTime(%d): %v", ts, err)
			}
			want := int64(len(msgs))
			for _, m := range msgs {
				if m.StoredUnixNano >= ts && !skip[m.Offset] {
					want = m.Offset
					break
				}
			}
			if offs[0] != want {
				t.Fatalf("OffsetsForTime(%d) = %d, want %d", ts, offs[0], want)
			}
			got[ts] = offs[0]
		}
	}
	return got
}

// appendTimed appends n messages to t/0 in batches of per, each stored
// after the clock passed the previous batch's stored time, and returns
// them as read back.
func appendTimed(t *testing.T, s *Store, n, per int) []*sdk.Message {
	t.Helper()
	var last int64
	for i := 0; i < n; i += per {
		for time.Now().UnixNano() <= last {
		}
		var batch []*sdk.Message
		for j := i; j < min(i+per, n); j++ {
			batch = append(batch, testMsg(0, j))
		}
		appendWait(t, s, batch...)
		got := readQueue(t, s, 0)
		last = got[len(got)-1].StoredUnixNano
	}
	return readQueue(t, s, 0)
}

// Damaged, cut and foreign index files (the checkpoint the time index is
// rebuilt from at open) are named in a warning, their segments scanned and
// the index files written again; every message stays, and seeking by time
// answers exactly as before. The next open reads the rewritten indexes
// without a warning.
func TestSeekByTimeAfterIndexDamage(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB"}`
	s, _ := openLogged(t, dataDir, config)
	msgs := appendTimed(t, s, 300, 7)
	before := seekAll(t, s, msgs, nil)
	_ = s.Close()
	files := segments(t, dataDir)
	if len(files) < 5 {
		t.Fatalf("%d segments: the test needs several sealed ones", len(files))
	}
	damage := []func([]byte) []byte{
		func(b []byte) []byte { b[indexHeaderSize+28] ^= 0x40; return b }, // a stored time
		func(b []byte) []byte { return b[:len(b)/2] },                     // cut
		func(b []byte) []byte { return bytes.Repeat([]byte("junk"), 64) }, // not an index
	}
	for i, fn := range damage {
		p := indexPath(files[i])
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fn(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, lb := openLogged(t, dataDir, config)
	for _, f := range files[:len(damage)] {
		if !strings.Contains(lb.String(), indexPath(f)) || !strings.Contains(lb.String(), "index file is damaged") {
			t.Errorf("no warning names %s:\n%s", indexPath(f), lb.String())
		}
	}
	got := readQueue(t, s, 0)
	if len(got) != len(msgs) {
		t.Fatalf("after the damage: %d messages, want %d", len(got), len(msgs))
	}
	for i := range got {
		if got[i].Id != msgs[i].Id || got[i].StoredUnixNano != msgs[i].StoredUnixNano {
			t.Fatalf("offset %d: %s stored %d, want %s stored %d", i, got[i].Id, got[i].StoredUnixNano, msgs[i].Id, msgs[i].StoredUnixNano)
		}
	}
	if after := seekAll(t, s, msgs, nil); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("seeking after the damage differs")
	}
	_ = s.Close()
	s, lb = openLogged(t, dataDir, config)
	if strings.Contains(lb.String(), "index file is damaged") {
		t.Errorf("the rewritten indexes were not used:\n%s", lb.String())
	}
	seekAll(t, s, msgs, nil)
}

// A damaged record in a sealed, indexed segment (the index vouches for a
// time the log no longer proves) is passed over, logged: the seek answers
// the next intact message at or after the time, never an offset before
// it; the store reads everything else.
func TestSeekByTimePassesOverDamagedRecord(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB"}`
	s, _ := openLogged(t, dataDir, config)
	msgs := appendTimed(t, s, 120, 1)
	_ = s.Close()
	files := segments(t, dataDir)
	data, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	// The first record of the second segment: flip a bit of its body.
	pos := int64(segmentHeaderSize + recordHeaderSize + 20)
	data[pos] ^= 1
	if err := os.WriteFile(files[1], data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, lb := openLogged(t, dataDir, config)
	var bad int64 = -1
	for off := int64(0); off < int64(len(msgs)); off++ {
		if _, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Offset: off, MaxMessages: 1}); err != nil {
			bad = off
			break
		}
	}
	if bad < 0 {
		t.Fatal("no record reads as damaged")
	}
	offs, err := s.OffsetsForTime(ctx(t), msgs[bad].StoredUnixNano, []*sdk.QueueRef{{Topic: "t"}})
	if err != nil || offs[0] != bad+1 {
		t.Fatalf("seek to the damaged record's time: %v, %v; want %d, the next one", offs, err, bad+1)
	}
	if !strings.Contains(lb.String(), "damaged record passed over") {
		t.Errorf("no warning of the damaged record:\n%s", lb.String())
	}
	seekAll(t, s, msgs, map[int64]bool{bad: true})
}
