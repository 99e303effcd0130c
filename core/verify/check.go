// Package verify drives a pipeline's node under faults and checks what it
// promised: ferry verify (cmd/ferry), docs/verify.md.
//
// A run sends unique, checkable messages, records every send's outcome,
// injects faults (kill -9 of the node or of one of its plugin processes) on a
// schedule, heals, reads back everything the topic holds through the Broker
// API, and checks (Check): acknowledged and lost, stored twice, stored but
// never sent, out of order per key; what became of sends answered with a
// status weaker than OK and of sends whose outcome is unknown.
package verify

import (
	"fmt"
	"sort"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Outcome is how a send ended, as the producer saw it.
type Outcome int

const (
	// OutcomeOK: acknowledged with STATUS_OK.
	OutcomeOK Outcome = iota
	// OutcomeWeak: acknowledged with a status weaker than OK
	// (FLUSH_TIMEOUT, REPLICA_TIMEOUT, REPLICA_NOT_AVAILABLE).
	OutcomeWeak
	// OutcomeUnknown: the send failed (timed out, the broker was gone); it
	// may or may not have been stored.
	OutcomeUnknown
	// OutcomeRefused: the broker said it stored nothing (an error it
	// reported, such as invalid argument).
	OutcomeRefused
	// OutcomeOneway: sent oneway, so never answered: it promises nothing.
	OutcomeOneway
)

func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeWeak:
		return "weak"
	case OutcomeUnknown:
		return "unknown"
	case OutcomeRefused:
		return "refused"
	case OutcomeOneway:
		return "oneway"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Send is one message a producer sent and what it was told.
type Send struct {
	ID  string
	Key string
	// Seq orders a key's sends: a key's producer sends Seq n+1 only after
	// send n has ended (sync sends), so n must precede n+1 in its queue
	// when both were acknowledged.
	Seq     int64
	Start   time.Time
	Latency time.Duration
	Outcome Outcome
	Status  ferryv1.Status // the status of an acknowledged send
	Err     string         // the error of a failed one
	Queue   int32          // where the ack says it went; -1 if none
	Offset  int64
}

// Stored is one message read back from the topic. A reader that knows only
// ids (CheckCopies) gives Queue and Offset -1: then neither offsets nor
// order are checked.
type Stored struct {
	ID     string
	Key    string
	Queue  int32
	Offset int64
}

// Result is what Check found. Lost, Duplicated, Unexpected and OutOfOrder
// are failures whatever the pipeline's settings: no fault verify injects
// (process kills) may lose an acknowledged message on any flush or
// replication setting, since the kernel keeps what a killed process wrote.
type Result struct {
	Sent       int `json:"sent"`
	Acked      int `json:"acked_ok"`
	Weak       int `json:"acked_weak"`
	WeakStored int `json:"acked_weak_stored"`
	Unknown    int `json:"unknown"`
	// UnknownStored of the Unknown sends were stored anyway.
	UnknownStored int `json:"unknown_stored"`
	Refused       int `json:"refused"`
	// Oneway sends: never answered; OnewayStored of them are stored.
	Oneway       int `json:"oneway"`
	OnewayStored int `json:"oneway_stored"`
	// RefusedStored must be 0: the broker said it stored nothing.
	RefusedStored int `json:"refused_stored"`
	Stored        int `json:"stored"`
	Lost          int `json:"lost"`
	Duplicated    int `json:"duplicated"`
	Unexpected    int `json:"unexpected"`
	OutOfOrder    int `json:"out_of_order"`
	// WrongOffset counts acknowledged sends stored at another offset than
	// their ack said.
	WrongOffset int `json:"wrong_offset"`
	// LostIDs are the lost messages' ids.
	LostIDs []string `json:"lost_ids,omitempty"`
	// Examples name a few messages of each failure, for the report.
	Examples map[string][]string `json:"examples,omitempty"`
}

// Failed says whether the result breaks what any pipeline promises.
func (r *Result) Failed() bool {
	return r.Lost > 0 || r.Duplicated > 0 || r.Unexpected > 0 || r.OutOfOrder > 0 || r.RefusedStored > 0 || r.WrongOffset > 0
}

const maxExamples = 5

func (r *Result) example(kind, what string) {
	if r.Examples == nil {
		r.Examples = map[string][]string{}
	}
	if len(r.Examples[kind]) < maxExamples {
		r.Examples[kind] = append(r.Examples[kind], what)
	}
}

// Check compares what was sent with what is stored. stored holds every
// message of the run read back from the topic; messages of other writers
// (the pipeline's own generators) are the caller's to leave out.
func Check(sent []Send, stored []Stored) *Result {
	r := &Result{Sent: len(sent), Stored: len(stored)}
	bySent := make(map[string]*Send, len(sent))
	for i := range sent {
		bySent[sent[i].ID] = &sent[i]
	}
	copies := make(map[string][]Stored, len(stored))
	for _, m := range stored {
		copies[m.ID] = append(copies[m.ID], m)
		if bySent[m.ID] == nil && len(copies[m.ID]) == 1 {
			r.Unexpected++
			r.example("unexpected", fmt.Sprintf("%s at %d/%d", m.ID, m.Queue, m.Offset))
		}
	}
	for id, cs := range copies {
		if len(cs) > 1 {
			r.Duplicated += len(cs) - 1
			r.example("duplicated", fmt.Sprintf("%s stored %d times", id, len(cs)))
		}
	}
	for i := range sent {
		s := &sent[i]
		cs := copies[s.ID]
		switch s.Outcome {
		case OutcomeOK:
			r.Acked++
			if len(cs) == 0 {
				r.Lost++
				r.LostIDs = append(r.LostIDs, s.ID)
				r.example("lost", fmt.Sprintf("%s (acked at %d/%d)", s.ID, s.Queue, s.Offset))
			} else if s.Offset >= 0 && cs[0].Offset >= 0 && (cs[0].Queue != s.Queue || cs[0].Offset != s.Offset) {
				r.WrongOffset++
				r.example("wrong_offset", fmt.Sprintf("%s acked at %d/%d, stored at %d/%d", s.ID, s.Queue, s.Offset, cs[0].Queue, cs[0].Offset))
			}
		case OutcomeWeak:
			r.Weak++
			if len(cs) > 0 {
				r.WeakStored++
			}
		case OutcomeUnknown:
			r.Unknown++
			if len(cs) > 0 {
				r.UnknownStored++
			}
		case OutcomeOneway:
			r.Oneway++
			if len(cs) > 0 {
				r.OnewayStored++
			}
		case OutcomeRefused:
			r.Refused++
			if len(cs) > 0 {
				r.RefusedStored++
				r.example("refused_stored", fmt.Sprintf("%s refused (%s) but stored at %d/%d", s.ID, s.Err, cs[0].Queue, cs[0].Offset))
			}
		}
	}
	r.OutOfOrder = outOfOrder(r, bySent, stored)
	return r
}

// outOfOrder counts the pairs of a key's acknowledged messages stored in the
// other order than they were sent: walking each queue in offset order, a
// key's acknowledged sequence numbers must rise.
func outOfOrder(r *Result, bySent map[string]*Send, stored []Stored) int {
	byQueue := map[int32][]Stored{}
	for _, m := range stored {
		byQueue[m.Queue] = append(byQueue[m.Queue], m)
	}
	n := 0
	for _, ms := range byQueue {
		sort.Slice(ms, func(i, j int) bool { return ms[i].Offset < ms[j].Offset })
		last := map[string]int64{}
		seen := map[string]bool{}
		for _, m := range ms {
			s := bySent[m.ID]
			if s == nil || s.Outcome != OutcomeOK || seen[m.ID] || m.Offset < 0 {
				continue
			}
			seen[m.ID] = true
			if prev, ok := last[s.Key]; ok && s.Seq < prev {
				n++
				r.example("out_of_order", fmt.Sprintf("key %s: seq %d stored after seq %d (queue %d offset %d)", s.Key, s.Seq, prev, m.Queue, m.Offset))
				continue
			}
			last[s.Key] = s.Seq
		}
	}
	return n
}

// CheckCopies is Check for a reader that knows only how many copies of each
// id a log holds: the offset and order checks are left out.
func CheckCopies(sent []Send, copies map[string]int) *Result {
	var stored []Stored
	for id, n := range copies {
		for range n {
			stored = append(stored, Stored{ID: id, Queue: -1, Offset: -1})
		}
	}
	for i := range sent {
		sent[i].Queue, sent[i].Offset = -1, -1
	}
	return Check(sent, stored)
}
