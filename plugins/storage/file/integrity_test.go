package file

import (
	"errors"
	"os"
	"strings"
	"testing"
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
