package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// topicNode writes a pipeline with a file store in dir declaring topics.
func topicNode(t *testing.T, dir, addr, topics string) string {
	t.Helper()
	yaml := filepath.Join(dir, fmt.Sprintf("node-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(yaml, fmt.Appendf(nil, `name: topics-test
node: {data_dir: %q}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: %s
`, filepath.Join(dir, "data"), addr, topics), 0o644); err != nil {
		t.Fatal(err)
	}
	return yaml
}

// startTopicNode starts `ferry run yaml` and waits until it listens on addr.
func startTopicNode(t *testing.T, yaml, addr string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(ferryBin, "run", "--log-level", "error", yaml)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the node listens on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cmd, out
}

// stopTopicNode stops a node of startTopicNode and waits for it.
func stopTopicNode(cmd *exec.Cmd) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

// A real `ferry run` keeps the pipeline's topics in its data dir; started
// again with a topic declared with fewer queues than it holds, it refuses to
// start and names the conflict; with the topic no longer declared, it still
// serves it, messages included.
func TestTopicMetadataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	run := func(yaml string) (*exec.Cmd, *syncBuffer) { return startTopicNode(t, yaml, addr) }
	stop := stopTopicNode
	cmd, out := run(topicNode(t, dir, addr, "[{name: Orders.EU, queues: 4}, {name: audit, queues: 1}]"))
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			stop(cmd)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := c.NewProducer(client.ProducerOptions{}).SendSync(ctx, client.Message{Topic: "audit", Body: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stop(cmd)

	// Orders.EU declared with 2 queues: refused, the node holds 4.
	shrink := exec.Command(ferryBin, "run", "--log-level", "error", topicNode(t, dir, addr, "[{name: Orders.EU, queues: 2}]"))
	var shrinkOut bytes.Buffer
	shrink.Stdout, shrink.Stderr = &shrinkOut, &shrinkOut
	done := make(chan error, 1)
	if err := shrink.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- shrink.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("ferry run with fewer queues than held exited 0:\n%s", shrinkOut.String())
		}
	case <-time.After(60 * time.Second):
		_ = shrink.Process.Kill()
		t.Fatalf("ferry run with fewer queues than held kept running:\n%s", shrinkOut.String())
	}
	if want := `topic "Orders.EU": the pipeline declares 2 queues, but this node holds 4`; !strings.Contains(shrinkOut.String(), want) {
		t.Errorf("refusal does not say %q:\n%s", want, shrinkOut.String())
	}

	// audit no longer declared: still served, with its message.
	cmd, out = run(topicNode(t, dir, addr, "[{name: Orders.EU, queues: 4}]"))
	c, err = client.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	defer c.Close()
	md, err := c.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int32{}
	for _, ti := range md.Topics {
		got[ti.Name] = ti.Queues
	}
	if got["Orders.EU"] != 4 || got["audit"] != 1 || len(got) != 2 {
		t.Fatalf("after the restart the node serves %v, want Orders.EU:4 and audit:1", got)
	}
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "audit", Group: "reader", MaxWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var bodies []string
	for deadline := time.Now().Add(30 * time.Second); len(bodies) == 0 && time.Now().Before(deadline); {
		ds, err := cons.Fetch(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			bodies = append(bodies, string(d.Message.Body))
		}
	}
	if len(bodies) != 1 || bodies[0] != "kept" {
		t.Fatalf("audit after the restart holds %q, want [kept]", bodies)
	}
}
