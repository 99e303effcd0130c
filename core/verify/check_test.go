package verify

import (
	"fmt"
	"testing"
	"time"
)

// sentAndStored makes n acknowledged sync sends of key k, each stored where
// its ack says.
func sentAndStored(n int) ([]Send, []Stored) {
	var sent []Send
	var stored []Stored
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		sent = append(sent, Send{ID: id, Key: "k", Seq: int64(i), Outcome: OutcomeOK, Queue: 0, Offset: int64(i)})
		stored = append(stored, Stored{ID: id, Key: "k", Queue: 0, Offset: int64(i)})
	}
	return sent, stored
}

// A clean run passes; each kind of damage is found and counted, and fails
// the result: the checker can fail.
func TestCheckFindsEachFailure(t *testing.T) {
	sent, stored := sentAndStored(10)
	if r := Check(sent, stored); r.Failed() || r.Acked != 10 || r.Stored != 10 {
		t.Fatalf("clean run: %+v", r)
	}
	for _, c := range []struct {
		name   string
		damage func(sent []Send, stored []Stored) ([]Send, []Stored)
		field  func(r *Result) int
	}{
		{"lost", func(s []Send, st []Stored) ([]Send, []Stored) { return s, append(st[:3:3], st[4:]...) }, func(r *Result) int { return r.Lost }},
		{"duplicated", func(s []Send, st []Stored) ([]Send, []Stored) {
			return s, append(st, Stored{ID: "m2", Key: "k", Queue: 0, Offset: 10})
		}, func(r *Result) int { return r.Duplicated }},
		{"unexpected", func(s []Send, st []Stored) ([]Send, []Stored) {
			return s, append(st, Stored{ID: "ghost", Key: "k", Queue: 0, Offset: 10})
		}, func(r *Result) int { return r.Unexpected }},
		{"out of order", func(s []Send, st []Stored) ([]Send, []Stored) {
			st[4].ID, st[5].ID = st[5].ID, st[4].ID
			s[4].Offset, s[5].Offset = 5, 4
			return s, st
		}, func(r *Result) int { return r.OutOfOrder }},
		{"wrong offset", func(s []Send, st []Stored) ([]Send, []Stored) { s[7].Offset = 99; return s, st }, func(r *Result) int { return r.WrongOffset }},
		{"refused but stored", func(s []Send, st []Stored) ([]Send, []Stored) { s[1].Outcome = OutcomeRefused; return s, st }, func(r *Result) int { return r.RefusedStored }},
	} {
		s, st := sentAndStored(10)
		s, st = c.damage(s, st)
		r := Check(s, st)
		if c.field(r) != 1 || !r.Failed() || len(r.Examples) == 0 {
			t.Errorf("%s: found %d, failed %v, examples %v; want 1, true, some", c.name, c.field(r), r.Failed(), r.Examples)
		}
	}
}

// Unknown and weak outcomes are reported, stored or not, and fail nothing:
// the producer was not promised anything for them.
func TestCheckUnknownAndWeak(t *testing.T) {
	sent, stored := sentAndStored(6)
	sent[1].Outcome = OutcomeUnknown // stored anyway
	sent[2].Outcome = OutcomeUnknown
	stored = append(stored[:2], stored[3:]...) // m2 not stored
	sent[3].Outcome = OutcomeWeak
	r := Check(sent, stored)
	if r.Failed() || r.Unknown != 2 || r.UnknownStored != 1 || r.Weak != 1 || r.WeakStored != 1 || r.Acked != 3 {
		t.Fatalf("%+v", r)
	}
}

// Under flush async, a loss is permitted only for messages acknowledged
// within the flush interval (plus slack) before a power loss: older ones, or
// ones with no power loss after them, are not.
func TestPermittedLoss(t *testing.T) {
	start := time.Unix(1000, 0)
	rep := &Report{FlushInterval: 500 * time.Millisecond, Faults: []FaultRecord{{Fault: Fault{Kind: "kill", Target: "broker"}, Injected: 1 * time.Second, Healed: 1500 * time.Millisecond}, {Fault: Fault{Kind: "power-loss", Target: "broker"}, Injected: 3 * time.Second, Healed: 4 * time.Second}}}
	at := func(id string, acked time.Duration) Send {
		return Send{ID: id, Start: start.Add(acked - time.Millisecond), Latency: time.Millisecond}
	}
	sends := []Send{at("recent", 2800*time.Millisecond), at("edge", 2300*time.Millisecond), at("old", 2*time.Second),
		at("during", 3010*time.Millisecond), at("after", 4500*time.Millisecond)}
	lost := map[string]bool{"recent": true, "edge": true, "old": true, "during": true, "after": true}
	n, window, other := permittedLoss(rep, sends, lost, start)
	if n != 3 || window != 700*time.Millisecond || len(other) != 2 || other[0] != "old" || other[1] != "after" {
		t.Fatalf("permitted %d, window %s, not permitted %v; want 3, 700ms, [old after]", n, window, other)
	}
}

// CheckCopies counts from copies alone, and still fails what it can see.
func TestCheckCopies(t *testing.T) {
	sent := []Send{{ID: "a", Outcome: OutcomeOK}, {ID: "b", Outcome: OutcomeOK}, {ID: "c", Outcome: OutcomeUnknown}}
	r := CheckCopies(sent, map[string]int{"a": 2, "c": 1, "x": 1})
	if r.Acked != 2 || r.Lost != 1 || r.Duplicated != 1 || r.Unexpected != 1 || r.UnknownStored != 1 || r.Stored != 4 || r.WrongOffset != 0 || r.OutOfOrder != 0 {
		t.Fatalf("%+v", r)
	}
}
