package verify

import (
	"testing"
)

// --keys N: a producer's messages take its N keys in turn; ids stay the
// producer's and seq; the order is checked per key, so messages of two
// keys of one producer may be stored in either order, those of one key not.
func TestKeysPerProducer(t *testing.T) {
	one := &work{run: "r", i: 1, keys: 1, size: 64}
	if m := one.message(7); m.Key != "r-p1" || m.ID != "r-p1-7" {
		t.Fatalf("one key: key %q id %q, want r-p1 and r-p1-7", m.Key, m.ID)
	}
	three := &work{run: "r", i: 1, keys: 3, size: 64}
	for seq, want := range []string{"r-p1-k0", "r-p1-k1", "r-p1-k2", "r-p1-k0"} {
		if m := three.message(int64(seq)); m.Key != want {
			t.Fatalf("three keys: message %d has key %q, want %q", seq, m.Key, want)
		}
	}
	// check stores the sends of w (seq 0..3, all acked in queue 0) in the
	// order given and returns what is out of order.
	check := func(w *work, order []int64) int {
		var sent []Send
		var stored []Stored
		at := map[int64]int64{}
		for pos, seq := range order {
			at[seq] = int64(pos)
		}
		for seq := range int64(4) {
			m := w.message(seq)
			sent = append(sent, Send{ID: m.ID, Key: m.Key, Seq: seq, Outcome: OutcomeOK, Queue: 0, Offset: at[seq]})
		}
		for pos, seq := range order {
			m := w.message(seq)
			stored = append(stored, Stored{ID: m.ID, Key: m.Key, Queue: 0, Offset: int64(pos)})
		}
		r := Check(sent, stored)
		if r.Lost != 0 || r.WrongOffset != 0 {
			t.Fatalf("lost %d, wrong offset %d", r.Lost, r.WrongOffset)
		}
		return r.OutOfOrder
	}
	two := &work{run: "r", i: 1, keys: 2, size: 64}
	swapped := []int64{1, 0, 3, 2} // keys k1 k0 k1 k0: each key's in order
	if n := check(two, swapped); n != 0 {
		t.Errorf("two keys, each in order: %d out of order, want 0", n)
	}
	// The controls: one key, the same order, is out of order; and two
	// keys whose k0 is stored 2 before 0.
	if n := check(one, swapped); n == 0 {
		t.Errorf("one key stored 1 0 3 2: nothing out of order")
	}
	if n := check(two, []int64{2, 1, 0, 3}); n == 0 {
		t.Errorf("two keys, k0 stored 2 before 0: nothing out of order")
	}
}
