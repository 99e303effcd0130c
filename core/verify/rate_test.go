package verify

import (
	"context"
	"strings"
	"testing"
	"time"
)

// With a rate a producer's sends are paced: none starts before it is due
// (the n-th at start + n/rate), and a send's latency counts from when it
// was due, also when the producer is behind. Without a rate each send is
// due at once.
func TestRatePaces(t *testing.T) {
	start := time.Now()
	w := &work{start: start, rate: 500}
	for seq := range int64(50) {
		at := w.due(context.Background(), seq)
		want := start.Add(time.Duration(seq) * 2 * time.Millisecond)
		if !at.Equal(want) {
			t.Fatalf("send %d due at %v, want %v", seq, at.Sub(start), want.Sub(start))
		}
		if now := time.Now(); now.Before(at) {
			t.Fatalf("send %d started %v before it was due", seq, at.Sub(now))
		}
	}
	// Behind (the 10-th was due long ago): due at once, at its own time.
	late := &work{start: time.Now().Add(-time.Hour), rate: 1}
	before := time.Now()
	if at := late.due(context.Background(), 10); time.Since(before) > time.Minute || !at.Equal(late.start.Add(10*time.Second)) {
		t.Fatalf("a late send waited %v, due at %v", time.Since(before), at.Sub(late.start))
	}
	// The control: closed loop, no pacing.
	closed := &work{start: start}
	if at := closed.due(context.Background(), 1e9); at.Sub(time.Now()) > time.Second {
		t.Fatalf("closed loop due %v ahead", at.Sub(time.Now()))
	}
}

// A negative or infinite rate is refused before anything starts.
func TestRateRefused(t *testing.T) {
	for _, r := range []float64{-1, posInf()} {
		_, err := Run(context.Background(), Options{Pipeline: "no-such.yaml", Duration: time.Second, Producers: 1, Size: 64, Rate: r})
		if err == nil || !strings.Contains(err.Error(), "rate") {
			t.Errorf("rate %v: %v; want the rate refused", r, err)
		}
	}
	// The control: a good rate gets past the check (to the missing file).
	_, err := Run(context.Background(), Options{Pipeline: "no-such.yaml", Duration: time.Second, Producers: 1, Size: 64, Rate: 10})
	if err == nil || strings.Contains(err.Error(), "rate") {
		t.Errorf("rate 10: %v; want an error about the pipeline file", err)
	}
}

func posInf() float64 { var z float64; return 1 / z }
