package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// `ferry topic` against a real node: a topic created at runtime takes
// messages; growing it while a group consumes loses nothing (the group takes
// the new queues, which a new producer fills); bad requests get one clear
// error each; the topic and its messages survive a restart with a pipeline
// that does not declare it.
func TestTopicCommandsOnALiveNode(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := topicNode(t, dir, addr, "[{name: orders, queues: 1}]")
	node, out := startTopicNode(t, yaml, addr)
	t.Cleanup(func() {
		if node.ProcessState == nil {
			stopTopicNode(node)
		}
	})
	ferry := func(args ...string) (string, string, int) {
		return runFerry(t, nil, append(args, "--broker", addr)...)
	}
	if stdout, stderr, code := ferry("topic", "create", "clicks.v1", "--queues", "2"); code != 0 || !strings.Contains(stdout, "topic clicks.v1: 2 queue(s)") {
		t.Fatalf("create: exit %d\n%s%s\nnode:\n%s", code, stdout, stderr, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"topic", "create", "clicks.v1", "--queues", "2"}, `topic "clicks.v1" already exists (with 2 queues)`},
		{[]string{"topic", "create", "orders", "--queues", "3"}, `topic "orders" already exists`},
		{[]string{"topic", "create", "bad name", "--queues", "1"}, `character ' ' at position 4 is not allowed`},
		{[]string{"topic", "create", "%DLQ%billing", "--queues", "1"}, `the prefix %DLQ% is reserved`},
		{[]string{"topic", "create", "many", "--queues", "2000"}, `queues must be between 1 and 1024, got 2000`},
		{[]string{"topic", "alter", "clicks.v1", "--queues", "1"}, `has 2 queues; it cannot shrink to 1`},
		{[]string{"topic", "alter", "nope", "--queues", "3"}, `unknown topic "nope"`},
		{[]string{"topic", "alter", "%RETRY%billing", "--queues", "3"}, `internal topic`},
		{[]string{"topic", "describe", "nope"}, `topic "nope": not found`},
	} {
		stdout, stderr, code := ferry(c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("ferry %v: exit %d, stderr %q; want exit 1 and one line with %q (stdout %q)", c.args, code, stderr, c.want, stdout)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "clicks.v1", Group: "billing", HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Launch(ctx, func(_ context.Context, d *client.Delivery) error {
		mu.Lock()
		seen[d.ID] = true
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	send := func(c *client.Client, prefix string, n int) {
		p := c.NewProducer(client.ProducerOptions{})
		for i := range n {
			if _, err := p.SendSync(ctx, client.Message{ID: fmt.Sprintf("%s-%d", prefix, i), Topic: "clicks.v1", Body: []byte("click")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(c, "before", 100)
	if stdout, stderr, code := ferry("topic", "alter", "clicks.v1", "--queues", "4"); code != 0 || !strings.Contains(stdout, "topic clicks.v1: 4 queue(s)") {
		t.Fatalf("alter: exit %d\n%s%s", code, stdout, stderr)
	}
	c2, err := client.Dial(ctx, addr) // a new client: it learns 4 queues
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	send(c2, "after", 100)
	describe := func() topicJSON {
		t.Helper()
		stdout, stderr, code := ferry("topic", "describe", "clicks.v1", "--json")
		var d topicJSON
		if code != 0 || json.Unmarshal([]byte(stdout), &d) != nil {
			t.Fatalf("describe: exit %d\n%s%s", code, stdout, stderr)
		}
		return d
	}
	d := describe()
	if d.Queues != 4 || len(d.Detail) != 4 || d.Detail[2].End == 0 || d.Detail[3].End == 0 {
		t.Fatalf("describe after the second producer: %+v; want 4 queues, the new ones holding messages (else this test proves nothing about them)", d)
	}
	waitUntil(t, 90*time.Second, "the group consumed all 200 messages, the new queues' too", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 200
	})
	for _, prefix := range []string{"before", "after"} {
		for i := range 100 {
			if id := fmt.Sprintf("%s-%d", prefix, i); !seen[id] {
				t.Errorf("message %s not consumed", id)
			}
		}
	}

	c.Close()
	c2.Close()
	stopTopicNode(node)
	node, out = startTopicNode(t, yaml, addr) // the pipeline still declares only orders
	d = describe()
	var stored int64
	for _, q := range d.Detail {
		stored += q.End - q.Start
	}
	if d.Queues != 4 || stored != 200 {
		t.Fatalf("after a restart: %+v (%d stored); want 4 queues holding 200\nnode:\n%s", d, stored, out)
	}
	stdout, _, _ := ferry("topic", "list")
	if !strings.Contains(stdout, "clicks.v1") || !strings.Contains(stdout, "orders") || strings.Contains(stdout, "%") {
		t.Errorf("topic list:\n%s\nwant clicks.v1 and orders, no internal topics", stdout)
	}
}
