package sdk

import (
	"testing"
	"time"
)

// TestAnswerPace: the spin for an answer stops while answers come later
// than it, and starts again once they come fast again.
func TestAnswerPace(t *testing.T) {
	var p answerPace
	if !p.worthSpinning(time.Millisecond) {
		t.Fatal("nothing measured yet: no reason to stop spinning")
	}
	id := uint64(0)
	for range 10 { // a store that fsyncs before it answers
		id++
		p.sent(id)
		time.Sleep(3 * time.Millisecond)
		p.answered(id)
	}
	if p.worthSpinning(time.Millisecond) {
		t.Fatalf("answers after 3 ms on average %v: still spinning for 1 ms", time.Duration(p.avg.Load()))
	}
	// An answer to a call never measured, or a second answer, changes
	// nothing.
	before := p.avg.Load()
	p.answered(id + 1000)
	p.answered(id)
	if p.avg.Load() != before {
		t.Fatal("an unmeasured or repeated answer moved the average")
	}
	for range 60 { // fast again
		id++
		p.sent(id)
		p.answered(id)
	}
	if !p.worthSpinning(time.Millisecond) {
		t.Fatalf("answers at once again, average %v: still not spinning", time.Duration(p.avg.Load()))
	}
}
