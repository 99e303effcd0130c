package raft

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
)

// The bbolt log store keeps what raft needs: entries round-trip, ranges
// delete completely (a conflicting suffix must go entirely, or a follower
// could later apply entries that were never committed), and the stable
// store reports missing keys as raft expects.
func TestBoltStore(t *testing.T) {
	s, err := openBoltStore(filepath.Join(t.TempDir(), "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var logs []*hraft.Log
	for i := uint64(1); i <= 100; i++ {
		logs = append(logs, &hraft.Log{Index: i, Term: i / 10, Type: hraft.LogCommand, Data: []byte{byte(i)}, AppendedAt: time.Unix(0, int64(i))})
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	var got hraft.Log
	if err := s.GetLog(42, &got); err != nil || got.Term != 4 || got.Data[0] != 42 || got.AppendedAt.UnixNano() != 42 {
		t.Fatalf("GetLog(42) = %+v, %v", got, err)
	}
	if err := s.DeleteRange(50, 100); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 49 {
		t.Fatalf("after DeleteRange(50, 100): last index %d, want 49", last)
	}
	for i := uint64(50); i <= 100; i++ {
		if err := s.GetLog(i, &got); !errors.Is(err, hraft.ErrLogNotFound) {
			t.Fatalf("entry %d survived DeleteRange: %v", i, err)
		}
	}
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 11 {
		t.Fatalf("first index %d, want 11", first)
	}
	if _, err := s.Get([]byte("missing")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get(missing) = %v, want \"not found\"", err)
	}
	if err := s.SetUint64([]byte("term"), 7); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("term")); err != nil || v != 7 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
}
