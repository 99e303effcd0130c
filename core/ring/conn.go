package ring

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Side says which end of a segment a connection is.
type Side int

const (
	Host   Side = iota // writes Down, reads Up
	Plugin             // writes Up, reads Down
)

// Options tune a connection.
type Options struct {
	// Stall is how long a write waits for room before it fails with
	// ErrStalled (the peer stopped reading). Default 10 s.
	Stall time.Duration
	// Spin is the longest a reader spins on an empty ring before it sleeps
	// on its bell (it adapts below that; see Reader). 0: DefaultSpin;
	// negative: never spin.
	Spin time.Duration
	// PokeSpin is how long a reader woken by a bell with nothing published
	// (the peer's Poke) spins for the record before it sleeps again. 0:
	// DefaultPokeSpin; negative: it sleeps again at once.
	PokeSpin time.Duration
}

// DefaultPokeSpin is Options.PokeSpin's default: a poke comes ahead of a
// record by about the time its writer takes to prepare it (a broker routing
// a produce to its store: 5 to 20 µs here).
const DefaultPokeSpin = 50 * time.Microsecond

// DefaultSpin is Options.Spin's default.
const DefaultSpin = 20 * time.Microsecond

// DefaultStall is Options.Stall's default.
const DefaultStall = 10 * time.Second

// Conn is one side of a segment: a Writer on the ring toward the peer and a
// Reader on the ring from it.
type Conn struct {
	seg    *Segment
	side   Side
	closed atomic.Bool
	active atomic.Int64 // Reads and Writes touching the mapping now
	w      *Writer
	r      *Reader

	closeOnce sync.Once
}

// NewConn opens side's connection on seg. A segment has one connection per
// side; the caller keeps the segment alive until the connection is closed.
func NewConn(seg *Segment, side Side, o Options) (*Conn, error) {
	if o.Stall <= 0 {
		o.Stall = DefaultStall
	}
	if o.Spin == 0 {
		o.Spin = DefaultSpin
	}
	if o.PokeSpin == 0 {
		o.PokeSpin = DefaultPokeSpin
	}
	wdir, rdir := Down, Up
	if side == Plugin {
		wdir, rdir = Up, Down
	}
	c := &Conn{seg: seg, side: side}
	wr := seg.ring(wdir)
	c.w = &Writer{r: wr, tail: wr.tail.Load(), closed: &c.closed, stall: o.Stall}
	rr := seg.ring(rdir)
	bell, err := listenBell(rr.bell)
	if err != nil {
		return nil, fmt.Errorf("ring: listen on bell: %w", err)
	}
	rc, err := bell.SyscallConn()
	if err != nil {
		_ = bell.Close()
		return nil, fmt.Errorf("ring: listen on bell: %w", err)
	}
	c.r = &Reader{r: rr, head: rr.head.Load(), closed: &c.closed, maxSpin: max(o.Spin, 0), pokeSpin: max(o.PokeSpin, 0), bell: bell, bellRC: rc}
	return c, nil
}

// Write sends one frame; see Writer.Write. Safe from many goroutines.
func (c *Conn) Write(kind uint16, id uint64, payload []byte) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.active.Add(-1)
	return c.w.Write(kind, id, payload)
}

// WriteFunc writes a frame that fill encodes in place; see Writer.WriteFunc.
// Safe from many goroutines.
func (c *Conn) WriteFunc(kind uint16, id uint64, n int, fill func(b []byte) error) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.active.Add(-1)
	return c.w.WriteFunc(kind, id, n, fill)
}

// MaxInPlace is the largest frame WriteFunc encodes in the ring itself (one
// record's payload).
func (c *Conn) MaxInPlace() int { return int(maxRecordPayload(c.w.r.size)) }

// Read returns the next frame; see Reader.Read. One goroutine reads.
func (c *Conn) Read() (kind uint16, id uint64, payload []byte, err error) {
	if !c.enter() {
		return 0, 0, nil, ErrClosed
	}
	defer c.active.Add(-1)
	return c.r.Read()
}

