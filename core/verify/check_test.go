package verify

import (
	"fmt"
	"strings"
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

// The verdict under flush: async at a power loss: a loss of what was
// acknowledged within flush_interval (+ slack) before the cut is reported
// (lost at power loss) and passes; a loss of anything older exceeds what
// flush async promises and fails the run, naming the fault it followed.
func TestVerdictOnFlushAsyncPowerLoss(t *testing.T) {
	start := time.Unix(0, 0)
	// m0 acked at 1s (long before the cut at 3s), m1 at 2.9s (within the
	// 500ms interval + slack), m2 at 4.5s (after the restart).
	run := func(lost ...string) *Report {
		gone := map[string]bool{}
		for _, id := range lost {
			gone[id] = true
		}
		var sends []Send
		var stored []Stored
		for i, at := range []time.Duration{time.Second, 2900 * time.Millisecond, 4500 * time.Millisecond} {
			id := fmt.Sprintf("m%d", i)
			sends = append(sends, Send{ID: id, Key: "k", Seq: int64(i), Start: start.Add(at - time.Millisecond), Latency: time.Millisecond, Outcome: OutcomeOK, Queue: 0, Offset: int64(len(stored))})
			if !gone[id] {
				stored = append(stored, Stored{ID: id, Key: "k", Queue: 0, Offset: int64(len(stored))})
			}
		}
		rep := &Report{Flush: "async", FlushInterval: 500 * time.Millisecond, Mode: "sync", Duration: 5 * time.Second,
			Faults: []FaultRecord{{Fault: Fault{Kind: "power-loss", Target: "broker", At: 3 * time.Second}, Injected: 3 * time.Second, Healed: 4 * time.Second}}}
		rep.Result = Check(sends, stored)
		summarize(rep, sends, start)
		return rep
	}
	if rep := run(); rep.Verdict != "pass" || rep.LostAtPowerLoss != 0 {
		t.Fatalf("nothing lost: verdict %s %v, lost at power loss %d", rep.Verdict, rep.Reasons, rep.LostAtPowerLoss)
	}
	rep := run("m1")
	if rep.Verdict != "pass" || rep.LostAtPowerLoss != 1 || rep.LossWindow <= 0 || rep.LossWindow > 500*time.Millisecond+PowerLossSlack {
		t.Fatalf("m1 lost within the window: verdict %s %v, lost at power loss %d, window %s; want pass, 1 reported", rep.Verdict, rep.Reasons, rep.LostAtPowerLoss, rep.LossWindow)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "1 lost at power loss") {
		t.Fatalf("the table does not report the permitted loss:\n%s", table.String())
	}
	// The controls: an older loss, and a loss of what the restarted
	// node acknowledged, fail.
	for _, id := range []string{"m0", "m2"} {
		rep := run(id)
		why := strings.Join(rep.Reasons, "; ")
		if rep.Verdict != "fail" || !strings.Contains(why, "flush async may lose at a power loss only what was acknowledged within flush_interval 500ms") {
			t.Fatalf("%s lost: verdict %s (%s), want a failure beyond what flush async permits", id, rep.Verdict, why)
		}
		if id == "m2" && !strings.Contains(why, "acknowledged after power-loss") {
			t.Errorf("%s lost: the reason does not name the fault it followed: %s", id, why)
		}
		if id == "m0" && !strings.Contains(why, "m0, acknowledged 2s before power-loss@3s") {
			t.Errorf("%s lost: the reason does not name the power loss that lost it: %s", id, why)
		}
	}
}
