package sdk

import (
	"sync/atomic"
	"time"
)

// answerPace learns how soon a peer answers a kind of call on the ring, so
// that the caller spins for the answer (ring.Conn.Expect) only while answers
// come within the spin. A store that fsyncs before it answers (flush: sync)
// answers an append in milliseconds: a spin of 100 µs for each one only
// takes a processor from the node's other processes (on two cores, the
// transport's and the client's), and it is then skipped.
//
// It keeps a moving average (weight 1/8) of the time from a call's send to
// its first answer, measured whether or not the caller spun, so spinning
// starts again as soon as answers come fast again. Calls are told apart by
// id in a small table: with more calls in flight than it has slots, some
// go unmeasured, which only slows the learning.
type answerPace struct {
	slots [paceSlots]paceSlot
	avg   atomic.Int64 // nanoseconds; 0 until measured
}

const paceSlots = 256

type paceSlot struct {
	id   atomic.Uint64 // id+1 of the call measured in the slot; 0: none
	sent atomic.Int64  // its send time (monotonic, paceClock)
}

var paceBase = time.Now()

func paceClock() int64 { return int64(time.Since(paceBase)) }

// sent notes call id's send.
func (p *answerPace) sent(id uint64) {
	s := &p.slots[id%paceSlots]
	s.sent.Store(paceClock())
	s.id.Store(id + 1)
}

// answered notes the first answer to call id.
func (p *answerPace) answered(id uint64) {
	s := &p.slots[id%paceSlots]
	if !s.id.CompareAndSwap(id+1, 0) {
		return // not measured, or answered already
	}
	d := paceClock() - s.sent.Load()
	if d < 0 {
		return
	}
	for {
		old := p.avg.Load()
		next := d
		if old != 0 {
			next = old + (d-old)/8
		}
		if p.avg.CompareAndSwap(old, next) {
			return
		}
	}
}

// worthSpinning says whether answers come within d, on average.
func (p *answerPace) worthSpinning(d time.Duration) bool {
	return p.avg.Load() <= int64(d)
}
