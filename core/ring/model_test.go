package ring

import (
	"fmt"
	"testing"
)

// A model check of the sleep/wake handshake (Reader.available against
// Writer.record), which the race detector cannot see: it lives in shared
// memory between processes. Every interleaving of a reader and a writer that
// publishes `writes` records is explored under sequential consistency (what
// Go's atomics give). A lost wake-up is a reachable state where the writer is
// done, the reader sleeps on its bell with the bell silent, and a record is
// unread: the reader would sleep forever (in the real code, until its poll
// interval). The broken variants are the negative controls: each must be
// caught.

type variant struct {
	name string
	// recheck: the reader looks at the tail again after announcing its
	// sleep. publishFirst: the writer publishes the tail before it looks
	// at the announcement.
	recheck, publishFirst bool
}

type mstate struct {
	rpc, wpc int
	tail     int // records published
	head     int // records the reader consumed
	rsleep   int
	bell     int  // eventfd counter
	written  int  // records the writer has finished
	woke     bool // the writer saw the announcement (and cleared it)
}

// reader program counters
const (
	rCheck    = iota // t := tail; if t > head { consume; goto rCheck }
	rAnnounce        // rsleep = 1
	rRecheck         // if tail > head { rsleep = 0; goto rCheck }
	rSleep           // block until bell > 0; bell = 0
	rWake            // rsleep = 0; goto rCheck
)

// writer program counters
const (
	wPublish = iota // tail++ (the broken variant looks first)
	wLook           // woke := rsleep == 1 && CAS(rsleep, 1, 0)
	wRing           // if woke { bell++ }
)

func (v variant) stepReader(s mstate) (mstate, bool) {
	switch s.rpc {
	case rCheck:
		if s.tail > s.head {
			s.head = s.tail
			return s, true
		}
		s.rpc = rAnnounce
	case rAnnounce:
		s.rsleep = 1
		s.rpc = rRecheck
		if !v.recheck {
			s.rpc = rSleep
		}
	case rRecheck:
		if s.tail > s.head {
			s.rsleep = 0
			s.rpc = rCheck
		} else {
			s.rpc = rSleep
		}
	case rSleep:
		if s.bell == 0 {
			return s, false // blocked
		}
		s.bell = 0
		s.rpc = rWake
	case rWake:
		s.rsleep = 0
		s.rpc = rCheck
	}
	return s, true
}

func (v variant) stepWriter(s mstate, writes int) (mstate, bool) {
	if s.written == writes {
		return s, false
	}
	look := func(s mstate) mstate {
		s.woke = s.rsleep == 1
		if s.woke {
			s.rsleep = 0 // the CAS from 1 to 0
		}
		return s
	}
	switch s.wpc {
	case wPublish: // first step: publish (as built) or look (broken)
		if v.publishFirst {
			s.tail++
		} else {
			s = look(s)
		}
		s.wpc = wLook
	case wLook: // second step: look (as built) or publish (broken)
		if v.publishFirst {
			s = look(s)
		} else {
			s.tail++
		}
		s.wpc = wRing
	case wRing:
		if s.woke {
			s.bell++
		}
		s.woke = false
		s.written++
		s.wpc = wPublish
	}
	return s, true
}

// lostWakeup explores every interleaving and returns a state with a lost
// wake-up, if one is reachable.
func (v variant) lostWakeup(writes int) (*mstate, int) {
	seen := map[mstate]bool{}
	queue := []mstate{{}}
	seen[mstate{}] = true
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		r, rok := v.stepReader(s)
		w, wok := v.stepWriter(s, writes)
		if !rok && !wok && s.head < s.tail {
			return &s, len(seen)
		}
		for _, n := range []struct {
			s  mstate
			ok bool
		}{{r, rok}, {w, wok}} {
			if n.ok && !seen[n.s] {
				seen[n.s] = true
				queue = append(queue, n.s)
			}
		}
	}
	return nil, len(seen)
}

func TestModelSleepWake(t *testing.T) {
	for _, c := range []struct {
		v    variant
		lost bool
	}{
		{variant{"as built", true, true}, false},
		{variant{"no recheck after announcing (negative control)", false, true}, true},
		{variant{"writer looks before it publishes (negative control)", true, false}, true},
	} {
		for writes := 1; writes <= 3; writes++ {
			t.Run(fmt.Sprintf("%s/writes=%d", c.v.name, writes), func(t *testing.T) {
				s, states := c.v.lostWakeup(writes)
				t.Logf("%d states", states)
				if c.lost && s == nil {
					t.Fatal("the model check found no lost wake-up in a broken handshake: it cannot fail")
				}
				if !c.lost && s != nil {
					t.Fatalf("lost wake-up: %+v", *s)
				}
			})
		}
	}
}
