package file

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Under flush: sync, AppendEarly tells a batch's offsets once it is written,
// while its fsync is still held back; its AppendWait waits for the fsync
// (FLUSH_TIMEOUT meanwhile) and returns the same offsets.
func TestAppendEarlyBeforeFsync(t *testing.T) {
	s := openStore(t, t.TempDir(), `{"flush": "sync"}`)
	appendWait(t, s, testMsg(0, 0))
	gate := make(chan struct{})
	s.beforeSync = func() { <-gate }
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	written, wait, err := s.AppendEarly(ctx(t), []*sdk.Message{testMsg(0, 1), testMsg(1, 2), testMsg(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	early, err := written(ctx(t))
	if err != nil || fmt.Sprint(early) != "[1 0 0]" {
		t.Fatalf("AppendWritten with the fsync held: %v %v, want [1 0 0]", early, err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if offs, err := wait(short); !errors.Is(err, sdk.ErrFlushTimeout) || fmt.Sprint(offs) != "[1 0 0]" {
		t.Fatalf("AppendWait with the fsync held: %v %v, want [1 0 0] with ErrFlushTimeout", offs, err)
	}
	close(gate)
	offs, err := wait(ctx(t))
	if err != nil || fmt.Sprint(offs) != fmt.Sprint(early) {
		t.Fatalf("AppendWait after the fsync: %v %v, want the early offsets %v", offs, err, early)
	}
}

// A store that fails wakes what waits for the written position.
func TestAppendEarlyFailureWakesWaiters(t *testing.T) {
	s := openStore(t, t.TempDir(), `{"flush": "sync"}`)
	done := make(chan error, 1)
	go func() {
		_, err := s.waitWritten(ctx(t), s.epoch.Load(), s.written.Load()+1000, nil) // never written
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.fail(errors.New("disk on fire"))
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("waitWritten on a failed store succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitWritten not woken by the failure")
	}
}
