package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
	"time"
)

// System is what workloads run against: Ferry (through its client) or, in
// the comparison harness, another broker.
type System interface {
	// Name labels the system's results.
	Name() string
	// Run runs w (defaults filled in and valid) to its end or until ctx
	// ends, recording into rec, and returns rec's Result. An error means
	// the run could not be carried out (the topic does not exist, the
	// broker cannot be reached); messages that failed are counted in the
	// result by status instead.
	Run(ctx context.Context, w Workload, rec *Recorder) (*Result, error)
}

// budget hands out the messages of a run to its producers: Count in all, or
// as many as fit in Duration.
type budget struct {
	left     atomic.Int64
	deadline time.Time
	byTime   bool
}

func newBudget(w Workload, start time.Time) *budget {
	b := &budget{}
	if w.Duration > 0 {
		b.byTime, b.deadline = true, start.Add(w.Duration)
	} else {
		b.left.Store(w.Count)
	}
	return b
}

// take reports whether one more message may be sent.
func (b *budget) take(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	if b.byTime {
		return time.Now().Before(b.deadline)
	}
	return b.left.Add(-1) >= 0
}

// Body returns a body of size random (incompressible) bytes.
func Body(size int) []byte {
	b := make([]byte, size)
	_, _ = rand.Read(b)
	return b
}

// stampBytes is the prefix of an end-to-end message's body: the run's id
// (8 bytes) and the send time in Unix nanoseconds (8 bytes).
const stampBytes = 16

// Stamp returns a copy of body that carries run and the time now, for an
// end-to-end run's consumer to read back with ReadStamp.
func Stamp(body []byte, run uint64) []byte {
	b := make([]byte, len(body))
	copy(b, body)
	binary.LittleEndian.PutUint64(b[0:8], run)
	binary.LittleEndian.PutUint64(b[8:16], uint64(time.Now().UnixNano()))
	return b
}

// ReadStamp returns the send time of a body stamped by run, or false when
// the body is from another run.
func ReadStamp(body []byte, run uint64) (time.Time, bool) {
	if len(body) < stampBytes || binary.LittleEndian.Uint64(body[0:8]) != run {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.LittleEndian.Uint64(body[8:16]))), true
}

// RunID returns a random non-zero id for Stamp.
func RunID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}
