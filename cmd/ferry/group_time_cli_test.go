package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// `ferry group reset-offsets --to-datetime` against a real node (file
// store, fsync on every append): a first batch, a time noted, a second
// batch; the group, reset to that time, next consumes exactly the second
// batch, from its first message in each queue on. A dry run prints those
// offsets and changes nothing; a time before everything is the earliest
// offsets, one after everything the latest; --by-duration counts back from
// now; bad times get one clear error each.
func TestGroupResetToDatetime(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := topicNode(t, dir, addr, "[{name: orders, queues: 2}]")
	node, out := startTopicNode(t, yaml, addr)
	t.Cleanup(func() { stopTopicNode(node) })
	ferry := func(args ...string) (string, string, int) {
		return runFerry(t, nil, append(args, "--broker", addr)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("%v\nnode:\n%s", err, out)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{})
	send := func(prefix string) map[int32]int64 {
		t.Helper()
		first := map[int32]int64{}
		for i := range 20 {
			r, err := p.SendSync(ctx, client.Message{ID: fmt.Sprintf("%s%02d", prefix, i), Topic: "orders", Body: []byte(prefix)})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := first[r.Queue]; !ok {
				first[r.Queue] = r.Offset
			}
		}
		if len(first) != 2 {
			t.Fatalf("batch %s went to queues %v: the test needs both", prefix, first)
		}
		return first
	}
	send("a")
	// Every message of the first batch was acknowledged, so stored, before
	// mark (the node runs on this machine's clock); the second is stored
	// after it.
	mark := time.Now()
	for !time.Now().After(mark) {
	}
	second := send("b")
	ends := map[int32]int64{} // each queue's end, once the group committed it

	// The group consumes everything and leaves.
	all := startGroupConsumer(t, c, "orders", "first")
	waitUntil(t, 90*time.Second, "the group consumed both batches", func() bool { return all.count() >= 40 })
	all.stop()
	describe := func() groupJSON {
		t.Helper()
		stdout, stderr, code := ferry("group", "describe", "billing", "--json")
		var g groupJSON
		if code != 0 || json.Unmarshal([]byte(stdout), &g) != nil {
			t.Fatalf("describe: exit %d\n%s%s", code, stdout, stderr)
		}
		return g
	}
	waitUntil(t, 60*time.Second, "the member left, everything committed", func() bool {
		g := describe()
		if len(g.Members) != 0 || len(g.Queues) != 2 {
			return false
		}
		for _, q := range g.Queues {
			if q.Committed != q.End {
				return false
			}
			ends[q.Queue] = q.End
		}
		return true
	})

	reset := func(args ...string) resetJSON {
		t.Helper()
		stdout, stderr, code := ferry(append([]string{"group", "reset-offsets", "billing", "--topic", "orders", "--json"}, args...)...)
		var r resetJSON
		if code != 0 || json.Unmarshal([]byte(stdout), &r) != nil || len(r.Queues) != 2 {
			t.Fatalf("reset-offsets %v: exit %d\n%s%s", args, code, stdout, stderr)
		}
		return r
	}
	at := func(r resetJSON) map[int32]int64 {
		m := map[int32]int64{}
		for _, q := range r.Queues {
			m[q.Queue] = q.Committed
		}
		return m
	}
	when := mark.UTC().Format(time.RFC3339Nano)
	if got := at(reset("--to-datetime", when, "--dry-run")); fmt.Sprint(got) != fmt.Sprint(second) {
		t.Fatalf("dry run to %s: %v, want the second batch's first offsets %v", when, got, second)
	}
	stdout, stderr, code := ferry("group", "reset-offsets", "billing", "--topic", "orders", "--to-datetime", when, "--dry-run")
	if code != 0 || !strings.Contains(stdout, "would reset (dry run, nothing changed) 2 queue(s) of orders to the first messages stored at or after "+when) ||
		!regexpLine(stdout, fmt.Sprintf(`^orders\s+0\s+%d\s+%d$`, ends[0], second[0])) {
		t.Errorf("dry run table: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, q := range describe().Queues {
		if q.Committed != ends[q.Queue] {
			t.Errorf("after a dry run queue %d is at %d, want %d", q.Queue, q.Committed, ends[q.Queue])
		}
	}

	// A time before everything: the earliest offsets; --by-duration an
	// hour back, the same; after everything: the latest.
	if got := at(reset("--to-datetime", "2001-01-01T00:00:00Z")); got[0] != 0 || got[1] != 0 {
		t.Errorf("reset to 2001: %v, want 0 and 0", got)
	}
	if got := at(reset("--by-duration", "PT1H")); got[0] != 0 || got[1] != 0 {
		t.Errorf("reset by PT1H: %v, want 0 and 0", got)
	}
	if got := at(reset("--to-datetime", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))); got[0] != ends[0] || got[1] != ends[1] {
		t.Errorf("reset to an hour from now: %v, want the ends %v", got, ends)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--to-datetime", "2026-12-06 10:00"}, `want RFC 3339 with a zone`},
		{[]string{"--by-duration", "10m"}, `a positive duration is in the future`},
		{[]string{"--by-duration", "PT"}, `want an ISO 8601 duration`},
		{[]string{"--by-duration", "-10m", "--to-earliest"}, `exactly one of`},
	} {
		stdout, stderr, code := ferry(append([]string{"group", "reset-offsets", "billing", "--topic", "orders"}, c.args...)...)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("reset-offsets %v: exit %d, stderr %q; want one line with %q (stdout %q)", c.args, code, stderr, c.want, stdout)
		}
	}

	// Reset to the mark: the next consumer starts exactly at the second
	// batch and gets it all, nothing of the first.
	if got := at(reset("--to-datetime", when)); fmt.Sprint(got) != fmt.Sprint(second) {
		t.Fatalf("reset to %s: %v, want %v", when, got, second)
	}
	next := startGroupConsumer(t, c, "orders", "second")
	waitUntil(t, 90*time.Second, "the new member consumed the second batch", func() bool { return next.count() >= 20 })
	waitUntil(t, 60*time.Second, "the new member committed", func() bool {
		for _, q := range describe().Queues {
			if q.Committed != ends[q.Queue] {
				return false
			}
		}
		return true
	})
	next.stop()
	next.mu.Lock()
	defer next.mu.Unlock()
	lowest := map[int32]int64{0: -1, 1: -1}
	for id, where := range next.seen {
		var q int32
		var off int64
		fmt.Sscanf(where, "%d/%d", &q, &off)
		if !strings.HasPrefix(id, "b") {
			t.Errorf("message %s at %s of the first batch delivered after the reset", id, where)
		}
		if lowest[q] < 0 || off < lowest[q] {
			lowest[q] = off
		}
	}
	if len(next.seen) != 20 || fmt.Sprint(lowest) != fmt.Sprint(second) {
		t.Errorf("after the reset: %d messages, first offsets %v; want 20 from %v", len(next.seen), lowest, second)
	}
}

func TestParseAgo(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"PT10M", 10 * time.Minute, ""},
		{"-PT10M", 10 * time.Minute, ""},
		{"P1DT2H", 26 * time.Hour, ""},
		{"PT1H30M15.5S", time.Hour + 30*time.Minute + 15500*time.Millisecond, ""},
		{"P2D", 48 * time.Hour, ""},
		{"-10m", 10 * time.Minute, ""},
		{"-1h30m", 90 * time.Minute, ""},
		{"10m", 0, "in the future"},
		{"P", 0, "ISO 8601"},
		{"PT", 0, "ISO 8601"},
		{"P1H", 0, "ISO 8601"},
		{"PT1D", 0, "ISO 8601"},
		{"PT1M1M", 0, "ISO 8601"},
		{"P1W", 0, "ISO 8601"},
		{"PT1.5M", 0, "ISO 8601"},
		{"yesterday", 0, "negative Go duration"},
	} {
		got, err := parseAgo(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseAgo(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseAgo(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
