package file

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/ferrymq/ferry/core/sdk"
)

var _ sdk.TimeSeeker = (*Store)(nil)

// Seeking by time (sdk.TimeSeeker) uses a sparse time index per queue, in
// memory, after Kafka's .timeindex: one entry per block of timeBlock
// offsets holding the newest stored time of the queue's messages up to the
// block's end, a running maximum, so the entries never decrease even when
// the clock was set back. Append adds to it; open rebuilds it from what
// recovery reads anyway, the record heads of the sealed segments' index
// files and of the scanned segments (every head carries the stored time),
// so it has no file of its own to lose or damage: a damaged .idx file is
// ignored and its segment scanned (and logged), which rebuilds both.
//
// The index is a hint that can only be too high, never too low: every
// message that can be read was noted with its stored time (holes, offsets
// lost to damaged records, have none). So every message of the blocks
// before the first entry >= t was stored before t, and the answer is found
// by reading the records from that block on, checking each one's CRC,
// topic, queue and offset, until one stored at or after t (usually within
// the block). The log decides; the index only says where to start.
const timeBlock = 64

// timeIndex is one queue's sparse time index: maxes[i] is the newest stored
// time of the queue's messages at offsets below (first+i+1)*timeBlock.
type timeIndex struct {
	first int64 // block number of maxes[0]: offsets [first*timeBlock, ...)
	maxes []int64
}

// note records that the message at offset off was stored at stored. Called
// with mu held (Append) or by open.
func (x *timeIndex) note(off, stored int64) {
	b := off / timeBlock
	if len(x.maxes) == 0 {
		x.first, x.maxes = b, append(x.maxes, stored)
		return
	}
	if b < x.first {
		// Offsets only grow within a queue; kept correct anyway.
		lower := make([]int64, x.first-b)
		for i := range lower {
			lower[i] = math.MinInt64
		}
		x.maxes, x.first = slices.Insert(x.maxes, 0, lower...), b
	}
	i := int(b - x.first)
	for len(x.maxes) <= i {
		x.maxes = append(x.maxes, x.maxes[len(x.maxes)-1])
	}
	for j := i; j < len(x.maxes) && x.maxes[j] < stored; j++ {
		x.maxes[j] = stored
	}
}

// from returns the first offset that may hold a message stored at or after
// t, or false when no message noted was.
func (x *timeIndex) from(t int64) (int64, bool) {
	i := sort.Search(len(x.maxes), func(i int) bool { return x.maxes[i] >= t })
	if i == len(x.maxes) {
		return 0, false
	}
	return (x.first + int64(i)) * timeBlock, true
}

// trim drops the entries of blocks wholly below start (retention).
func (x *timeIndex) trim(start int64) {
	if k := start/timeBlock - x.first; k > 0 && len(x.maxes) > 0 {
		k = min(k, int64(len(x.maxes)-1)) // the last entry stays: the running max
		x.maxes, x.first = x.maxes[k:], x.first+k
		if cap(x.maxes) > 2*len(x.maxes)+1024 {
			x.maxes = slices.Clone(x.maxes)
		}
	}
}

// seekChunkBytes bounds the record bytes one step of a seek reads.
const seekChunkBytes = 8 << 20

// OffsetsForTime answers, per queue, the first readable offset whose
// message was stored at or after unixNano (sdk.TimeSeeker). Called
// concurrently with everything else; it reads the files without holding
// the lock, as Read does.
func (s *Store) OffsetsForTime(ctx context.Context, unixNano int64, queues []*sdk.QueueRef) ([]int64, error) {
	for _, r := range queues {
		if err := checkQueue(r.GetTopic(), r.GetQueue()); err != nil {
			return nil, err
		}
	}
	out := make([]int64, len(queues))
	for i, r := range queues {
		off, err := s.offsetForTime(ctx, queueKey{r.Topic, r.Queue}, unixNano)
		if err != nil {
			return nil, err
		}
		out[i] = off
	}
	return out, nil
}

// seekEntry is a record to look at: its queue offset and where it is.
type seekEntry struct {
	off int64
	e   entry
}

func (s *Store) offsetForTime(ctx context.Context, k queueKey, t int64) (int64, error) {
	var from int64 = -1
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		s.mu.RLock()
		if err := s.usable(); err != nil {
			s.mu.RUnlock()
			return 0, err
		}
		q := s.queues[k]
		if q == nil {
			s.mu.RUnlock()
			return 0, nil
		}
		vend := q.visibleEnd(s.durable.Load())
		if from < 0 {
			f, ok := q.times.from(t)
			if !ok {
				s.mu.RUnlock()
				return vend, nil
			}
			from = f
		}
		from = max(from, q.start)
		if from >= vend {
			s.mu.RUnlock()
			return vend, nil
		}
		// The next chunk: up to a block's records, at most
		// seekChunkBytes (one record at least), holes left out.
		var look []seekEntry
		var ents []entry
		var total int64
		next := from
		for ; next < vend && next < from+timeBlock; next++ {
			e := q.ents[next-q.start]
			if e.size == 0 {
				continue
			}
			if len(ents) > 0 && total+int64(e.size) > seekChunkBytes {
				break
			}
			look = append(look, seekEntry{next, e})
			ents = append(ents, e)
			total += int64(e.size)
		}
		runs := s.planReads(ents)
		s.mu.RUnlock()
		found, err := s.firstStoredAtOrAfter(k, runs, look, t)
		for _, r := range runs {
			r.seg.release()
		}
		if err != nil || found >= 0 {
			return found, err
		}
		from = next
	}
}

// firstStoredAtOrAfter reads the records of runs (the entries of look, in
// order) and returns the offset of the first stored at or after t, or -1.
// A record that fails its checks is logged and passed over: its time is
// unknown, and a read of it answers sdk.ErrCorrupt anyway.
func (s *Store) firstStoredAtOrAfter(k queueKey, runs []readRun, look []seekEntry, t int64) (int64, error) {
	n := 0
	for _, r := range runs {
		buf := make([]byte, r.bytes)
		if _, err := r.seg.f.ReadAt(buf, segmentHeaderSize+r.ents[0].pos-r.seg.base); err != nil {
			return 0, fmt.Errorf("storage-file: read %s: %w", r.seg.path, err)
		}
		for _, e := range r.ents {
			at := look[n]
			n++
			m, err := parseRecord(buf[:e.size])
			buf = buf[e.size:]
			if err == nil && (m.topic != k.topic || m.queue != k.queue || m.offset != at.off) {
				err = fmt.Errorf("it holds %s/%d@%d", m.topic, m.queue, m.offset)
			}
			if err != nil {
				s.log.Warn("seek by time: a damaged record passed over", "segment", r.seg.path, "position", e.pos,
					"topic", k.topic, "queue", k.queue, "offset", at.off, "error", err)
				continue
			}
			if m.stored >= t {
				return at.off, nil
			}
		}
	}
	return -1, nil
}
