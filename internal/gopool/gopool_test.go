package gopool

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Every task runs exactly once, from many goroutines at once (go test -race).
func TestEveryTaskRunsOnce(t *testing.T) {
	const senders, each = 16, 2000
	var ran [senders * each]atomic.Int32
	var wg sync.WaitGroup
	wg.Add(senders * each)
	for s := range senders {
		go func() {
			for i := range each {
				n := s*each + i
				Go(func() { ran[n].Add(1); wg.Done() })
			}
		}()
	}
	wg.Wait()
	for i := range ran {
		if got := ran[i].Load(); got != 1 {
			t.Fatalf("task %d ran %d times", i, got)
		}
	}
	if p := parked.Load(); p < 0 || p > MaxParked {
		t.Fatalf("%d goroutines counted as parked", p)
	}
}

// Tasks run one after another reuse one parked goroutine: the pool starts
// far fewer goroutines than it runs tasks. The control: a task that never
// returns holds its goroutine, and the next task needs a new one.
func TestParkedGoroutinesAreReused(t *testing.T) {
	before := started.Load()
	for range 1000 {
		done := make(chan struct{})
		Go(func() { close(done) })
		<-done
		// The goroutine parks after close: wait until it does, so that
		// the next Go finds it (no sleep: a bounded spin on the counter).
		for i := 0; parked.Load() == 0 && i < 1e7; i++ {
		}
	}
	if n := started.Load() - before; n > 10 {
		t.Fatalf("1000 sequential tasks started %d goroutines", n)
	}
	block := make(chan struct{})
	defer close(block)
	for parked.Load() > 0 { // occupy every parked goroutine
		Go(func() { <-block })
	}
	before = started.Load()
	done := make(chan struct{})
	Go(func() { close(done) })
	<-done
	if started.Load() == before {
		t.Fatal("a task ran on no new goroutine while every parked one was busy")
	}
}
