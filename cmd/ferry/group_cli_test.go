package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// groupConsumer is a consumer in group billing that records what
// it was delivered, queue/offset by message id.
type groupConsumer struct {
	mu   sync.Mutex
	seen map[string]string // id → "queue/offset"
	stop func()
}

func startGroupConsumer(t *testing.T, c *client.Client, topic, member string) *groupConsumer {
	t.Helper()
	gc := &groupConsumer{seen: map[string]string{}}
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: topic, Group: "billing", Member: member, HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, err := cons.Launch(ctx, func(_ context.Context, d *client.Delivery) error {
		gc.mu.Lock()
		gc.seen[d.ID] = fmt.Sprintf("%d/%d", d.Queue, d.Offset)
		gc.mu.Unlock()
		return nil
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var once sync.Once
	gc.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(gc.stop)
	return gc
}

func (gc *groupConsumer) count() int {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return len(gc.seen)
}

// `ferry group` against a real node (file store and grpc transport in their
// own processes): a group that consumed is listed and described (members,
// the queues each holds, committed offsets and lag); reset-offsets and
// delete are refused while it has a live member, and bad requests get one
// clear error each; once its member left, a reset moves it, and a consumer
// that then joins starts exactly at the new offsets; after a restart the
// node still lists it (from its offsets in the store); delete removes its
// offsets, for good (across a restart).
func TestGroupCommandsOnALiveNode(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := topicNode(t, dir, addr, "[{name: orders, queues: 2}]")
	node, out := startTopicNode(t, yaml, addr)
	t.Cleanup(func() {
		if node.ProcessState == nil {
			stopTopicNode(node)
		}
	})
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
	for i := range 40 {
		if _, err := p.SendSync(ctx, client.Message{ID: fmt.Sprintf("m%d", i), Topic: "orders", Body: []byte("order")}); err != nil {
			t.Fatal(err)
		}
	}
	ends := map[int32]int64{}
	offs, err := c.GetOffsets(ctx, "", []*ferryv1.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		ends[o.Queue] = o.End
	}
	if ends[0] < 5 || ends[1] < 1 {
		t.Fatalf("queue ends %v: the test needs messages in both queues", ends)
	}

	first := startGroupConsumer(t, c, "orders", "first")
	describe := func() groupJSON {
		t.Helper()
		stdout, stderr, code := ferry("group", "describe", "billing", "--json")
		var g groupJSON
		if code != 0 || json.Unmarshal([]byte(stdout), &g) != nil {
			t.Fatalf("describe: exit %d\n%s%s", code, stdout, stderr)
		}
		return g
	}
	var g groupJSON
	settled := false
	defer func() {
		if !settled {
			t.Logf("last description: %+v (consumed %d)", g, first.count())
		}
	}()
	waitUntil(t, 90*time.Second, "the group consumed and committed everything, and its member reported its queues", func() bool {
		if first.count() < 40 {
			return false
		}
		g = describe()
		lag := int64(0)
		for _, q := range g.Queues {
			lag += q.Lag
		}
		return len(g.Queues) == 2 && lag == 0 && len(g.Members) == 1 && slices.Contains(g.Members[0].Queues, "orders/1")
	})
	// The member holds both queues of orders, and those of the group's
	// retry topic (%RETRY%billing/0..17) that it consumes too.
	settled = true
	if m := g.Members[0]; m.ID != "first" || len(m.Queues) != 2+18 || !slices.Equal(m.Queues[18:], []string{"orders/0", "orders/1"}) ||
		!slices.Equal(m.Topics, []string{"orders", "%RETRY%billing"}) || time.Since(m.LastHeartbeat) > time.Minute {
		t.Errorf("member: %+v", m)
	}
	for _, q := range g.Queues {
		if q.Committed != ends[q.Queue] || q.End != ends[q.Queue] || q.Member != "first" {
			t.Errorf("queue %+v: want committed = end = %d, held by first", q, ends[q.Queue])
		}
	}
	if len(g.Internal) != 2 || g.Internal[0].Topic != "%RETRY%billing" || g.Internal[1].Topic != "%DLQ%billing" {
		t.Errorf("internal topics: %+v", g.Internal)
	}
	stdout, stderr, code := ferry("group", "list")
	if code != 0 || !strings.Contains(stdout, "GROUP") || !regexpLine(stdout, `^billing\s+1\s+0\s+orders$`) {
		t.Errorf("group list: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, _, _ = ferry("group", "describe", "billing")
	for _, want := range []string{"group billing: 1 live member(s), lag 0", "first", "orders/0,orders/1 (+18 retry queues)", "%DLQ%billing 0 message(s)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("group describe lacks %q:\n%s", want, stdout)
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"group", "reset-offsets", "billing", "--topic", "orders", "--to-earliest"}, `group "billing" has 1 live members (first); stop them before you reset its offsets, or force the reset`},
		{[]string{"group", "delete", "billing"}, `group "billing" has 1 live members (first); stop them before you delete it`},
		{[]string{"group", "describe", "nobody"}, `unknown group "nobody"`},
		{[]string{"group", "delete", "nobody"}, `unknown group "nobody"`},
		{[]string{"group", "reset-offsets", "nobody", "--topic", "orders", "--to-latest"}, `unknown group "nobody"`},
		{[]string{"group", "reset-offsets", "billing", "--topic", "nope", "--to-latest", "--force"}, `unknown topic "nope"`},
		{[]string{"group", "reset-offsets", "billing", "--topic", "%RETRY%billing", "--to-latest", "--force"}, `internal topic`},
		{[]string{"group", "reset-offsets", "billing", "--topic", "orders", "--to-offset", "100000", "--force"}, `offset 100000 is outside queue orders/0`},
		{[]string{"group", "reset-offsets", "billing", "--topic", "orders", "--to-latest", "--queues", "7", "--force"}, `topic "orders" has queues 0..1, got queue 7`},
		{[]string{"group", "reset-offsets", "billing", "--topic", "orders"}, `exactly one of --to-earliest`},
	} {
		stdout, stderr, code := ferry(c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("ferry %v: exit %d, stderr %q; want exit 1 and one line with %q (stdout %q)", c.args, code, stderr, c.want, stdout)
		}
	}
	// A dry run changes nothing.
	if stdout, stderr, code := ferry("group", "reset-offsets", "billing", "--topic", "orders", "--to-earliest", "--force", "--dry-run"); code != 0 || !strings.Contains(stdout, "dry run") {
		t.Errorf("dry run: exit %d\n%s%s", code, stdout, stderr)
	}
	if g := describe(); g.Queues[0].Committed != ends[0] {
		t.Errorf("after a dry run the group is at %d, want %d", g.Queues[0].Committed, ends[0])
	}

	first.stop()
	waitUntil(t, 60*time.Second, "the member left", func() bool { return len(describe().Members) == 0 })
	// Queue 0 from offset 3 on, queue 1 from its start: a consumer that
	// joins gets exactly those messages.
	stdout, stderr, code = ferry("group", "reset-offsets", "billing", "--topic", "orders", "--to-offset", "3", "--queues", "0", "--json")
	var r resetJSON
	if code != 0 || json.Unmarshal([]byte(stdout), &r) != nil || len(r.Queues) != 1 || r.Queues[0].Previous != ends[0] || r.Queues[0].Committed != 3 {
		t.Fatalf("reset to offset 3: exit %d\n%s%s", code, stdout, stderr)
	}
	if stdout, stderr, code = ferry("group", "reset-offsets", "billing", "--topic", "orders", "--to-earliest", "--queues", "1"); code != 0 || !regexpLine(stdout, fmt.Sprintf(`^orders\s+1\s+%d\s+0$`, ends[1])) {
		t.Fatalf("reset to earliest: exit %d\n%s%s", code, stdout, stderr)
	}
	want := int(ends[0]-3) + int(ends[1])
	second := startGroupConsumer(t, c, "orders", "second")
	waitUntil(t, 90*time.Second, fmt.Sprintf("the new member consumed the %d messages from the reset offsets", want), func() bool { return second.count() >= want })
	second.mu.Lock()
	for id, at := range second.seen {
		var q int32
		var off int64
		fmt.Sscanf(at, "%d/%d", &q, &off)
		if q == 0 && off < 3 {
			t.Errorf("message %s at %s delivered: below the reset offset 3", id, at)
		}
	}
	got := len(second.seen)
	second.mu.Unlock()
	waitUntil(t, 60*time.Second, "the new member committed", func() bool {
		g := describe()
		return len(g.Queues) == 2 && g.Queues[0].Committed == ends[0] && g.Queues[1].Committed == ends[1]
	})
	if n := second.count(); n != want || got != want {
		t.Errorf("the new member consumed %d messages, want %d", n, want)
	}
	second.stop()
	waitUntil(t, 60*time.Second, "the member left", func() bool { return len(describe().Members) == 0 })

	// After a restart the node knows the group from its offsets in the
	// store alone (the pipeline does not declare it).
	c.Close()
	stopTopicNode(node)
	node, out = startTopicNode(t, yaml, addr)
	if stdout, stderr, code := ferry("group", "list"); code != 0 || !regexpLine(stdout, `^billing\s+0\s+0\s+orders$`) {
		t.Errorf("group list after a restart: exit %d\n%s%s", code, stdout, stderr)
	}

	stdout, stderr, code = ferry("group", "delete", "billing")
	if code != 0 || !strings.Contains(stdout, "group billing deleted") {
		t.Fatalf("delete: exit %d\n%s%s", code, stdout, stderr)
	}
	gone := func(when string) {
		t.Helper()
		if _, stderr, code := ferry("group", "describe", "billing"); code != 1 || !strings.Contains(stderr, `unknown group "billing"`) {
			t.Errorf("%s: describe: exit %d, %s", when, code, stderr)
		}
		if stdout, _, _ := ferry("group", "list", "--json"); strings.Contains(stdout, "billing") {
			t.Errorf("%s: list:\n%s", when, stdout)
		}
	}
	gone("after the delete")
	stopTopicNode(node)
	node, out = startTopicNode(t, yaml, addr)
	gone("after a restart")
	_ = out
}

// regexpLine reports whether a line of s matches pattern.
func regexpLine(s, pattern string) bool {
	return regexp.MustCompile(`(?m)` + pattern).MatchString(s)
}
