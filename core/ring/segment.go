package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"
)

// Layout of a segment (little-endian; see docs/ring-protocol.md).
//
//	0                 segment header (headerSize bytes; 32 used)
//	                    magic [8]  "FERRYRG1"
//	                    version    u32
//	                    rings      u32 (always 2)
//	                    ring_size  u64 (bytes of data per ring, a power of two)
//	                    reserved   u64 (0)
//	headerSize+i*ctrlSize  control block of ring i (4 cache lines)
//	                    +0    tail        u64  written by the ring's producer only
//	                    +64   head        u64  written by the ring's consumer only
//	                    +128  rsleep      u32  1 while the consumer sleeps (or is about to)
//	                    +192  reserved    u32  0
//	dataOffset+i*ring_size data of ring i
//
// Ring 0 carries host → plugin records (Down), ring 1 plugin → host (Up).
// Each ring has an eventfd, its bell: the consumer that announced in rsleep
// that it sleeps waits for the bell; a producer rings it (writes 1) only
// when it sees the announcement.
const (
	Magic      = "FERRYRG1"
	Version    = 1
	headerSize = 4096
	ctrlSize   = 256
	dataOffset = 2 * headerSize

	offTail   = 0
	offHead   = 64
	offRSleep = 128

	// MinRingSize and MaxRingSize bound a ring's data size.
	MinRingSize = 64 << 10
	MaxRingSize = 1 << 30
	// DefaultRingSize is each direction's ring when the host names none.
	DefaultRingSize = 4 << 20
)

// Directions: which ring of a segment.
const (
	Down = 0 // host → plugin
	Up   = 1 // plugin → host
)

// ErrCorrupt reports that the peer broke the protocol: a bad index, record
// header or checksum. The connection is unusable afterwards.
var ErrCorrupt = errors.New("ring: peer broke the protocol")

// Segment is one shared mapping holding both rings, and each ring's bell.
type Segment struct {
	file *os.File
	// The bells' descriptors. A process never registers the bell it rings
	// with its poller (it would wake itself); the ring's consumer reads a
	// non-blocking duplicate of its own (Conn).
	bells     [2]int
	bellFiles [2]*os.File // the creator's: what Files hands out, kept open
	mem       []byte
	ringSize  uint64
}

// Create makes a new segment in anonymous shared memory (a memfd, or an
// unlinked file in /dev/shm where memfd is missing) with two rings of
// ringSize bytes each. Only processes handed its file can map it.
func Create(ringSize int) (*Segment, error) {
	if ringSize < MinRingSize || ringSize > MaxRingSize || ringSize&(ringSize-1) != 0 {
		return nil, fmt.Errorf("ring size %d: must be a power of two between %d and %d", ringSize, MinRingSize, MaxRingSize)
	}
	f, err := createShared("ferry-ring")
	if err != nil {
		return nil, fmt.Errorf("ring: create shared memory: %w", err)
	}
	total := dataOffset + 2*ringSize
	if err := f.Truncate(int64(total)); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring: size shared memory: %w", err)
	}
	mem, err := mapShared(f, total)
	if err != nil {
		f.Close()
		return nil, err
	}
	copy(mem[0:8], Magic)
	binary.LittleEndian.PutUint32(mem[8:], Version)
	binary.LittleEndian.PutUint32(mem[12:], 2)
	binary.LittleEndian.PutUint64(mem[16:], uint64(ringSize))
	s := &Segment{file: f, mem: mem, ringSize: uint64(ringSize), bells: [2]int{-1, -1}}
	for i := range s.bells {
		fd, err := newBell()
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("ring: create bell: %w", err)
		}
		// Blocking, so that this wrapper is not registered with the
		// poller; it only carries the descriptor to the plugin.
		s.bells[i], s.bellFiles[i] = fd, os.NewFile(uintptr(fd), "ferry-ring-bell")
	}
	return s, nil
}

