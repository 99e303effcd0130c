package file

import (
	"hash/maphash"
	"unsafe"

	"github.com/ferrymq/ferry/core/sdk"
)

// dedup remembers the last dedupWindow message ids of a queue: a ring of
// entries in append order, and an open-addressing table (linear probing)
// from the id's hash to its ring slot. A hit is confirmed by comparing the
// id, so a hash collision costs a probe, never a new message taken for a
// duplicate or an id forgotten early.
//
// Each table word packs what a probe needs without touching the ring: the
// hash's high 32 bits (to compare), its low 16 (the home position, for
// deletion) and the slot plus one (0 is an empty word). A Go map here cost
// a sixth of the storage plugin's CPU under async produce: four map
// operations and two hashes a message, mostly cache misses.
//
// The ids' bytes are kept in one buffer (ids), in the ring's order, and an
// entry holds no pointer: the garbage collector has nothing to scan in a
// window of ten thousand ids, and adding one allocates nothing.
type dedup struct {
	ring  []dedupEntry
	next  int      // the oldest entry once the ring is full
	table []uint64 // len a power of two, at most half full; nil until used
	used  int
	ids   []byte // the ring's ids, oldest first, wrapping around its end
	head  int    // where the next id's bytes go in ids
}

type dedupEntry struct {
	hash   uint64
	offset int64
	at     uint32 // its id's bytes: ids[at:at+n]
	n      uint16
}

// id returns e's id (aliasing ids: valid until the next add).
func (d *dedup) id(e *dedupEntry) []byte { return d.ids[e.at : int(e.at)+int(e.n)] }

// oldest returns the oldest entry, when there is one.
func (d *dedup) oldest() (*dedupEntry, bool) {
	if len(d.ring) == 0 {
		return nil, false
	}
	if len(d.ring) < dedupWindow {
		return &d.ring[0], true
	}
	return &d.ring[d.next], true
}

// putID copies id into ids after the newest id and returns where; skip
// is the ring slot about to be replaced (its bytes are free), or -1.
func (d *dedup) putID(id string, skip int) uint32 {
	n := len(id)
	tail := -1 // the oldest live id's first byte
	if len(d.ring) > 0 {
		o := 0
		if len(d.ring) == dedupWindow {
			o = d.next
		}
		if o == skip {
			o = (o + 1) % len(d.ring)
		}
		if o != skip {
			tail = int(d.ring[o].at)
		}
	}
	switch {
	case tail < 0:
		d.head = 0 // nothing live
		if n > len(d.ids) {
			d.ids = make([]byte, max(2*n, 4096))
		}
	case d.head >= tail && n <= len(d.ids)-d.head:
	case d.head >= tail && n < tail:
		d.head = 0 // wrap: the end's few bytes stay unused
	case d.head < tail && n < tail-d.head:
	default:
		d.growIDs(n, skip)
	}
	at := d.head
	copy(d.ids[at:], id)
	d.head += n
	return uint32(at)
}

// growIDs moves the live ids, oldest first, into a buffer with room for
// need more bytes (twice what they take), updating their entries.
func (d *dedup) growIDs(need, skip int) {
	live := 0
	for i := range d.ring {
		if i != skip {
			live += int(d.ring[i].n)
		}
	}
	buf := make([]byte, max(2*(live+need), 2*len(d.ids), 4096))
	at := 0
	for k := range len(d.ring) {
		i := k
		if len(d.ring) == dedupWindow {
			i = (d.next + k) % dedupWindow
		}
		if i == skip {
			continue
		}
		e := &d.ring[i]
		copy(buf[at:], d.id(e))
		e.at = uint32(at)
		at += int(e.n)
	}
	d.ids, d.head = buf, at
}

const dedupWindow = sdk.DedupWindow

// The table grows by doubling up to twice the window (rounded up to a power
// of two), so that it stays at most half full.
const (
	dedupMinTable = 64
	dedupMaxTable = 1 << 15
)

func init() {
	// Slots are packed in 16 bits and home positions in 16.
	if dedupWindow >= 1<<16-1 || dedupMaxTable > 1<<16 || dedupMaxTable < 2*dedupWindow {
		panic("storage-file: dedup window does not fit its table")
	}
}

var dedupSeed = maphash.MakeSeed()

// dedupHash is the hash dedup keys ids by (a variable for tests that force
// collisions).
var dedupHash = func(id string) uint64 { return maphash.String(dedupSeed, id) }

func dedupWord(h uint64, slot int) uint64 {
	return h&^(1<<32-1) | (h&0xffff)<<16 | uint64(slot+1)
}

