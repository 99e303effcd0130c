package raft

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

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

// The segment log keeps what raft needs across restarts: entries
// round-trip, a conflicting suffix goes entirely (and durably), compaction
// drops a prefix, segments rotate, gaps (entries after an installed
// snapshot) are kept, and a torn write at the end is cut off at open.
func TestSegLog(t *testing.T) {
	old := segMaxBytes
	segMaxBytes = 2000 // a few dozen entries a segment
	defer func() { segMaxBytes = old }()
	dir := t.TempDir()
	l, err := openSegLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 0, 0)
	for i := uint64(1); i <= 200; i += 10 {
		if err := l.StoreLogs(entries(i, i+9, 1)); err != nil {
			t.Fatal(err)
		}
	}
	checkRange(t, l, 1, 200)
	if len(l.segs) < 3 {
		t.Fatalf("%d segments, want rotation", len(l.segs))
	}
	checkEntry(t, l, 1, 1)
	checkEntry(t, l, 137, 1)
	checkMissing(t, l, 201)
	// A conflicting suffix, deleted then replaced.
	if err := l.DeleteRange(150, 200); err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 1, 149)
	checkMissing(t, l, 150)
	if err := l.StoreLogs(entries(150, 160, 2)); err != nil {
		t.Fatal(err)
	}
	// An overwrite without a delete replaces the rest too.
	if err := l.StoreLogs(entries(155, 158, 3)); err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 1, 158)
	checkEntry(t, l, 154, 2)
	checkEntry(t, l, 158, 3)
	// Compaction.
	if err := l.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 101, 158)
	checkMissing(t, l, 100)
	if err := l.DeleteRange(120, 130); err == nil {
		t.Fatal("deleting from the middle succeeded")
	}
	// A gap: entries after a snapshot.
	if err := l.StoreLogs(entries(5001, 5010, 4)); err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 101, 5010)
	checkMissing(t, l, 4000)
	checkEntry(t, l, 5005, 4)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen: the same log (a partly compacted segment may bring back
	// compacted entries, never later ones).
	l, err = openSegLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := l.FirstIndex(); f > 101 {
		t.Fatalf("first index %d after reopen", f)
	}
	if x, _ := l.LastIndex(); x != 5010 {
		t.Fatalf("last index %d after reopen", x)
	}
	checkEntry(t, l, 120, 1)
	checkEntry(t, l, 154, 2)
	checkEntry(t, l, 158, 3)
	checkMissing(t, l, 159)
	checkEntry(t, l, 5010, 4)
	l.Close()

	// A torn write at the end is cut off.
	last := filepath.Join(dir, segName(5001))
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := appendLog(nil, entries(5011, 5011, 4)[0])
	if _, err := f.Write(append([]byte{0, 0, 0, byte(len(rec)), 1, 2, 3, 4}, rec[:len(rec)-3]...)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, err = openSegLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 101, 5010)
	if err := l.StoreLogs(entries(5011, 5012, 4)); err != nil {
		t.Fatal(err)
	}
	checkEntry(t, l, 5012, 4)
	// Everything deleted (a snapshot past the log), then a new start.
	if err := l.DeleteRange(101, 5012); err != nil {
		t.Fatal(err)
	}
	checkRange(t, l, 0, 0)
	if err := l.StoreLogs(entries(9000, 9001, 5)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = openSegLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkRange(t, l, 9000, 9001)
}

// A node that kept its raft log in bbolt (raft.db) finds it in the segment
// log after an upgrade, and bbolt keeps only the stable keys.
func TestMigrateBoltLogs(t *testing.T) {
	dir := t.TempDir()
	b, err := openBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.StoreLogs(append(entries(1, 2000, 1), entries(3001, 3005, 2)...)); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dir, "log")
	if err := migrateBoltLogs(b, logDir); err != nil {
		t.Fatal(err)
	}
	if last, _ := b.LastIndex(); last != 0 {
		t.Fatalf("bbolt still holds entries up to %d", last)
	}
	if v, err := b.GetUint64([]byte("CurrentTerm")); err != nil || v != 2 {
		t.Fatalf("term = %d, %v", v, err)
	}
	if err := migrateBoltLogs(b, logDir); err != nil { // nothing left to do
		t.Fatal(err)
	}
	l, err := openSegLog(logDir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkRange(t, l, 1, 3005)
	checkEntry(t, l, 1, 1)
	checkEntry(t, l, 2000, 1)
	checkMissing(t, l, 2001)
	checkEntry(t, l, 3003, 2)
}