// Open maps a segment another process created, from its file descriptors
// (inherited at exec, in the order of Files), and checks its header. The
// segment owns the descriptors from now on. The mapping's size comes from the
// file, not from the header, so a header that lies cannot make a ring reach
// beyond it.
func Open(fds []int) (*Segment, error) {
	if len(fds) != 3 {
		return nil, fmt.Errorf("ring: a segment is 3 descriptors (memory, 2 bells), got %d", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "ferry-ring")
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ring: stat shared memory: %w", err)
	}
	size := st.Size()
	if size < dataOffset+2*MinRingSize || size > dataOffset+2*MaxRingSize {
		return nil, fmt.Errorf("ring: shared memory of %d bytes is not a ring segment", size)
	}
	mem, err := mapShared(f, int(size))
	if err != nil {
		return nil, err
	}
	s := &Segment{file: f, mem: mem, bells: [2]int{fds[1], fds[2]}}
	if err := s.check(); err != nil {
		_ = unmapShared(mem)
		return nil, err
	}
	return s, nil
}

func (s *Segment) check() error {
	if string(s.mem[0:8]) != Magic {
		return fmt.Errorf("ring: bad magic %q (want %q)", s.mem[0:8], Magic)
	}
	if v := binary.LittleEndian.Uint32(s.mem[8:]); v != Version {
		return fmt.Errorf("ring: protocol version %d, this side speaks %d", v, Version)
	}
	if n := binary.LittleEndian.Uint32(s.mem[12:]); n != 2 {
		return fmt.Errorf("ring: %d rings, want 2", n)
	}
	rs := binary.LittleEndian.Uint64(s.mem[16:])
	if rs < MinRingSize || rs > MaxRingSize || rs&(rs-1) != 0 || dataOffset+2*rs != uint64(len(s.mem)) {
		return fmt.Errorf("ring: ring size %d does not fit a segment of %d bytes", rs, len(s.mem))
	}
	s.ringSize = rs
	return nil
}

// Files are the segment's shared-memory file and the bells of ring Down and
// ring Up, in that order, to hand to the plugin process (exec.Cmd.ExtraFiles).
// Only a segment made by Create has them.
func (s *Segment) Files() []*os.File {
	return []*os.File{s.file, s.bellFiles[Down], s.bellFiles[Up]}
}

// RingSize is the data size of each ring.
func (s *Segment) RingSize() int { return int(s.ringSize) }

// Close unmaps the segment and closes its file. Call it only once nothing
// uses its rings.
func (s *Segment) Close() error {
	err := unmapShared(s.mem)
	s.mem = nil
	closeFile := func(f *os.File) {
		if f != nil {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	closeFile(s.file)
	for i := range s.bells {
		if s.bellFiles[i] != nil {
			closeFile(s.bellFiles[i])
		} else if s.bells[i] >= 0 {
			_ = closeFD(s.bells[i])
		}
		s.bells[i] = -1
	}
	return err
}

// ring is one direction's shared state.
type ring struct {
	data   []byte
	size   uint64
	tail   *atomic.Uint64
	head   *atomic.Uint64
	rsleep *atomic.Uint32
	bell   int // the bell's descriptor, for the producer to ring
}

func (s *Segment) ring(dir int) *ring {
	ctrl := headerSize + dir*ctrlSize
	data := dataOffset + dir*int(s.ringSize)
	return &ring{
		data:   s.mem[data : data+int(s.ringSize) : data+int(s.ringSize)],
		size:   s.ringSize,
		tail:   (*atomic.Uint64)(unsafe.Pointer(&s.mem[ctrl+offTail])),
		head:   (*atomic.Uint64)(unsafe.Pointer(&s.mem[ctrl+offHead])),
		rsleep: (*atomic.Uint32)(unsafe.Pointer(&s.mem[ctrl+offRSleep])),
		bell:   s.bells[dir],
	}
}
