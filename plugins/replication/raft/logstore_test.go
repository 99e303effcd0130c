package raft

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
)

func entries(from, to, term uint64) []*hraft.Log {
	var logs []*hraft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, &hraft.Log{Index: i, Term: term, Type: hraft.LogCommand, Data: []byte{byte(i), byte(term)}, AppendedAt: time.Unix(0, int64(i))})
	}
	return logs
}

func checkRange(t *testing.T, l hraft.LogStore, first, last uint64) {
	t.Helper()
	if f, _ := l.FirstIndex(); f != first {
		t.Fatalf("first index %d, want %d", f, first)
	}
	if x, _ := l.LastIndex(); x != last {
		t.Fatalf("last index %d, want %d", x, last)
	}
}

func checkEntry(t *testing.T, l hraft.LogStore, i, term uint64) {
	t.Helper()
	var got hraft.Log
	if err := l.GetLog(i, &got); err != nil || got.Index != i || got.Term != term || got.Data[0] != byte(i) || got.Data[1] != byte(term) || got.AppendedAt.UnixNano() != int64(i) {
		t.Fatalf("GetLog(%d) = %+v, %v; want term %d", i, got, err, term)
	}
}

func checkMissing(t *testing.T, l hraft.LogStore, i uint64) {
	t.Helper()
	var got hraft.Log
	if err := l.GetLog(i, &got); !errors.Is(err, hraft.ErrLogNotFound) {
		t.Fatalf("GetLog(%d) = %v, want not found", i, err)
	}
}

func mustOpenWAL(t *testing.T, dir string) raftLog {
	t.Helper()
	w, err := openWAL(dir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// The WAL keeps what raft needs across restarts, as the plugin uses it:
// entries round-trip, a conflicting suffix goes entirely (or a follower
// could later apply entries that were never committed), compaction drops a
// prefix, term and vote persist (a key never set reads as 0, which raft
// takes as unset), and after a snapshot install (raft deletes the whole
// log of a monotonic store, then appends after the snapshot's index) the
// log restarts at the new index. It reopens in the same process (a node
// restarted in-process). raft-wal v0.4.0 failed the reopen after a suffix
// deletion ("sealed segment has no index block", hashicorp/raft-wal#31,
// fixed in v0.4.1), and its Close left the meta database locked.
func TestWAL(t *testing.T) {
	dir := t.TempDir()
	w := mustOpenWAL(t, dir)
	if m, ok := hraft.LogStore(w).(hraft.MonotonicLogStore); !ok || !m.IsMonotonic() {
		t.Fatal("the WAL does not tell raft it takes no gaps: raft would leave the old log in place after a snapshot install")
	}
	checkRange(t, w, 0, 0)
	if v, err := w.GetUint64([]byte("CurrentTerm")); err != nil || v != 0 {
		t.Fatalf("unset term = %d, %v", v, err)
	}
	for i := uint64(1); i <= 200; i += 10 {
		if err := w.StoreLogs(entries(i, i+9, 1)); err != nil {
			t.Fatal(err)
		}
	}
	checkRange(t, w, 1, 200)
	checkEntry(t, w, 137, 1)
	checkMissing(t, w, 201)
	// A conflicting suffix, deleted then replaced.
	if err := w.DeleteRange(150, 200); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 1, 149)
	checkMissing(t, w, 150)
	if err := w.StoreLogs(entries(150, 160, 2)); err != nil {
		t.Fatal(err)
	}
	// Compaction.
	if err := w.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 101, 160)
	checkMissing(t, w, 100)
	if err := w.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	if err := w.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	w = mustOpenWAL(t, dir)
	checkRange(t, w, 101, 160)
	checkEntry(t, w, 120, 1)
	checkEntry(t, w, 155, 2)
	checkMissing(t, w, 161)
	if v, err := w.GetUint64([]byte("CurrentTerm")); err != nil || v != 2 {
		t.Fatalf("term after reopen = %d, %v", v, err)
	}
	if v, err := w.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Fatalf("vote after reopen = %q, %v", v, err)
	}
	// A snapshot install past the log: all of it goes, then the entries
	// after the snapshot.
	if err := w.DeleteRange(101, 160); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 0, 0)
	if err := w.StoreLogs(entries(5001, 5010, 3)); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 5001, 5010)
	// A gap is refused, not stored (raft never writes one to this store).
	if err := w.StoreLogs(entries(6001, 6001, 3)); err == nil {
		t.Fatal("an entry after a gap was stored")
	}
	w.Close()
	w = mustOpenWAL(t, dir)
	defer w.Close()
	checkRange(t, w, 5001, 5010)
	checkEntry(t, w, 5005, 3)
	if err := w.StoreLogs(entries(5011, 5011, 3)); err != nil {
		t.Fatal(err)
	}
	// Compaction within one segment: what it deleted is gone for raft too
	// (the leader sends a snapshot instead).
	if err := w.DeleteRange(5001, 5005); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 5006, 5011)
	checkMissing(t, w, 5005)
	checkEntry(t, w, 5006, 3)
}

// A write torn by a crash (the process killed, or the machine, before the
// fsync returned: nothing of it was acknowledged) is cut off at open; what
// was written before stays, and the log takes new entries after it.
func TestWALTornWrite(t *testing.T) {
	for _, garbage := range []byte{0, 0xa5} {
		dir := t.TempDir()
		w := mustOpenWAL(t, dir)
		if err := w.StoreLogs(entries(1, 10, 1)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		seg := tailSegment(t, dir)
		before, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		w = mustOpenWAL(t, dir)
		if err := w.StoreLogs(entries(11, 20, 1)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		after, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		// The second write's bytes: only its first half reached the disk.
		lo, hi := -1, -1
		for i := range after {
			if i >= len(before) || after[i] != before[i] {
				if lo < 0 {
					lo = i
				}
				hi = i
			}
		}
		if lo < 0 {
			t.Fatal("the second write changed nothing in the tail segment")
		}
		torn := append([]byte(nil), after...)
		for i := lo + (hi-lo)/2; i <= hi; i++ {
			torn[i] = garbage
		}
		if err := os.WriteFile(seg, torn, 0o644); err != nil {
			t.Fatal(err)
		}
		w = mustOpenWAL(t, dir)
		checkRange(t, w, 1, 10)
		checkEntry(t, w, 10, 1)
		checkMissing(t, w, 11)
		if err := w.StoreLogs(entries(11, 12, 2)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		w = mustOpenWAL(t, dir)
		checkRange(t, w, 1, 12)
		checkEntry(t, w, 12, 2)
		w.Close()
	}
}

func tailSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v; want one", segs, err)
	}
	return segs[0]
}

// A data dir with raft state in a format before raft-wal (never released)
// is refused rather than started with an empty log and term.
func TestWALRefusesOldFormats(t *testing.T) {
	for _, name := range oldLogFiles {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if w, err := openWAL(dir, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), name) {
			if w.WAL != nil {
				w.Close()
			}
			t.Fatalf("%s: openWAL = %v, want refused", name, err)
		}
	}
}
