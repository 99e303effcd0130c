package verify

import (
	"fmt"
	"strings"
	"testing"
)

// A group's result counts what it missed, what it delivered twice, what it
// delivered that the topic does not hold or no producer sent, what of the
// acknowledged it never delivered, and a key's messages first delivered out
// of order: each check can fail.
func TestGroupResult(t *testing.T) {
	c := newConsumer("", nil, "t", "g", "push", "r-", nil)
	// What ferry consume --json prints, read as verify reads it.
	var lines strings.Builder
	for _, d := range []struct {
		id, key string
		queue   int32
	}{
		{"r-p0-0", "r-p0", 0}, {"r-p0-2", "r-p0", 0}, {"r-p0-1", "r-p0", 0}, // 1 after 2
		{"r-p0-2", "r-p0", 0}, {"r-p0-2", "r-p0", 0}, // redelivered: not out of order
		{"r-p1-1", "r-p1", 1}, {"r-p1-0", "r-p1", 2}, // another queue: queues are independent
		{"r-p9-0", "r-p9", 0}, // never sent
		{"x-p0-0", "x-p0", 0}, // another run's: ignored
	} {
		fmt.Fprintf(&lines, `{"id":%q,"key":%q,"queue":%d,"offset":0}`+"\n", d.id, d.key, d.queue)
	}
	c.read(strings.NewReader(lines.String()))
	sends := []Send{
		{ID: "r-p0-0", Seq: 0}, {ID: "r-p0-1", Seq: 1}, {ID: "r-p0-2", Seq: 2}, {ID: "r-p0-3", Seq: 3},
		{ID: "r-p1-0", Seq: 0}, {ID: "r-p1-1", Seq: 1}, {ID: "r-p1-2", Seq: 2, Outcome: OutcomeUnknown},
	}
	stored := []Stored{{ID: "r-p0-0"}, {ID: "r-p0-1"}, {ID: "r-p0-2"}, {ID: "r-p0-3"}, {ID: "r-p1-0"}}
	g := c.result(stored, sends)
	want := GroupResult{Delivered: 6, Redelivered: 2, Missing: 1, NotStored: 2, Lost: 1, Unexpected: 1, OutOfOrder: 1}
	if g.Delivered != want.Delivered || g.Redelivered != want.Redelivered || g.Missing != want.Missing || g.NotStored != want.NotStored ||
		g.Lost != want.Lost || g.Unexpected != want.Unexpected || g.OutOfOrder != want.OutOfOrder {
		t.Fatalf("got %+v\nwant %+v", g, want)
	}
	ex := strings.Join(g.Examples, "; ")
	for _, w := range []string{"missing r-p0-3", "out of order r-p0-1", "never sent r-p9-0"} {
		if !strings.Contains(ex, w) {
			t.Errorf("examples %q lack %q", ex, w)
		}
	}
	// In order, nothing missing: a clean group.
	c = newConsumer("", nil, "t", "g", "push", "r-", nil)
	for _, s := range sends[:4] {
		c.counts[s.ID] = 1
		c.first["r-p0"] = append(c.first["r-p0"], s.ID)
	}
	if g := c.result(stored[:4], sends[:4]); g.Missing+g.Lost+g.Unexpected+g.OutOfOrder+g.NotStored != 0 {
		t.Fatalf("a clean group: %+v", g)
	}
}
