package file

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// dedupModel is what dedup must answer: the offsets of the last
// dedupWindow ids added.
type dedupModel struct {
	order []string
	at    map[string]int64
}

func (m *dedupModel) add(id string, off int64) {
	m.order = append(m.order, id)
	m.at[id] = off
	if len(m.order) > dedupWindow {
		delete(m.at, m.order[0])
		m.order = m.order[1:]
	}
}

// The table answers as the model over random adds and lookups, past the
// window many times, with real hashes and with hashes forced to collide
// (few distinct values: long probe runs, deletions shifting words back
// across the table's end), and after a rebuild as at open. The negative
// control: a table whose deletion leaves holes (no shift back) fails.
func TestDedupModel(t *testing.T) {
	real := dedupHash
	defer func() { dedupHash = real }()
	hashes := map[string]func(string) uint64{
		"maphash": real,
		"colliding": func(id string) uint64 {
			h := real(id)
			return h&^0xffff | h%7 + 0x7ff8 // 7 homes at the table's end; high bits still differ
		},
		"same": func(string) uint64 { return 42 },
	}
	for name, h := range hashes {
		t.Run(name, func(t *testing.T) {
			dedupHash = h
			if err := checkDedupModel(t, name == "same", false); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("control", func(t *testing.T) {
		dedupHash = hashes["colliding"]
		if err := checkDedupModel(t, false, true); err == nil {
			t.Fatal("a table that deletes without shifting back passed: this test proves nothing")
		}
	})
}

func checkDedupModel(t *testing.T, short, broken bool) error {
	rng := rand.New(rand.NewPCG(1, 2))
	var d dedup
	model := &dedupModel{at: map[string]int64{}}
	pool := 3 * dedupWindow
	ops := 5 * dedupWindow
	if short {
		ops, pool = dedupWindow/4, dedupWindow/8 // every id on one probe run: quadratic
	}
	check := func(id string) error {
		off, ok := d.lookup(dedupHash(id), id)
		want, wok := model.at[id]
		if ok != wok || off != want {
			return fmt.Errorf("lookup(%s) = %d, %v; want %d, %v", id, off, ok, want, wok)
		}
		return nil
	}
	for i := range ops {
		id := fmt.Sprintf("id-%d", rng.IntN(pool))
		if err := check(id); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if _, ok := model.at[id]; !ok {
			if broken && len(d.ring) == dedupWindow {
				// Deletion without the shift back: the evicted word's
				// position is only cleared.
				d.removeWithoutShift(d.next)
				at := d.putID(id, d.next)
				d.ring[d.next] = dedupEntry{hash: dedupHash(id), offset: int64(i), at: at, n: uint16(len(id))}
				d.insert(dedupHash(id), d.next)
				d.next = (d.next + 1) % dedupWindow
			} else {
				d.add(dedupHash(id), id, int64(i))
			}
			model.add(id, int64(i))
		}
		if d.used != len(d.ring) {
			return fmt.Errorf("op %d: %d words for %d entries", i, d.used, len(d.ring))
		}
	}
	// As at open: the ring alone, then the table rebuilt.
	var r dedup
	for _, id := range model.order {
		r.addRecovered(id, model.at[id])
	}
	r.rebuildSlots()
	d = r
	for j := range pool {
		if err := check(fmt.Sprintf("id-%d", j)); err != nil {
			return fmt.Errorf("after the rebuild: %w", err)
		}
	}
	return nil
}

// removeWithoutShift is remove without its shift back (the test's control).
func (d *dedup) removeWithoutShift(slot int) {
	for i, w := range d.table {
		if w != 0 && wordSlot(w) == slot {
			d.table[i] = 0
			d.used--
			return
		}
	}
}

// BenchmarkDedup: a full window, each op a lookup that misses and an add
// that evicts, as an append of fresh ids does.
func BenchmarkDedup(b *testing.B) {
	var d dedup
	ids := make([]string, 4*dedupWindow)
	for i := range ids {
		ids[i] = fmt.Sprintf("p6cadc7192b-%d", i)
	}
	i := 0
	for b.Loop() {
		id := ids[i%len(ids)]
		h := dedupHash(id)
		if _, ok := d.lookup(h, id); !ok {
			d.add(h, id, int64(i))
		}
		i++
	}
}

// TestDedupIDsOfAnyLength: ids of very different lengths (the buffer their
// bytes share wraps around and grows) are all found, with the right offsets,
// and the buffer stays within a small multiple of what the window's ids take.
// The negative control: a buffer that overwrites the oldest live id fails.
func TestDedupIDsOfAnyLength(t *testing.T) {
	run := func(clobber bool) error {
		rng := rand.New(rand.NewPCG(3, 4))
		var d dedup
		model := &dedupModel{at: map[string]int64{}}
		for i := range 4 * dedupWindow {
			n := 1 + rng.IntN(60)
			if rng.IntN(500) == 0 {
				n = 3000 + rng.IntN(3000)
			}
			id := fmt.Sprintf("%d-%s", i, strings.Repeat("x", n))
			if clobber && i > dedupWindow && i%997 == 0 {
				// What a buffer too small would do: an id still in
				// the window overwritten.
				copy(d.id(&d.ring[(d.next+500)%len(d.ring)]), "!")
			}
			d.add(dedupHash(id), id, int64(i))
			model.add(id, int64(i))
			if i%997 == 0 || i == 4*dedupWindow-1 {
				live := 0
				for _, e := range d.ring {
					live += int(e.n)
				}
				if len(d.ids) > 4*live+8192+2*6000 {
					return fmt.Errorf("op %d: %d bytes of ids buffer for %d live", i, len(d.ids), live)
				}
				for _, old := range model.order {
					off, ok := d.lookup(dedupHash(old), old)
					if !ok || off != model.at[old] {
						return fmt.Errorf("op %d: id %.20q: %d, %v; want %d", i, old, off, ok, model.at[old])
					}
				}
			}
		}
		return nil
	}
	if err := run(false); err != nil {
		t.Fatal(err)
	}
	if run(true) == nil {
		t.Fatal("control: a clobbered oldest id was still found")
	}
}
