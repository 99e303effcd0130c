// Package gopool runs short tasks on goroutines that are kept parked between
// tasks, instead of a new goroutine each. A request handler's goroutine
// grows its stack a few times on its way through the decoder, the broker and
// the data plane; a fresh goroutine per request pays for that growth (stack
// copies) on every request: about a twentieth of the transport plugin's and
// of the core's CPU under load. A parked goroutine keeps its grown stack.
package gopool

import "sync/atomic"

// MaxParked is how many idle goroutines are kept; a goroutine that finishes
// a task while that many wait exits.
const MaxParked = 64

var (
	work   = make(chan func()) // unbuffered: a send succeeds only into a parked goroutine
	parked atomic.Int32
	// started counts the goroutines Go started (for tests).
	started atomic.Int64
)

// Go runs f on a parked goroutine, or on a new one when none is parked. Like
// the go statement, it never waits for f.
func Go(f func()) {
	select {
	case work <- f:
	default:
		started.Add(1)
		go worker(f)
	}
}

func worker(f func()) {
	for {
		f()
		if parked.Add(1) > MaxParked {
			parked.Add(-1)
			return
		}
		f = <-work
		parked.Add(-1)
	}
}
