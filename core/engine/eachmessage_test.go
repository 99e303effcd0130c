package engine_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/verify"
)

// eachMessage checks a run (started with engine.Options.Record) message by
// message, with core/verify's checker, one definition of lost, duplicated
// and unexpected: for each consumer group, every message its topic's
// generators got acknowledged OK was consumed, at the queue and offset its
// ack named (lost, wrong offset); no id was consumed at two positions
// (stored twice); nothing was consumed that no generator sent (unexpected);
// and a group of orderly flows first delivered each queue's messages in
// offset order. Redeliveries of a position are at-least-once and allowed.
// It returns what is wrong, one line per broken promise, or nothing.
func eachMessage(s *engine.Summary) []string {
	var problems []string
	byTopic := map[string][]verify.Send{}
	for _, g := range s.Generators {
		for _, m := range g.Messages {
			if m.ID == "" {
				continue // failed before it had an id: nothing to look for
			}
			// The generators send without keys and promise no order
			// of storage (a retried send is stored after later ones):
			// each message its own key, so Check orders nothing.
			snd := verify.Send{ID: m.ID, Key: m.ID, Seq: int64(m.Seq), Queue: m.Queue, Offset: m.Offset, Status: m.Status, Err: m.Err}
			switch {
			case m.Err != "":
				snd.Outcome = verify.OutcomeUnknown
			case g.Mode == "oneway":
				snd.Outcome = verify.OutcomeOneway
			case m.Status == ferryv1.Status_STATUS_OK:
				snd.Outcome = verify.OutcomeOK
			default:
				snd.Outcome = verify.OutcomeWeak
			}
			byTopic[g.Topic] = append(byTopic[g.Topic], snd)
		}
		if len(g.Messages) != g.Sent+g.Errors {
			problems = append(problems, fmt.Sprintf("generator %s recorded %d sends, its summary counts %d", g.Name, len(g.Messages), g.Sent+g.Errors))
		}
	}
	type group struct {
		topic   string
		orderly bool
		flows   []string
		stored  []verify.Stored
		order   map[int32][]int64 // first deliveries' offsets per queue, as delivered
	}
	groups := map[string]*group{}
	var names []string
	for _, f := range s.Flows {
		g := groups[f.Group]
		if g == nil {
			g = &group{topic: f.Topic, orderly: true, order: map[int32][]int64{}}
			groups[f.Group] = g
			names = append(names, f.Group)
		}
		g.flows = append(g.flows, f.Name)
		g.orderly = g.orderly && f.Orderly
		for _, c := range f.Consumed {
			g.stored = append(g.stored, verify.Stored{ID: c.ID, Queue: c.Queue, Offset: c.Offset})
			g.order[c.Queue] = append(g.order[c.Queue], c.Offset)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		g := groups[name]
		r := verify.Check(byTopic[g.topic], g.stored)
		if r.Acked == 0 {
			problems = append(problems, fmt.Sprintf("group %s: no message of topic %s was acknowledged OK: nothing to check", name, g.topic))
		}
		for _, c := range []struct {
			kind string
			n    int
		}{
			{"lost", r.Lost}, {"duplicated", r.Duplicated}, {"unexpected", r.Unexpected},
			{"wrong_offset", r.WrongOffset}, {"refused_stored", r.RefusedStored}, {"out_of_order", r.OutOfOrder},
		} {
			if c.n > 0 {
				problems = append(problems, fmt.Sprintf("group %s (flows %s): %d %s, e.g. %s", name, strings.Join(g.flows, ","), c.n, c.kind, strings.Join(r.Examples[c.kind], "; ")))
			}
		}
		if !g.orderly {
			continue
		}
		for q, offs := range g.order {
			for i := 1; i < len(offs); i++ {
				if offs[i] < offs[i-1] {
					problems = append(problems, fmt.Sprintf("group %s (orderly): queue %d's offset %d first delivered after offset %d", name, q, offs[i], offs[i-1]))
					break
				}
			}
		}
	}
	return problems
}

// checkEachMessage fails t with everything eachMessage finds.
func checkEachMessage(t *testing.T, s *engine.Summary) {
	t.Helper()
	for _, p := range eachMessage(s) {
		t.Error(p)
	}
}

// The negative controls of eachMessage, on a real run's record: each way of
// breaking a promise, made by hand in the record, is found and named.
func TestEachMessageCheckFails(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 2000)
	cfg.Flows[0].Orderly = true
	s := runPipeline(t, start(t, cfg), 60*time.Second)
	if p := eachMessage(s); len(p) != 0 {
		t.Fatalf("the unchanged run fails the check: %v", p)
	}
	consumed := s.Flows[0].Consumed
	// Two first deliveries of one queue, for the order control.
	var a, b = -1, -1
	for i := range consumed {
		if a < 0 {
			a = i
		} else if consumed[i].Queue == consumed[a].Queue {
			b = i
			break
		}
	}
	if b < 0 {
		t.Fatal("no queue was delivered twice")
	}
	for _, c := range []struct {
		name, want string
		change     func(cs []engine.ConsumedMessage) []engine.ConsumedMessage
	}{
		{"one consumed id dropped", "1 lost", func(cs []engine.ConsumedMessage) []engine.ConsumedMessage {
			return append(cs[:7:7], cs[8:]...)
		}},
		{"one id consumed at a second position", "1 duplicated", func(cs []engine.ConsumedMessage) []engine.ConsumedMessage {
			return append(cs, engine.ConsumedMessage{ID: cs[3].ID, Queue: cs[3].Queue, Offset: 1 << 40})
		}},
		{"an id nobody sent", "1 unexpected", func(cs []engine.ConsumedMessage) []engine.ConsumedMessage {
			return append(cs, engine.ConsumedMessage{ID: "never-sent", Queue: 0, Offset: 1 << 40})
		}},
		{"one message where its ack did not say", "1 wrong_offset", func(cs []engine.ConsumedMessage) []engine.ConsumedMessage {
			cs[5].Offset += 1 << 40
			return cs
		}},
		{"a queue delivered out of order", "first delivered after offset", func(cs []engine.ConsumedMessage) []engine.ConsumedMessage {
			cs[a], cs[b] = cs[b], cs[a]
			return cs
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			changed := *s
			changed.Flows = []engine.FlowResult{s.Flows[0]}
			changed.Flows[0].Consumed = c.change(append([]engine.ConsumedMessage(nil), consumed...))
			p := eachMessage(&changed)
			if len(p) == 0 || !strings.Contains(strings.Join(p, "\n"), c.want) {
				t.Fatalf("the check found %q, want a line with %q", p, c.want)
			}
			t.Logf("found: %s", p)
		})
	}
	t.Run("a lost send's record", func(t *testing.T) {
		changed := *s
		changed.Generators = []engine.GeneratorResult{s.Generators[0]}
		changed.Generators[0].Messages = s.Generators[0].Messages[1:]
		if p := eachMessage(&changed); len(p) == 0 || !strings.Contains(strings.Join(p, "\n"), "recorded 1999 sends") {
			t.Fatalf("the check found %q, want the missing record named", p)
		}
	})
}