func wordSlot(w uint64) int    { return int(w&0xffff) - 1 }
func wordHome(w uint64) uint64 { return w >> 16 & 0xffff }

// lookup returns the offset stored for id, whose hash is h.
func (d *dedup) lookup(h uint64, id string) (int64, bool) {
	if d.table == nil {
		return 0, false
	}
	mask := uint64(len(d.table) - 1)
	hi := h >> 32
	for pos := h & mask; ; pos = (pos + 1) & mask {
		w := d.table[pos]
		if w == 0 {
			return 0, false
		}
		if w>>32 == hi {
			if e := &d.ring[wordSlot(w)]; e.hash == h && string(d.id(e)) == id {
				return e.offset, true
			}
		}
	}
}

// add remembers id (hash h) at offset, forgetting the oldest id once the
// window is full. id must not be remembered already (lookup first).
//
// id is copied: the caller's may alias a request.
func (d *dedup) add(h uint64, id string, offset int64) {
	slot := len(d.ring)
	if slot < dedupWindow {
		at := d.putID(id, -1)
		d.ring = append(d.ring, dedupEntry{hash: h, offset: offset, at: at, n: uint16(len(id))})
	} else {
		slot = d.next
		d.remove(slot)
		at := d.putID(id, slot)
		d.ring[slot] = dedupEntry{hash: h, offset: offset, at: at, n: uint16(len(id))}
		d.next = (d.next + 1) % dedupWindow
	}
	d.insert(h, slot)
}

// addRecovered remembers id during open, in the ring only; rebuildSlots
// makes the table once every record is in, so that a log of millions of
// messages costs no table churn.
func (d *dedup) addRecovered(id string, offset int64) {
	if len(d.ring) < dedupWindow {
		at := d.putID(id, -1)
		d.ring = append(d.ring, dedupEntry{offset: offset, at: at, n: uint16(len(id))})
		return
	}
	at := d.putID(id, d.next)
	d.ring[d.next] = dedupEntry{offset: offset, at: at, n: uint16(len(id))}
	d.next = (d.next + 1) % dedupWindow
}

// rebuildSlots hashes the ring's ids and makes the table.
func (d *dedup) rebuildSlots() {
	for i := range d.ring {
		id := d.id(&d.ring[i])
		d.ring[i].hash = dedupHash(unsafe.String(unsafe.SliceData(id), len(id)))
	}
	d.table, d.used = nil, 0
	d.grow(len(d.ring))
	// Newest first: an id the log holds twice is found at its newer copy.
	for i := len(d.ring) - 1; i >= 0; i-- {
		slot := (d.next + i) % len(d.ring)
		d.insert(d.ring[slot].hash, slot)
	}
}

// grow makes room in the table for n entries (re-inserting what it holds).
func (d *dedup) grow(n int) {
	size := max(len(d.table), dedupMinTable)
	for 2*n > size && size < dedupMaxTable {
		size *= 2
	}
	if size == len(d.table) {
		return
	}
	old := d.table
	d.table, d.used = make([]uint64, size), 0
	for _, w := range old {
		if w != 0 {
			d.place(w)
		}
	}
}

func (d *dedup) insert(h uint64, slot int) {
	d.grow(d.used + 1)
	d.place(dedupWord(h, slot))
}

// place puts a word in the first empty position from its home.
func (d *dedup) place(w uint64) {
	mask := uint64(len(d.table) - 1)
	pos := wordHome(w) & mask
	for d.table[pos] != 0 {
		pos = (pos + 1) & mask
	}
	d.table[pos] = w
	d.used++
}

// remove takes a ring slot's word out of the table, shifting back the words
// after it that would otherwise no longer be found (linear probing's
// deletion without tombstones).
func (d *dedup) remove(slot int) {
	mask := uint64(len(d.table) - 1)
	h := d.ring[slot].hash
	pos := h & 0xffff & mask
	for {
		w := d.table[pos]
		if w == 0 {
			return // not in the table (cannot happen: every slot is)
		}
		if wordSlot(w) == slot {
			break
		}
		pos = (pos + 1) & mask
	}
	d.used--
	hole := pos
	for j := (hole + 1) & mask; d.table[j] != 0; j = (j + 1) & mask {
		home := wordHome(d.table[j]) & mask
		// The word at j stays if its home lies cyclically in (hole, j].
		if hole <= j && hole < home && home <= j || hole > j && (hole < home || home <= j) {
			continue
		}
		d.table[hole] = d.table[j]
		hole = j
	}
	d.table[hole] = 0
}
