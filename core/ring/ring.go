package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Records (see docs/ring-protocol.md). Each starts on an 8-byte boundary:
//
//	+0   length   u32  payload bytes
//	+4   kind     u16  0 = padding to the ring's end; others are the user's
//	+6   flags    u16  bit 0 (More): the frame continues in the next record
//	+8   id       u64  the user's (a call id)
//	+16  crc      u32  CRC-32C (Castagnoli) of the payload
//	+20  reserved u32  0
//	+24  payload, then zero to seven bytes of padding to a multiple of 8
//
// A record never wraps: when it does not fit before the ring's end the
// producer fills the rest with a padding record (or, when fewer than 24 bytes
// are left, leaves them: the consumer skips such a remnant) and starts the
// record at offset 0.
const (
	RecordHeader = 24
	KindPad      = 0
	FlagMore     = 1

	// MaxFrame bounds one frame (a message split over records), as gRPC's
	// message limit bounds it on the gRPC data plane.
	MaxFrame = 256 << 20
)

// ErrClosed is returned once a connection was closed on this side.
var ErrClosed = errors.New("ring: closed")

// ErrStalled is returned by a write that found no room for longer than the
// connection's stall limit: the peer stopped reading.
var ErrStalled = errors.New("ring: peer stopped reading")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pollInterval bounds every sleep on a bell, so that a lost wake-up (a peer
// that clears our sleep word, say) costs at most this much.
var pollInterval = 100 * time.Millisecond

// ringBell wakes the consumer sleeping on bell: an eventfd counts up by one.
func ringBell(bell int) { ringFD(bell) }

func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// maxRecordPayload is the largest payload of one record in a ring of size
// bytes: a quarter of the ring, so that several records are in flight.
func maxRecordPayload(size uint64) uint64 { return size/4 - RecordHeader }

// Writer is the producer of one ring. Write is safe from many goroutines;
// they are serialised.
type Writer struct {
	mu     sync.Mutex
	r      *ring
	tail   uint64 // our own copy: the shared one is never read back
	closed *atomic.Bool
	stall  time.Duration
	bells  atomic.Uint64 // how often it rang the reader's bell
	pokes  atomic.Uint64 // how often it rang it ahead of a record (poke)
}

// poke rings the bell of a sleeping reader ahead of a record that is about
// to be written, so that the reader wakes while the record is prepared: a
// reader woken with nothing published spins for it a while (Reader's
// pokeSpin) instead of sleeping again. It rings only when the reader
// announced its sleep, with the same compare-and-swap as publish, so a
// publish soon after finds the reader awake and rings no second time.
func (w *Writer) poke() {
	r := w.r
	if r.rsleep.Load() == 1 && r.rsleep.CompareAndSwap(1, 0) {
		ringBell(r.bell)
		w.pokes.Add(1)
	}
}

// Write sends one frame of kind (not KindPad) and id. It blocks while the
// ring is full, for at most the stall limit.
func (w *Writer) Write(kind uint16, id uint64, payload []byte) error {
	if kind == KindPad {
		return fmt.Errorf("ring: kind 0 is reserved")
	}
	if len(payload) > MaxFrame {
		return fmt.Errorf("ring: frame of %d bytes exceeds the limit of %d", len(payload), MaxFrame)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	maxRec := maxRecordPayload(w.r.size)
	for first := true; first || len(payload) > 0; first = false {
		chunk := payload
		var flags uint16
		if uint64(len(chunk)) > maxRec {
			chunk, flags = chunk[:maxRec], FlagMore
		}
		if err := w.record(kind, flags, id, chunk); err != nil {
			return err
		}
		payload = payload[len(chunk):]
	}
	return nil
}

// WriteFunc writes a frame of n bytes that fill encodes in place: when the
// frame fits one record, fill gets the record's payload in the ring itself
// (the frame is not encoded elsewhere and copied in), then the record is
// checksummed and published. fill must write all of b and keep none of it;
// if it fails, nothing is published and its error is returned. A larger
// frame is encoded into memory of its own and written as Write does.
func (w *Writer) WriteFunc(kind uint16, id uint64, n int, fill func(b []byte) error) error {
	if kind == KindPad {
		return fmt.Errorf("ring: kind 0 is reserved")
	}
	if n < 0 || n > MaxFrame {
		return fmt.Errorf("ring: frame of %d bytes exceeds the limit of %d", n, MaxFrame)
	}
	if uint64(n) > maxRecordPayload(w.r.size) {
		b := make([]byte, n)
		if err := fill(b); err != nil {
			return err
		}
		return w.Write(kind, id, b)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.r
	rec := RecordHeader + align8(uint64(n))
	pos := w.tail & (r.size - 1)
	pad := uint64(0)
	if contig := r.size - pos; contig < rec {
		pad = contig
	}
	if err := w.room(pad + rec); err != nil {
		return err
	}
	at := pos
	if pad > 0 {
		at = 0
	}
	// Beyond the tail: the reader sees none of it until the tail moves.
	payload := r.data[at+RecordHeader : at+RecordHeader+uint64(n) : at+RecordHeader+uint64(n)]
	if err := fill(payload); err != nil {
		return err
	}
	if pad > 0 {
		if pad >= RecordHeader {
			putHeader(r.data[pos:], uint32(pad-RecordHeader), KindPad, 0, 0, 0)
		}
		w.tail += pad
	}
	putHeader(r.data[at:], uint32(n), kind, 0, id, crc32.Checksum(payload, castagnoli))
	w.tail += rec
	timeline(int32(kind))
	w.publish()
	return nil
}

// record writes one record and publishes it.
func (w *Writer) record(kind, flags uint16, id uint64, chunk []byte) error {
	return w.recordLocked(kind, flags, id, chunk, 0)
}

// recordLocked is record; a non-zero crcXor spoils the checksum (fault
// injection only).
func (w *Writer) recordLocked(kind, flags uint16, id uint64, chunk []byte, crcXor uint32) error {
	r := w.r
	rec := RecordHeader + align8(uint64(len(chunk)))
	pos := w.tail & (r.size - 1)
	contig := r.size - pos
	pad := uint64(0)
	if contig < rec {
		pad = contig
	}
	if err := w.room(pad + rec); err != nil {
		return err
	}
	if pad > 0 {
		if pad >= RecordHeader {
			putHeader(r.data[pos:], uint32(pad-RecordHeader), KindPad, 0, 0, 0)
		}
		w.tail += pad
		pos = 0
	}
	putHeader(r.data[pos:], uint32(len(chunk)), kind, flags, id, crc32.Checksum(chunk, castagnoli)^crcXor)
	copy(r.data[pos+RecordHeader:], chunk)
	w.tail += rec
	if flags&FlagMore == 0 {
		timeline(int32(kind))
	}
	w.publish()
	return nil
}

// publish makes the records up to the tail visible and wakes a sleeping
// reader.
func (w *Writer) publish() {
	r := w.r
	r.tail.Store(w.tail) // publishes the record; sequentially consistent, like every Go atomic
	if r.rsleep.Load() == 1 && r.rsleep.CompareAndSwap(1, 0) {
		ringBell(r.bell)
		w.bells.Add(1)
	}
}

// room waits until n bytes are free after the tail. A full ring is the
// rare case (the consumer is behind): the producer polls, sleeping a little
// longer each time, rather than asking the consumer for a wake-up.
func (w *Writer) room(n uint64) error {
	r := w.r
	var deadline time.Time
	nap := 5 * time.Microsecond
	for {
		if w.closed.Load() {
			return ErrClosed
		}
		used := w.tail - r.head.Load()
		if used > r.size {
			return fmt.Errorf("%w: head %d is not within the ring behind tail %d", ErrCorrupt, r.head.Load(), w.tail)
		}
		if r.size-used >= n {
			return nil
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(w.stall)
		} else if time.Now().After(deadline) {
			return ErrStalled
		}
		time.Sleep(nap)
		nap = min(2*nap, time.Millisecond)
	}
}

func putHeader(b []byte, n uint32, kind, flags uint16, id uint64, crc uint32) {
	_ = b[RecordHeader-1]
	binary.LittleEndian.PutUint32(b[0:], n)
	binary.LittleEndian.PutUint16(b[4:], kind)
	binary.LittleEndian.PutUint16(b[6:], flags)
	binary.LittleEndian.PutUint64(b[8:], id)
	binary.LittleEndian.PutUint32(b[16:], crc)
	binary.LittleEndian.PutUint32(b[20:], 0)
}

// Reader is the consumer of one ring. It is not safe for concurrent use: one
// goroutine reads.
type Reader struct {
	r       *ring
	head    uint64 // our own copy
	closed  *atomic.Bool
	buf     []byte   // the frame being read
	bell    *os.File // this side's end of the ring's bell (listenBell)
	bellRC  syscall.RawConn
	bellBuf [8]byte

	maxSpin time.Duration // 0: never spin
	spinFor time.Duration // the next wait's spin, adapted
	spin    time.Duration // this wait's
	spins   int

	// owed is until when (nanoseconds since clockBase) an answer is
	// expected on this ring (Conn.Expect, or a poke): the reader spins for
	// it rather than sleep.
	owed atomic.Int64

	pokeSpin time.Duration // how long a reader woken with nothing published spins (0: not at all)
	poked    int64         // owed as a poke set it, until the next frame is read (0: none)
}

// clockBase is the origin of Reader.owed's clock (monotonic).
var clockBase = time.Now()

func clockNow() int64 { return int64(time.Since(clockBase)) }

// owedNow reports whether an answer is still expected now.
func (rd *Reader) owedNow() bool { return clockNow() < rd.owed.Load() }

// Read returns the next frame. The payload was copied out of the ring into
// memory of its own, which the caller keeps (decoded messages may alias it).
// It blocks until a frame is there or the connection is closed; an error
// other than ErrClosed means the peer broke the protocol.
func (rd *Reader) Read() (kind uint16, id uint64, payload []byte, err error) {
	rd.buf = nil
	var (
		started   bool
		fkind     uint16
		fid       uint64
		hdr       [RecordHeader]byte
		r         = rd.r
		maxRecord = maxRecordPayload(r.size)
	)
	for {
		avail, err := rd.available()
		if err != nil {
			return 0, 0, nil, err
		}
		pos := rd.head & (r.size - 1)
		contig := r.size - pos
		if contig < RecordHeader {
			if avail < contig {
				return 0, 0, nil, fmt.Errorf("%w: tail %d inside the ring's end remnant", ErrCorrupt, rd.head+avail)
			}
			rd.advance(contig)
			continue
		}
		if avail < RecordHeader {
			return 0, 0, nil, fmt.Errorf("%w: %d bytes published, less than a record header", ErrCorrupt, avail)
		}
		copy(hdr[:], r.data[pos:pos+RecordHeader])
		n := uint64(binary.LittleEndian.Uint32(hdr[0:]))
		k := binary.LittleEndian.Uint16(hdr[4:])
		flags := binary.LittleEndian.Uint16(hdr[6:])
		rid := binary.LittleEndian.Uint64(hdr[8:])
		crc := binary.LittleEndian.Uint32(hdr[16:])
		if binary.LittleEndian.Uint32(hdr[20:]) != 0 || flags&^FlagMore != 0 {
			return 0, 0, nil, fmt.Errorf("%w: record at %d has reserved bits set", ErrCorrupt, rd.head)
		}
		if k == KindPad {
			if flags != 0 || n != contig-RecordHeader || avail < contig {
				return 0, 0, nil, fmt.Errorf("%w: padding record at %d of %d bytes does not end the ring", ErrCorrupt, rd.head, n)
			}
			rd.advance(contig)
			continue
		}
		rec := RecordHeader + align8(n)
		if n > maxRecord || rec > contig || rec > avail {
			return 0, 0, nil, fmt.Errorf("%w: record at %d of %d bytes does not fit (ring %d, %d published)", ErrCorrupt, rd.head, n, r.size, avail)
		}
		if started && (k != fkind || rid != fid) {
			return 0, 0, nil, fmt.Errorf("%w: record at %d (kind %d, id %d) interrupts frame kind %d id %d", ErrCorrupt, rd.head, k, rid, fkind, fid)
		}
		if uint64(len(rd.buf))+n > MaxFrame {
			return 0, 0, nil, fmt.Errorf("%w: frame exceeds %d bytes", ErrCorrupt, MaxFrame)
		}
		// A frame's first record allocates by appending to nothing: the
		// copy fills the new memory, which is then not zeroed first (make
		// would clear it, a measurable cost with frames of hundreds of KiB).
		start := len(rd.buf)
		rd.buf = append(rd.buf, r.data[pos+RecordHeader:pos+RecordHeader+n]...)
		rd.advance(rec)
		if crc32.Checksum(rd.buf[start:], castagnoli) != crc {
			return 0, 0, nil, fmt.Errorf("%w: record at %d: checksum mismatch", ErrCorrupt, rd.head-rec)
		}
		started, fkind, fid = true, k, rid
		if flags&FlagMore == 0 {
			if rd.poked != 0 {
				// The record the poke announced: its spin ends here
				// (unless an Expect of this process moved it on).
				rd.owed.CompareAndSwap(rd.poked, 0)
				rd.poked = 0
			}
			timeline(-int32(fkind))
			out := rd.buf
			rd.buf = nil
			return fkind, fid, out, nil
		}
	}
}

// advance releases n bytes to the producer.
func (rd *Reader) advance(n uint64) {
	r := rd.r
	rd.head += n
	r.head.Store(rd.head)
}

// available waits until bytes are published after head and returns how many.
//
// Waiting first spins a little (yielding to the process's other goroutines
// and to other processes), then sleeps on the bell. How long it spins adapts:
// it grows while answers come soon after the spin gave up, and shrinks while
// they come late or never (an idle ring, or a loaded machine where spinning
// only steals the peer's processor), down to no spin at all.
func (rd *Reader) available() (uint64, error) {
	r := rd.r
	var start time.Time
	for {
		tail := r.tail.Load()
		if avail := tail - rd.head; avail != 0 {
			if avail > r.size || tail&7 != 0 {
				return 0, fmt.Errorf("%w: tail %d is not within the ring ahead of head %d", ErrCorrupt, tail, rd.head)
			}
			return avail, nil
		}
		if rd.closed.Load() {
			return 0, ErrClosed
		}
		if start.IsZero() {
			start = time.Now()
			rd.spin = rd.spinFor
		}
		if rd.spin > 0 && rd.spinStep(start) {
			continue
		}
		if rd.owedNow() {
			rd.yield()
			continue
		}
		// Announce the sleep, then look once more: a producer that
		// published before seeing the announcement is seen here, one that
		// publishes after it rings the bell; likewise an Expect of this
		// process.
		r.rsleep.Store(1)
		if r.tail.Load() != rd.head || rd.owedNow() {
			r.rsleep.Store(0)
			continue
		}
		_ = rd.bell.SetReadDeadline(time.Now().Add(pollInterval))
		err := readBell(rd.bellRC, &rd.bellBuf)
		r.rsleep.Store(0)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, fmt.Errorf("%w: bell: %v", ErrClosed, err)
		}
		if err == nil && rd.pokeSpin > 0 && r.tail.Load() == rd.head {
			// Rung with nothing published: a poke (or, rarely, a bell
			// for a record already read). The record is on its way.
			rd.poked = rd.expect(rd.pokeSpin)
		}
		if !rd.owedNow() { // not woken by Expect, whose spin says nothing of the peer's pace
			rd.adapt(time.Since(start))
		}
		start = time.Time{}
	}
}

// expect is Conn.Expect. It returns the expectation it set (owed), or 0
// when one already lasted longer.
func (rd *Reader) expect(d time.Duration) int64 {
	until := clockNow() + int64(d)
	set := int64(0)
	for cur := rd.owed.Load(); cur < until; cur = rd.owed.Load() {
		if rd.owed.CompareAndSwap(cur, until) {
			set = until
			break
		}
	}
	if rd.r.rsleep.Load() == 1 {
		// Asleep: wake it through its own bell, which this process
		// otherwise never rings. The netpoller finds it ready when this
		// thread next looks for work, so the wake-up costs no other thread
		// and happens while the peer is still working on the request.
		ringBell(rd.r.bell)
	}
	return set
}

// spinStep spins once; false when the spin's time is up.
func (rd *Reader) spinStep(start time.Time) bool {
	if time.Since(start) >= rd.spin {
		return false
	}
	rd.yield()
	return true
}

// yield gives way once while spinning: mostly to the process's other
// goroutines, every fourth time to other threads of any process.
func (rd *Reader) yield() {
	rd.spins++
	if rd.spins%4 == 0 {
		yieldProcessor()
	} else {
		runtime.Gosched()
	}
}

// adapt sets the next spin from how long a wait that ended in a sleep took.
func (rd *Reader) adapt(waited time.Duration) {
	if rd.maxSpin <= 0 {
		return
	}
	if waited < 4*rd.maxSpin {
		// A longer spin would have caught it.
		rd.spinFor = min(max(2*rd.spinFor, rd.maxSpin/8), rd.maxSpin)
		return
	}
	rd.spinFor /= 2
	if rd.spinFor < rd.maxSpin/16 {
		rd.spinFor = 0
	}
}