// Expect says that the peer will answer a frame just written within about
// d: until then the reader spins for the answer instead of sleeping on its
// bell, and a reader already asleep is woken to do so. A sleeping reader
// costs the answer a wake-up of a halted processor in this process (tens of
// microseconds on a virtual machine); spinning while the peer works costs a
// processor the peer is not using when the request waits on it alone. For
// the host's calls to a plugin that answers fast (a storage append).
func (c *Conn) Expect(d time.Duration) {
	if d <= 0 || !c.enter() {
		return
	}
	defer c.active.Add(-1)
	c.r.expect(d)
}

// Expecting returns the reader's current expectation (what Expect asked
// for; 0 when none), for Settle.
func (c *Conn) Expecting() int64 { return c.r.owed.Load() }

// Settle ends the spin Expect asked for, once every answer it announced was
// read, so that the reader does not spin on for the rest of Expect's time:
// unless an Expect since changed what Expecting returned as token.
func (c *Conn) Settle(token int64) {
	if token != 0 {
		c.r.owed.CompareAndSwap(token, 0)
	}
}

// Poke wakes the peer's reader, if it sleeps, ahead of a frame this side is
// about to write: it wakes while the frame is being prepared instead of after
// it was published (a thread's wake-up on a halted processor is tens of
// microseconds on a virtual machine). A reader woken with nothing published
// spins for Options.PokeSpin before it sleeps again; a peer that does not
// (another implementation of the protocol) just sleeps again, and the
// frame's publish rings its bell as usual. Safe from many goroutines.
func (c *Conn) Poke() {
	if !c.enter() {
		return
	}
	defer c.active.Add(-1)
	c.w.poke()
}

// Pokes counts the bells Poke rang; Bells those rung by publishing.
func (c *Conn) Pokes() uint64 { return c.w.pokes.Load() }

// Bells counts the bells this side rang on publishing a record.
func (c *Conn) Bells() uint64 { return c.w.bells.Load() }

// enter counts an operation that may touch the mapping; false once closed.
func (c *Conn) enter() bool {
	c.active.Add(1)
	if c.closed.Load() {
		c.active.Add(-1)
		return false
	}
	return true
}

// Release closes the connection, waits until no Read or Write touches the
// mapping any more, and closes the segment. Whoever owns the segment calls
// it once, from a goroutine other than the reader's.
func (c *Conn) Release() error {
	c.Close()
	for c.active.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	_ = c.r.bell.Close()
	return c.seg.Close()
}

// Close makes every blocked and later Read and Write of this side return
// ErrClosed. It does not unmap the segment (Release does).
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		ringBell(c.r.r.bell) // our own reader wakes and sees closed

	})
}

// Closed reports whether Close was called.
func (c *Conn) Closed() bool { return c.closed.Load() }

// InjectCorrupt publishes, on the ring this side writes, a record whose
// checksum does not match its payload, as a plugin gone wrong would. Only for
// fault-injection tests (the ferry_faults build): the peer must report
// ErrCorrupt and replace this side.
func (c *Conn) InjectCorrupt() error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.active.Add(-1)
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.recordLocked(1, 0, 0, make([]byte, 8), 1)
}

// Watch calls stalled, once, when the peer leaves records this side
// published unread for longer than d: it stopped reading (hung, or gone
// without closing). It checks every d/4 until Close.
func (c *Conn) Watch(d time.Duration, stalled func()) {
	r := c.w.r
	go func() {
		tick := time.NewTicker(max(d/4, time.Millisecond))
		defer tick.Stop()
		var (
			lastHead uint64
			since    time.Time
		)
		for range tick.C {
			if c.closed.Load() || !c.enter() {
				return
			}
			head, tail := r.head.Load(), r.tail.Load()
			c.active.Add(-1)
			switch {
			case head == tail || head != lastHead:
				lastHead, since = head, time.Now()
			case time.Since(since) > d:
				stalled()
				return
			}
		}
	}()
}
