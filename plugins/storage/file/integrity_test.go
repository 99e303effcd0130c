package file

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// writeStore appends n messages to queues 0..queues-1 of a store in 4KiB
// segments, closes it and returns its segment files.
func writeStore(t *testing.T, dataDir string, n, queues int) []string {
	t.Helper()
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	for i := range n {
		appendWait(t, s, testMsg(int32(i%queues), i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return segments(t, dataDir)
}

// checkAll reads every queue and wants every message written by writeStore,
// in order and intact.
func checkAll(t *testing.T, s *Store, n, queues int) {
	t.Helper()
	for q := range queues {
		got := readQueue(t, s, int32(q))
		want := (n - q + queues - 1) / queues
		if len(got) != want {
			t.Fatalf("queue %d: %d messages, want %d", q, len(got), want)
		}
		for i, m := range got {
			w := testMsg(int32(q), i*queues+q)
			if m.Id != w.Id || string(m.Body) != string(w.Body) || m.Offset != int64(i) {
				t.Fatalf("queue %d offset %d: %s@%d, want %s", q, i, m.Id, m.Offset, w.Id)
			}
		}
	}
}

func patchFile(t *testing.T, path string, fn func([]byte)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fn(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Issue 13.1: a damaged segment header (the first one zeroed, a byte of a
// middle one's base flipped, the newest one's checksum broken) costs no
// record: the header is rebuilt from the file name, with and without the
// segments' index files.
func TestDamagedSegmentHeadersKeepRecords(t *testing.T) {
	for _, withIndex := range []bool{true, false} {
		name := "indexed"
		if !withIndex {
			name = "scanned"
		}
		t.Run(name, func(t *testing.T) {
			dataDir := t.TempDir()
			const n, queues = 120, 3
			files := writeStore(t, dataDir, n, queues)
			if len(files) < 4 {
				t.Fatalf("%d segments, want at least 4", len(files))
			}
			if !withIndex {
				for _, f := range files {
					_ = os.Remove(indexPath(f))
				}
			}
			patchFile(t, files[0], func(b []byte) { clear(b[:segmentHeaderSize]) })
			patchFile(t, files[len(files)/2], func(b []byte) { b[17] ^= 0x40 })
			patchFile(t, files[len(files)-1], func(b []byte) { b[25] ^= 1 })
			s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
			checkAll(t, s, n, queues)
			if got := segments(t, dataDir); len(got) != len(files) {
				t.Fatalf("%d segments after recovery, want all %d", len(got), len(files))
			}
			// The headers are whole again, and the log goes on.
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := parseSegmentHeader(b[:segmentHeaderSize]); err != nil {
					t.Fatalf("%s: header not rebuilt: %v", f, err)
				}
			}
			if offs := appendWait(t, s, testMsg(0, n)); offs[0] != (n+queues-1)/queues {
				t.Fatalf("next append got offset %d", offs[0])
			}
			_ = s.Close()
			s = openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
			if got := readQueue(t, s, 0); len(got) != (n+queues-1)/queues+1 {
				t.Fatalf("after a second open: %d messages in queue 0", len(got))
			}
		})
	}
}

// A file named like a segment that holds neither a Ferry header nor a Ferry
// record is refused, untouched, with an error naming it and what to do.
func TestForeignSegmentRefusedWithAdvice(t *testing.T) {
	dataDir := t.TempDir()
	files := writeStore(t, dataDir, 40, 1)
	junk := strings.Repeat("not a segment ", 100)
	patchFile(t, files[1], func(b []byte) { copy(b, junk) })
	before, _ := os.ReadFile(files[1])
	_, err := tryOpen(t, dataDir, `{"segment_bytes": "4KiB"}`)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), files[1]) || !strings.Contains(err.Error(), "ferry storage check") {
		t.Fatalf("open over a foreign segment file: %v, want ErrIncompatible naming %s and the check command", err, files[1])
	}
	after, _ := os.ReadFile(files[1])
	if string(after) != string(before) || len(segments(t, dataDir)) != len(files) {
		t.Fatal("the refused open changed the store")
	}
}

// readAll reads queue q from offset 0 to its end one message at a time and
// returns the messages by offset and the offsets answered sdk.ErrCorrupt.
func readAll(t *testing.T, s *Store, q int32) (map[int64]*sdk.Message, []int64) {
	t.Helper()
	o, err := s.GetOffsets(ctx(t), "", []*sdk.QueueRef{{Topic: "t", Queue: q}})
	if err != nil {
		t.Fatal(err)
	}
	msgs := map[int64]*sdk.Message{}
	var bad []int64
	for off := o[0].Start; off < o[0].End; {
		resp, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: q, Offset: off, MaxMessages: 1000})
		switch {
		case errors.Is(err, sdk.ErrCorrupt):
			bad = append(bad, off)
			off++
		case err != nil:
			t.Fatal(err)
		case len(resp.Messages) == 0:
			t.Fatalf("queue %d: nothing at offset %d below the end %d", q, off, o[0].End)
		default:
			for _, m := range resp.Messages {
				if m.Offset != off {
					t.Fatalf("queue %d: read at %d gave offset %d", q, off, m.Offset)
				}
				msgs[off] = m
				off++
			}
		}
	}
	return msgs, bad
}

// recordAt returns the log position and size of queue q's record at offset.
func recordAt(t *testing.T, s *Store, q int32, offset int64) entry {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	qq := s.queues[queueKey{"t", q}]
	return qq.ents[offset-qq.start]
}

// segmentOf returns the file and the position in it of log position pos.
func segmentOf(t *testing.T, files []string, pos int64) (string, int64) {
	t.Helper()
	for i := len(files) - 1; i >= 0; i-- {
		base, _ := strconv.ParseInt(strings.TrimSuffix(filepath.Base(files[i]), segmentSuffix), 10, 64)
		if base <= pos {
			return files[i], segmentHeaderSize + pos - base
		}
	}
	t.Fatalf("no segment holds %d", pos)
	return "", 0
}

// Issue 13.2: one flipped byte in a record of the newest segment that valid
// records follow is corruption, not a torn tail: the records after it are
// kept, the damaged offset is a hole (read as ErrCorrupt, never delivered,
// never given to another message), and the store goes on after the last
// offset it held.
func TestCorruptRecordMidActiveSegmentKeepsTheRest(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "1MiB"}`
	s := openStore(t, dataDir, config)
	const n = 300
	for i := range n {
		appendWait(t, s, testMsg(int32(i%2), i))
	}
	bad := recordAt(t, s, 0, 60) // message 120
	_ = s.Close()
	files := segments(t, dataDir)
	if len(files) != 1 {
		t.Fatalf("%d segments, want 1", len(files))
	}
	patchFile(t, files[0], func(b []byte) { b[segmentHeaderSize+bad.pos+int64(bad.size)/2] ^= 0x10 })

	s = openStore(t, dataDir, config)
	for q := range int32(2) {
		msgs, holes := readAll(t, s, q)
		wantHoles := "[]"
		if q == 0 {
			wantHoles = "[60]"
		}
		if fmt.Sprint(holes) != wantHoles || len(msgs) != n/2-len(holes) {
			t.Fatalf("queue %d: %d messages, corrupt offsets %v; want %d and %s", q, len(msgs), holes, n/2-len(holes), wantHoles)
		}
		for off, m := range msgs {
			if w := testMsg(q, int(off)*2+int(q)); m.Id != w.Id || string(m.Body) != string(w.Body) {
				t.Fatalf("queue %d offset %d: %s, want %s", q, off, m.Id, w.Id)
			}
		}
	}
	if offs := appendWait(t, s, testMsg(0, 1000)); offs[0] != n/2 {
		t.Fatalf("next append got offset %d, want %d (no offset reused)", offs[0], n/2)
	}
	// The hole and the kept records survive another open, and the
	// retry of a message kept after the damage is de-duplicated.
	_ = s.Close()
	s = openStore(t, dataDir, config)
	if offs := appendWait(t, s, testMsg(0, 200)); offs[0] != 100 {
		t.Fatalf("retry of message 200 got offset %d, want its original 100", offs[0])
	}
	msgs, holes := readAll(t, s, 0)
	if fmt.Sprint(holes) != "[60]" || len(msgs) != n/2 {
		t.Fatalf("after a second open: %d messages, corrupt %v", len(msgs), holes)
	}
}

// A bad record whose size field is damaged too: the scan finds the next
// record by its magic and keeps everything after it.
func TestCorruptRecordSizeResync(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "1MiB"}`
	s := openStore(t, dataDir, config)
	for i := range 50 {
		appendWait(t, s, testMsg(0, i))
	}
	bad := recordAt(t, s, 0, 20)
	_ = s.Close()
	files := segments(t, dataDir)
	patchFile(t, files[0], func(b []byte) {
		binary.LittleEndian.PutUint32(b[segmentHeaderSize+bad.pos+4:], 1<<30) // size
	})
	s = openStore(t, dataDir, config)
	msgs, holes := readAll(t, s, 0)
	if fmt.Sprint(holes) != "[20]" || len(msgs) != 49 {
		t.Fatalf("%d messages, corrupt %v; want 49 and [20]", len(msgs), holes)
	}
	if offs := appendWait(t, s, testMsg(0, 50)); offs[0] != 50 {
		t.Fatalf("next append got offset %d, want 50", offs[0])
	}
}

