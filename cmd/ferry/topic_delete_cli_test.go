package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// `ferry topic delete` against a real node: refused without --yes, while a
// group consumes the topic (unless --force), for internal, declared and
// unknown topics; once deleted the topic is gone from routing (a producer
// gets "not found") and from the listing, and stays gone across a restart;
// created again it is empty.
func TestTopicDeleteOnALiveNode(t *testing.T) {
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
	if stdout, stderr, code := ferry("topic", "create", "clicks", "--queues", "2"); code != 0 {
		t.Fatalf("create: exit %d\n%s%s\nnode:\n%s", code, stdout, stderr, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{})
	for i := range 10 {
		if _, err := p.SendSync(ctx, client.Message{ID: fmt.Sprintf("c%d", i), Topic: "clicks", Body: []byte("click")}); err != nil {
			t.Fatal(err)
		}
	}
	// Group billing consumes it and leaves, its offsets committed.
	gc := startGroupConsumer(t, c, "clicks", "m1")
	waitUntil(t, 90*time.Second, "billing consumed the 10 messages", func() bool { return gc.count() == 10 })
	gc.stop()
	stdout, _, _ := ferry("topic", "describe", "clicks")
	if !strings.Contains(stdout, "10 message(s) stored") || !strings.Contains(stdout, "consumed by: billing") {
		t.Errorf("describe:\n%s\nwant 10 messages, consumed by billing", stdout)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"topic", "delete", "clicks"}, `pass --yes`},
		{[]string{"topic", "delete", "clicks", "--yes"}, `topic "clicks" is consumed by group(s) billing`},
		{[]string{"topic", "delete", "orders", "--yes", "--force"}, `declared in the pipeline's topics`},
		{[]string{"topic", "delete", "%DLQ%billing", "--yes", "--force"}, `internal topic`},
		{[]string{"topic", "delete", "nope", "--yes"}, `unknown topic "nope"`},
	} {
		stdout, stderr, code := ferry(c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("ferry %v: exit %d, stderr %q; want exit 1 and one line with %q (stdout %q)", c.args, code, stderr, c.want, stdout)
		}
	}
	if stdout, _, _ := ferry("topic", "list"); !strings.Contains(stdout, "clicks") {
		t.Fatalf("a refused delete removed the topic:\n%s", stdout)
	}
	stdout, stderr, code := ferry("topic", "delete", "clicks", "--yes", "--force")
	if code != 0 || !strings.Contains(stdout, "topic clicks deleted") || !strings.Contains(stdout, "group(s) billing") {
		t.Fatalf("delete: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := p.SendSync(ctx, client.Message{ID: "late", Topic: "clicks", Body: []byte("x")}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("produce to the deleted topic: %v, want not found", err)
	}
	gone := func(when string) {
		t.Helper()
		if stdout, _, _ := ferry("topic", "list"); strings.Contains(stdout, "clicks") || !strings.Contains(stdout, "orders") {
			t.Errorf("%s: topic list:\n%s", when, stdout)
		}
		if _, stderr, code := ferry("topic", "describe", "clicks"); code != 1 || !strings.Contains(stderr, "not found") {
			t.Errorf("%s: describe: exit %d %s", when, code, stderr)
		}
	}
	gone("after the delete")
	c.Close()
	stopTopicNode(node)
	node, out = startTopicNode(t, yaml, addr)
	gone("after a restart")
	if stdout, stderr, code := ferry("topic", "create", "clicks", "--queues", "2"); code != 0 {
		t.Fatalf("create again: exit %d\n%s%s\nnode:\n%s", code, stdout, stderr, out)
	}
	if stdout, _, _ := ferry("topic", "describe", "clicks"); !strings.Contains(stdout, "0 message(s) stored") || strings.Contains(stdout, "consumed by") {
		t.Errorf("the topic created again:\n%s\nwant it empty, consumed by no group", stdout)
	}
}
