package verify

import "testing"

// A group's result counts what it missed, what it delivered twice and what
// it delivered that the topic does not hold: the drain check can fail.
func TestGroupResult(t *testing.T) {
	c := newConsumer("", "", "t", "g", "push", "r-", nil)
	c.counts = map[string]int{"r-1": 1, "r-2": 3, "r-9": 1}
	g := c.result([]Stored{{ID: "r-1"}, {ID: "r-2"}, {ID: "r-3"}})
	if g.Delivered != 3 || g.Redelivered != 2 || g.Missing != 1 || g.NotStored != 1 || len(g.Examples) != 2 {
		t.Fatalf("%+v", g)
	}
}