// The damaged record is the last of its queue, and only other queues'
// records follow: the offset its header names stays taken.
func TestCorruptLastRecordOfAQueueKeepsItsOffset(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "1MiB"}`
	s := openStore(t, dataDir, config)
	for i := range 10 {
		appendWait(t, s, testMsg(1, i))
	}
	for i := range 10 {
		appendWait(t, s, testMsg(0, 100+i))
	}
	bad := recordAt(t, s, 1, 9)
	_ = s.Close()
	patchFile(t, segments(t, dataDir)[0], func(b []byte) { b[segmentHeaderSize+bad.pos+int64(bad.size)-3] ^= 0xff })
	s = openStore(t, dataDir, config)
	if _, holes := readAll(t, s, 1); fmt.Sprint(holes) != "[9]" {
		t.Fatalf("queue 1 corrupt offsets %v, want [9]", holes)
	}
	if offs := appendWait(t, s, testMsg(1, 50)); offs[0] != 10 {
		t.Fatalf("next append to queue 1 got offset %d, want 10 (9 was the damaged record's)", offs[0])
	}
	if msgs, _ := readAll(t, s, 0); len(msgs) != 10 {
		t.Fatalf("queue 0: %d messages, want 10", len(msgs))
	}
}

// A torn tail (the last write incomplete: cut short, or its last bytes
// garbage with nothing valid after them) is cut, and only it.
func TestTornTailIsCutOnlyIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(b []byte, last entry) []byte
	}{
		{"short", func(b []byte, last entry) []byte { return b[:segmentHeaderSize+last.pos+int64(last.size)-5] }},
		{"garbage", func(b []byte, last entry) []byte {
			for i := segmentHeaderSize + last.pos + 20; i < int64(len(b)); i++ {
				b[i] = 0xa5
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			config := `{"segment_bytes": "1MiB", "preallocate": false}`
			s := openStore(t, dataDir, config)
			for i := range 30 {
				appendWait(t, s, testMsg(0, i))
			}
			last := recordAt(t, s, 0, 29)
			_ = s.Close()
			seg := segments(t, dataDir)[0]
			b, _ := os.ReadFile(seg)
			if err := os.WriteFile(seg, tc.tear(b, last), 0o644); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dataDir, config)
			msgs, holes := readAll(t, s, 0)
			if len(msgs) != 29 || len(holes) != 0 {
				t.Fatalf("%d messages, corrupt %v; want the 29 before the torn one", len(msgs), holes)
			}
			if st, _ := os.Stat(seg); st.Size() != segmentHeaderSize+last.pos {
				t.Fatalf("segment is %d bytes, want it cut at %d", st.Size(), segmentHeaderSize+last.pos)
			}
			if offs := appendWait(t, s, testMsg(0, 29)); offs[0] != 29 {
				t.Fatalf("the retried torn message got offset %d, want 29", offs[0])
			}
		})
	}
}

// Damage in a sealed, unindexed segment: the record is skipped, everything
// after it (in that segment and the later ones) is kept.
func TestCorruptRecordInSealedSegmentKeepsLaterSegments(t *testing.T) {
	dataDir := t.TempDir()
	files := writeStore(t, dataDir, 40, 1)
	if len(files) < 3 {
		t.Fatalf("%d segments, want at least 3", len(files))
	}
	patchFile(t, files[1], func(b []byte) { b[segmentHeaderSize+recordHeaderSize+10] ^= 1 })
	// Without its index file the segment is scanned (with one, the damage
	// is found when the record is read: TestIndexedSegmentDamage).
	if err := os.Remove(indexPath(files[1])); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	msgs, holes := readAll(t, s, 0)
	if len(holes) != 1 || len(msgs) != 39 {
		t.Fatalf("%d messages, corrupt %v; want 39 and one", len(msgs), holes)
	}
	if n := len(segments(t, dataDir)); n != len(files) {
		t.Fatalf("%d segments after recovery, want all %d", n, len(files))
	}
	if _, err := os.Stat(indexPath(files[1])); err == nil {
		t.Fatal("the damaged segment got an index file (it must be scanned at every open)")
	}
	if offs := appendWait(t, s, testMsg(0, 999)); offs[0] != 40 {
		t.Fatalf("next append got offset %d, want 40", offs[0])
	}
}

// Issue 13.4: the log lost its tail (here: the newest records cut, as a
// torn write or a machine crash under flush: async leaves it) below a
// group's commit. The commit is moved back to the queue's end at open, and
// stays there across another open, so the group consumes the new messages
// that take those offsets instead of skipping them.
func TestCommitPastEndClampedAtOpen(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "1MiB", "preallocate": false}`
	s := openStore(t, dataDir, config)
	for i := range 50 {
		appendWait(t, s, testMsg(0, i))
	}
	cut := recordAt(t, s, 0, 40)
	if err := s.CommitOffsets(ctx(t), "g", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 50}, {Topic: "t", Queue: 1, Offset: 7}}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	seg := segments(t, dataDir)[0]
	if err := os.Truncate(seg, segmentHeaderSize+cut.pos+3); err != nil {
		t.Fatal(err)
	}
	committed := func(s *Store) string {
		o, err := s.GetOffsets(ctx(t), "g", []*sdk.QueueRef{{Topic: "t", Queue: 0}, {Topic: "t", Queue: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d/%d %d/%d", o[0].Committed, o[0].End, o[1].Committed, o[1].End)
	}
	s = openStore(t, dataDir, config)
	if got := committed(s); got != "40/40 0/0" {
		t.Fatalf("after the tail was lost: committed/end %s, want 40/40 0/0", got)
	}
	_ = s.Close()
	s = openStore(t, dataDir, config)
	if got := committed(s); got != "40/40 0/0" {
		t.Fatalf("after another open: committed/end %s, want 40/40 0/0 (the clamp is on disk)", got)
	}
}

// The newest segment was just created (no record yet) and its header's
// magic is damaged: it holds nothing, so the header is rebuilt and the
// store opens, with everything before it.
func TestDamagedHeaderOfEmptyNewestSegment(t *testing.T) {
	dataDir := t.TempDir()
	files := writeStore(t, dataDir, 40, 1)
	last := files[len(files)-1]
	base, _ := strconv.ParseInt(strings.TrimSuffix(filepath.Base(last), segmentSuffix), 10, 64)
	st, _ := os.Stat(last)
	empty := filepath.Join(filepath.Dir(last), fmt.Sprintf(segmentNameFormat, base+st.Size()-segmentHeaderSize))
	h := segmentHeader(base + st.Size() - segmentHeaderSize)
	h[2] ^= 0x01
	if err := os.WriteFile(empty, h, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	if got := readQueue(t, s, 0); len(got) != 40 {
		t.Fatalf("%d messages, want 40", len(got))
	}
	if offs := appendWait(t, s, testMsg(0, 40)); offs[0] != 40 {
		t.Fatalf("next append got offset %d, want 40", offs[0])
	}
}
