package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newPair(t testing.TB, size int) (*Segment, *Conn, *Conn) {
	t.Helper()
	seg, err := Create(size)
	if err != nil {
		t.Fatal(err)
	}
	host, plug := mustConn(t, seg, Host, Options{}), mustConn(t, seg, Plugin, Options{})
	t.Cleanup(func() {
		host.Close()
		plug.Close()
		for host.active.Load()+plug.active.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
		seg.Close()
	})
	return seg, host, plug
}

func mustConn(t testing.TB, seg *Segment, side Side, o Options) *Conn {
	t.Helper()
	c, err := NewConn(seg, side, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dupFDs gives a segment's descriptors as another process would get them.
func dupFDs(t testing.TB, seg *Segment) []int {
	t.Helper()
	var fds []int
	for _, f := range seg.Files() {
		fd, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return fds
}

func frame(i, n int) []byte {
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(i*7 + j)
	}
	return b
}

// Frames of every size class, including ones split over records and ones
// that wrap the ring, arrive whole and in order.
func TestFramesInOrder(t *testing.T) {
	_, host, plug := newPair(t, MinRingSize)
	sizes := []int{0, 1, 7, 8, 9, 1000, MinRingSize/4 - RecordHeader, MinRingSize / 4, MinRingSize, 3*MinRingSize + 5}
	const rounds = 40
	done := make(chan error, 1)
	go func() {
		for i := 0; i < rounds*len(sizes); i++ {
			n := sizes[i%len(sizes)]
			if err := host.Write(uint16(1+i%3), uint64(i), frame(i, n)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < rounds*len(sizes); i++ {
		kind, id, p, err := plug.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if kind != uint16(1+i%3) || id != uint64(i) || !bytes.Equal(p, frame(i, sizes[i%len(sizes)])) {
			t.Fatalf("frame %d: kind %d id %d, %d bytes: not what was sent", i, kind, id, len(p))
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Many writers on one side: every frame arrives once, each writer's in order.
func TestConcurrentWriters(t *testing.T) {
	_, host, plug := newPair(t, MinRingSize)
	const writers, per = 8, 2000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := host.Write(1, uint64(w)<<32|uint64(i), frame(i, 1+i%700)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	for n := 0; n < writers*per; n++ {
		_, id, p, err := plug.Read()
		if err != nil {
			t.Fatal(err)
		}
		w, i := int(id>>32), int(id&0xffffffff)
		if i != next[w] || !bytes.Equal(p, frame(i, 1+i%700)) {
			t.Fatalf("writer %d: got frame %d, want %d", w, i, next[w])
		}
		next[w]++
	}
	wg.Wait()
}

func TestCloseUnblocks(t *testing.T) {
	_, host, plug := newPair(t, MinRingSize)
	errc := make(chan error, 2)
	// The host reads the ring the plugin writes (nothing comes) and fills
	// the one the plugin would read (nobody does), so both block. (Reading
	// the ring being filled, as this test once did, could take a frame and
	// return nil before Close: it failed so under load.)
	go func() { _, _, _, err := host.Read(); errc <- err }()
	go func() {
		for {
			if err := host.Write(1, 0, make([]byte, 1000)); err != nil {
				errc <- err
				return
			}
		}
	}()
	plug.Close()
	host.Close()
	for i := 0; i < 2; i++ {
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("got %v, want ErrClosed", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close did not unblock a Read or Write")
		}
	}
}

// A reader that stops reading makes the writer fail with ErrStalled.
func TestStall(t *testing.T) {
	seg, err := Create(MinRingSize)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	host := mustConn(t, seg, Host, Options{Stall: 200 * time.Millisecond})
	for {
		err := host.Write(1, 0, make([]byte, 4000))
		if errors.Is(err, ErrStalled) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Garbage written by the peer into the ring is reported as ErrCorrupt and
// never panics or returns a frame that was not sent.
func TestCorruptRecords(t *testing.T) {
	cases := map[string]func(seg *Segment, r *ring){
		"tail beyond the ring": func(seg *Segment, r *ring) { r.tail.Store(r.size + 8) },
		"unaligned tail":       func(seg *Segment, r *ring) { r.tail.Store(3) },
		"length beyond the ring": func(seg *Segment, r *ring) {
			putHeader(r.data, 1<<31, 1, 0, 0, 0)
			r.tail.Store(64)
		},
		"length beyond the tail": func(seg *Segment, r *ring) {
			putHeader(r.data, 100, 1, 0, 0, 0)
			r.tail.Store(64)
		},
		"bad checksum": func(seg *Segment, r *ring) {
			putHeader(r.data, 8, 1, 0, 0, 12345)
			r.tail.Store(32)
		},
		"reserved flags": func(seg *Segment, r *ring) {
			putHeader(r.data, 0, 1, 0x80, 0, 0)
			r.tail.Store(24)
		},
		"short padding": func(seg *Segment, r *ring) {
			putHeader(r.data, 0, KindPad, 0, 0, 0)
			r.tail.Store(24)
		},
		"header cut by the tail": func(seg *Segment, r *ring) { r.tail.Store(8) },
		"frame interrupted": func(seg *Segment, r *ring) {
			putHeader(r.data, 0, 1, FlagMore, 1, 0)
			putHeader(r.data[24:], 0, 2, 0, 1, 0)
			r.tail.Store(48)
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			seg, _, plug := newPair(t, MinRingSize)
			corrupt(seg, seg.ring(Down))
			_, _, _, err := plug.Read()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
		})
	}
}

// The writer refuses a head the peer moved beyond its tail.
func TestCorruptHead(t *testing.T) {
	seg, host, _ := newPair(t, MinRingSize)
	seg.ring(Down).head.Store(1 << 40)
	if err := host.Write(1, 0, []byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func TestOpenChecksHeader(t *testing.T) {
	seg, err := Create(MinRingSize)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	for name, mutate := range map[string]func(b []byte){
		"magic":     func(b []byte) { b[0] = 'X' },
		"version":   func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 99) },
		"rings":     func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 3) },
		"ring size": func(b []byte) { binary.LittleEndian.PutUint64(b[16:], 1<<40) },
	} {
		t.Run(name, func(t *testing.T) {
			saved := append([]byte(nil), seg.mem[:32]...)
			defer copy(seg.mem, saved)
			mutate(seg.mem)
			if s, err := Open(dupFDs(t, seg)); err == nil {
				s.mem = nil
				t.Fatal("Open accepted a bad header")
			}
		})
	}
	s, err := Open(dupFDs(t, seg))
	if err != nil {
		t.Fatal(err)
	}
	if s.RingSize() != MinRingSize {
		t.Fatalf("ring size %d", s.RingSize())
	}
	_ = unmapShared(s.mem)
}

// FuzzRead feeds arbitrary bytes and indices to a reader: it returns frames
// or ErrCorrupt, never panics, and never reads beyond the published bytes. A
// reader that consumed everything published in the middle of a frame (a
// record flagged More, its continuation not yet written) rightly waits for
// the rest: the harness then closes the connection, and the read must end
// with ErrClosed.
func FuzzRead(f *testing.F) {
	f.Add([]byte{}, uint64(0))
	good := make([]byte, 64)
	putHeader(good, 5, 1, 0, 9, 0)
	f.Add(good, uint64(32))
	f.Add(good, uint64(1<<20))
	partial := make([]byte, 64)
	putHeader(partial, 5, 1, FlagMore, 9, crc32.Checksum(make([]byte, 5), castagnoli))
	f.Add(partial, uint64(32))
	f.Fuzz(func(t *testing.T, data []byte, tail uint64) {
		seg, err := Create(MinRingSize)
		if err != nil {
			t.Fatal(err)
		}
		r := seg.ring(Down)
		copy(r.data, data)
		r.tail.Store(tail)
		plug := mustConn(t, seg, Plugin, Options{})
		done := make(chan error, 1)
		go func() {
			for i := 0; i < 64; i++ {
				if r.tail.Load() == plug.r.head {
					done <- nil // everything published was read
					return
				}
				_, _, p, err := plug.Read()
				if err != nil {
					done <- err
					return
				}
				if uint64(len(p)) > tail {
					done <- fmt.Errorf("frame of %d bytes from %d published", len(p), tail)
					return
				}
			}
			done <- nil
		}()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		waiting := false
		for {
			select {
			case err := <-done:
				_ = plug.Release() // unmaps the segment once the reader is out
				switch {
				case err == nil:
				case waiting && errors.Is(err, ErrClosed):
				case !errors.Is(err, ErrCorrupt):
					t.Fatalf("got %v, want ErrCorrupt", err)
				}
				return
			case <-tick.C:
				// The shared head reaching the tail means the reader took
				// everything: it returns, or waits for a continuation.
				if !waiting && r.head.Load() == r.tail.Load() {
					waiting = true
					plug.Close()
				}
			}
		}
	})
}

func BenchmarkInProcessRoundTrip(b *testing.B) {
	for _, n := range []int{16, 1024} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			_, host, plug := newPair(b, DefaultRingSize)
			go func() {
				for {
					_, id, p, err := plug.Read()
					if err != nil {
						return
					}
					if plug.Write(2, id, p[:min(16, len(p))]) != nil {
						return
					}
				}
			}()
			msg := frame(1, n)
			for i := 0; b.Loop(); i++ {
				if err := host.Write(1, uint64(i), msg); err != nil {
					b.Fatal(err)
				}
				if _, _, _, err := host.Read(); err != nil {
					b.Fatal(err)
				}
			}
			host.Close()
			plug.Close()
		})
	}
}

// Watch reports a peer that leaves published records unread, and stays
// quiet while the peer reads.
func TestWatch(t *testing.T) {
	_, host, plug := newPair(t, MinRingSize)
	stalled := make(chan struct{})
	host.Watch(time.Second, func() { close(stalled) })
	// A reading peer: no report while frames flow for a while.
	go func() {
		for {
			if _, _, _, err := plug.Read(); err != nil {
				return
			}
		}
	}()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		if err := host.Write(1, 0, []byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-stalled:
		t.Fatal("Watch reported a peer that reads")
	default:
	}
	// The peer stops reading: reported.
	plug.Close()
	for {
		if err := host.Write(1, 0, []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-stalled:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Expect wakes a sleeping reader to spin, so that the answer it expects is
// read without the peer ringing the bell; without Expect the same answer
// rings it (the control).
func TestExpectSpinsForTheAnswer(t *testing.T) {
	// No timed wake-ups of the sleeping reader: only bells wake it.
	defer func(d time.Duration) { pollInterval = d }(pollInterval)
	pollInterval = time.Hour
	for _, expect := range []bool{false, true} {
		_, host, plug := newPair(t, 1<<16)
		got := make(chan error, 1)
		go func() {
			_, _, p, err := host.Read()
			if err == nil && string(p) != "answer" {
				err = fmt.Errorf("read %q", p)
			}
			got <- err
		}()
		asleep := func() bool { return host.r.r.rsleep.Load() == 1 }
		waitFor(t, "the reader to sleep", asleep)
		if expect {
			host.Expect(time.Minute)
			// Woken, it spins and never announces a sleep while the
			// answer is owed.
			waitFor(t, "the reader to wake and spin", func() bool { return !asleep() })
		}
		before := plug.w.bells.Load()
		if err := plug.Write(1, 1, []byte("answer")); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		rang := plug.w.bells.Load() - before
		if expect && rang != 0 {
			t.Errorf("with Expect the peer rang the bell %d times, want 0", rang)
		}
		if !expect && rang != 1 {
			t.Errorf("without Expect the peer rang the bell %d times, want 1 (the control)", rang)
		}
	}
}

// A poke wakes the peer's sleeping reader, which then spins for the frame
// that follows, so that the frame's publish finds it awake and rings no
// bell; a reader that does not spin after a poke (PokeSpin negative, the
// control) sleeps again and the publish rings it.
func TestPokeWakesTheReaderAhead(t *testing.T) {
	defer func(d time.Duration) { pollInterval = d }(pollInterval)
	pollInterval = time.Hour // only bells wake the sleeping reader
	for _, spin := range []time.Duration{-1, time.Minute} {
		seg, err := Create(1 << 16)
		if err != nil {
			t.Fatal(err)
		}
		host := mustConn(t, seg, Host, Options{PokeSpin: spin})
		plug := mustConn(t, seg, Plugin, Options{})
		got := make(chan error, 1)
		go func() {
			_, _, p, err := host.Read()
			if err == nil && string(p) != "frame" {
				err = fmt.Errorf("read %q", p)
			}
			got <- err
		}()
		rsleep := host.r.r.rsleep
		waitFor(t, "the reader to sleep", func() bool { return rsleep.Load() == 1 })
		plug.Poke()
		if plug.Pokes() != 1 {
			t.Fatalf("Poke of a sleeping reader rang %d bells, want 1", plug.Pokes())
		}
		if spin > 0 {
			// Woken, it spins: it does not announce a sleep while the
			// frame is due.
			waitFor(t, "the reader to wake and spin", func() bool { return host.r.owedNow() })
			if rsleep.Load() != 0 {
				t.Fatal("the poked reader announced a sleep")
			}
			plug.Poke() // awake: no bell
			if plug.Pokes() != 1 {
				t.Fatalf("Poke of an awake reader rang a bell (%d in all)", plug.Pokes())
			}
		} else {
			// It wakes, finds nothing and sleeps again (the poke
			// cleared its announcement; it makes a new one).
			waitFor(t, "the reader to sleep again", func() bool { return rsleep.Load() == 1 })
		}
		before := plug.Bells()
		if err := plug.Write(1, 1, []byte("frame")); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		rang := plug.Bells() - before
		if spin > 0 && rang != 0 {
			t.Errorf("after a poke the frame's publish rang the bell %d times, want 0", rang)
		}
		if spin < 0 && rang != 1 {
			t.Errorf("without the spin after a poke the publish rang the bell %d times, want 1 (the control)", rang)
		}
		host.Close()
		plug.Close()
		for host.active.Load()+plug.active.Load() != 0 {
			time.Sleep(time.Millisecond)
		}
		_ = host.r.bell.Close()
		_ = plug.r.bell.Close()
		seg.Close()
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Frames encoded in place (WriteFunc) and copied in (Write), mixed, of every
// size from empty to several records, wrapping the ring's end many times,
// are read back whole and in order; a fill that fails publishes nothing.
func TestWriteFuncInPlace(t *testing.T) {
	_, host, plug := newPair(t, 1<<16)
	maxRec := int(maxRecordPayload(1 << 16))
	rng := rand.New(rand.NewPCG(3, 4))
	const frames = 3000
	sizes := make([]int, frames)
	for i := range sizes {
		switch i % 5 {
		case 0:
			sizes[i] = rng.IntN(64)
		case 1:
			sizes[i] = maxRec - rng.IntN(16) // one record, often padded at the end
		case 2:
			sizes[i] = maxRec + 1 + rng.IntN(2*maxRec) // several records: encoded apart
		default:
			sizes[i] = rng.IntN(maxRec)
		}
	}
	content := func(i, n int) []byte {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(i*7 + j)
		}
		return b
	}
	errFill := errors.New("fill failed")
	go func() {
		for i, n := range sizes {
			want := content(i, n)
			var err error
			if i%2 == 0 {
				err = host.Write(7, uint64(i), want)
			} else {
				if i%3 == 0 { // a failed fill first: nothing of it may be seen
					if e := host.WriteFunc(7, 1<<40, n, func(b []byte) error { copy(b, "garbage"); return errFill }); !errors.Is(e, errFill) {
						panic(fmt.Sprintf("a failed fill returned %v", e))
					}
				}
				err = host.WriteFunc(7, uint64(i), n, func(b []byte) error {
					if len(b) != n {
						return fmt.Errorf("fill got %d bytes, want %d", len(b), n)
					}
					copy(b, want)
					return nil
				})
			}
			if err != nil {
				panic(err)
			}
		}
	}()
	for i, n := range sizes {
		kind, id, p, err := plug.Read()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if kind != 7 || id != uint64(i) || !bytes.Equal(p, content(i, n)) {
			t.Fatalf("frame %d: kind %d id %d, %d bytes; want id %d, %d bytes as written", i, kind, id, len(p), i, n)
		}
	}
}

// Settle ends the spin Expect asked for once the answer is read: the reader
// then sleeps instead of spinning for the rest of Expect's time, unless
// another Expect came since the token was taken.
func TestSettleEndsTheSpin(t *testing.T) {
	defer func(d time.Duration) { pollInterval = d }(pollInterval)
	pollInterval = time.Hour
	seg, err := Create(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	host := mustConn(t, seg, Host, Options{Spin: -1}) // no adaptive spin: only Expect's
	plug := mustConn(t, seg, Plugin, Options{})
	defer closePair(seg, host, plug)
	frames := make(chan error, 2)
	go func() {
		for range 2 {
			_, _, _, err := host.Read()
			frames <- err
		}
	}()
	asleep := func() bool { return host.r.r.rsleep.Load() == 1 }
	waitFor(t, "the reader to sleep", asleep)
	host.Expect(time.Minute)
	waitFor(t, "the reader to wake and spin", func() bool { return !asleep() })
	if err := plug.Write(1, 1, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	if err := <-frames; err != nil {
		t.Fatal(err)
	}
	// The control: read, the answer leaves the spin on.
	if !host.r.owedNow() || asleep() {
		t.Fatal("the reader stopped spinning before Settle")
	}
	stale := host.Expecting()
	host.Expect(2 * time.Minute) // another call's answer is now awaited
	host.Settle(stale)
	if !host.r.owedNow() {
		t.Fatal("Settle with a token older than the last Expect ended its spin")
	}
	host.Settle(host.Expecting())
	waitFor(t, "the reader to sleep after Settle", asleep)
	if err := plug.Write(1, 2, []byte("later")); err != nil {
		t.Fatal(err)
	}
	if err := <-frames; err != nil {
		t.Fatal(err)
	}
}

// A reader woken by a poke spins until the record the poke announced is
// read, then no longer: it sleeps again rather than spin out PokeSpin. An
// Expect of its own process during the spin keeps it spinning (the
// control: the spin that ends is the poke's only).
func TestPokeSpinEndsWithTheRecord(t *testing.T) {
	defer func(d time.Duration) { pollInterval = d }(pollInterval)
	pollInterval = time.Hour
	for _, expect := range []bool{false, true} {
		seg, err := Create(1 << 16)
		if err != nil {
			t.Fatal(err)
		}
		host := mustConn(t, seg, Host, Options{Spin: -1, PokeSpin: time.Minute})
		plug := mustConn(t, seg, Plugin, Options{})
		defer closePair(seg, host, plug)
		frames := make(chan error, 2)
		go func() {
			for range 2 {
				_, _, _, err := host.Read()
				frames <- err
			}
		}()
		asleep := func() bool { return host.r.r.rsleep.Load() == 1 }
		waitFor(t, "the reader to sleep", asleep)
		plug.Poke()
		waitFor(t, "the poked reader to spin", func() bool { return host.r.owedNow() })
		if expect {
			host.Expect(2 * time.Minute)
		}
		if err := plug.Write(1, 1, []byte("frame")); err != nil {
			t.Fatal(err)
		}
		if err := <-frames; err != nil {
			t.Fatal(err)
		}
		if expect {
			if !host.r.owedNow() || asleep() {
				t.Fatal("the record ended the spin an Expect asked for")
			}
			host.Settle(host.Expecting())
		}
		waitFor(t, "the reader to sleep once the poked record was read", asleep)
		if err := plug.Write(1, 2, []byte("next")); err != nil {
			t.Fatal(err)
		}
		if err := <-frames; err != nil {
			t.Fatal(err)
		}
	}
}

// closePair closes both sides, waits until neither touches the mapping,
// then unmaps it (also when a test failed with a reader still in Read).
func closePair(seg *Segment, host, plug *Conn) {
	host.Close()
	plug.Close()
	for host.active.Load()+plug.active.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	seg.Close()
}
