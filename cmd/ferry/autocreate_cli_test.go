package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// node.auto_create_topics on a real node (file store, grpc transport, each
// its own process): `ferry produce` to a topic the node does not have
// creates it with the configured queues and stores the messages; the
// topic is in the node's metadata after a restart (with auto-creation
// off by then); a bad name gets the name rule's one error and an internal
// prefix is not created. The negative control: a node without the option
// refuses the same produce (not found) and creates nothing.
func TestAutoCreateTopicsOnALiveNode(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := func(extra string) string {
		p := filepath.Join(dir, fmt.Sprintf("node-%d.yaml", len(extra)))
		if err := os.WriteFile(p, fmt.Appendf(nil, `name: auto-create-test
node: {data_dir: %q%s}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: [{name: orders, queues: 2}]
`, filepath.Join(dir, "data"), extra, addr), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	off, on := yaml(""), yaml(", auto_create_topics: {enabled: true, queues: 3}")
	if stdout, stderr, code := runFerry(t, nil, "validate", on); code != 0 {
		t.Fatalf("validate: exit %d\n%s%s", code, stdout, stderr)
	}
	describe := func() (topicJSON, string, int) {
		stdout, stderr, code := runFerry(t, nil, "topic", "describe", "fresh", "--json", "--broker", addr)
		var d topicJSON
		if code == 0 {
			if err := json.Unmarshal([]byte(stdout), &d); err != nil {
				t.Fatalf("describe --json: %v\n%s", err, stdout)
			}
		}
		return d, stderr, code
	}

	// Off: refused, nothing created.
	node, out := startTopicNode(t, off, addr)
	_, stderr, code := produce(t, "", "--broker", addr, "--topic", "fresh", "--count", "3", "--retries", "0")
	if code == 0 || !strings.Contains(stderr, `topic "fresh"`) || !strings.Contains(stderr, "not found") {
		t.Errorf("produce to an unknown topic with auto-creation off: exit %d, %s", code, stderr)
	}
	if _, stderr, code := describe(); code == 0 {
		t.Errorf("the refused produce created the topic (%s)", stderr)
	}
	stopTopicNode(node)

	// On: created with 3 queues, durably, the messages stored.
	node, out = startTopicNode(t, on, addr)
	t.Cleanup(func() {
		if node.ProcessState == nil {
			stopTopicNode(node)
		}
	})
	if _, stderr, code := produce(t, "", "--broker", addr, "--topic", "fresh", "--count", "6"); code != 0 {
		t.Fatalf("produce with auto-creation on: exit %d\n%s\nnode:\n%s", code, stderr, out)
	}
	check := func(when string) {
		t.Helper()
		d, stderr, code := describe()
		var msgs int64
		for _, q := range d.Detail {
			msgs += q.End - q.Start
		}
		if code != 0 || d.Queues != 3 || len(d.Detail) != 3 || msgs != 6 {
			t.Errorf("%s: describe fresh: exit %d, %+v, %s; want 3 queues holding 6 messages", when, code, d, stderr)
		}
	}
	check("after the produce")
	for _, c := range []struct{ topic, want string }{
		{"bad name", `topic name "bad name": character ' ' at position 4 is not allowed`},
		{"%DLQ%nobody", `not found`},
	} {
		_, stderr, code := produce(t, "", "--broker", addr, "--topic", c.topic, "--count", "1", "--retries", "0")
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("produce to %q: exit %d, %q; want %q", c.topic, code, stderr, c.want)
		}
	}
	if stdout, _, _ := runFerry(t, nil, "topic", "list", "--broker", addr); strings.Contains(stdout, "bad") || strings.Contains(stdout, "%DLQ%nobody") {
		t.Errorf("topic list shows a topic that was refused:\n%s", stdout)
	}
	stopTopicNode(node)

	// Restarted without the option: the topic stays.
	node, out = startTopicNode(t, off, addr)
	check("after a restart")
}
