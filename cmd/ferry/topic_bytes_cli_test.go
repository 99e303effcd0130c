package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// `ferry topic describe` against a real `ferry run` with the file store
// shows each queue's bytes and the topic's total (the store's records in
// its log): at least the bodies sent to each queue, 0 for an empty queue,
// the total their sum, in the table and in --json (issue 15).
func TestTopicDescribeShowsBytes(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: topic-bytes
node: {data_dir: %q}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: orders, queues: 3}]
`, filepath.Join(dir, "data"), addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	node := exec.Command(ferryBin, "run", "--log-level", "warn", yaml)
	node.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-node.Process.Pid, syscall.SIGTERM)
		_ = node.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c *client.Client
	for deadline := time.Now().Add(60 * time.Second); c == nil; {
		var err error
		if c, err = client.Dial(ctx, addr, client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))); err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("dial: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Selector: keyQueue{}})
	body := make([]byte, 1000)
	for q, n := range map[int32]int{0: 5, 1: 2} { // queue 2 stays empty
		for range n {
			if _, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: fmt.Sprint(q), Body: body}); err != nil {
				t.Fatal(err)
			}
		}
	}
	out, stderr, code := runFerry(t, nil, "topic", "describe", "orders", "--broker", addr, "--json")
	if code != 0 {
		t.Fatalf("ferry topic describe --json: exit %d: %s", code, stderr)
	}
	var d topicJSON
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if d.BytesUnknown || d.Bytes == nil || len(d.Detail) != 3 {
		t.Fatalf("describe --json of a file store's topic: %s", out)
	}
	var sum int64
	for i, q := range d.Detail {
		if q.Bytes == nil {
			t.Fatalf("queue %d: bytes unknown from the file store: %s", i, out)
		}
		sum += *q.Bytes
	}
	if *d.Detail[0].Bytes < 5000 || *d.Detail[1].Bytes < 2000 || *d.Detail[2].Bytes != 0 || *d.Detail[0].Bytes <= *d.Detail[1].Bytes || *d.Bytes != sum {
		t.Fatalf("bytes of queues with 5000, 2000 and 0 body bytes, and the total: %s", out)
	}
	out, _, code = runFerry(t, nil, "topic", "describe", "orders", "--broker", addr)
	if code != 0 || !regexp.MustCompile(fmt.Sprintf(`7 message\(s\) stored, %d bytes\n`, sum)).MatchString(out) ||
		!regexp.MustCompile(`(?m)^QUEUE +START +END +MESSAGES +BYTES$`).MatchString(out) ||
		!regexp.MustCompile(fmt.Sprintf(`(?m)^0 +0 +5 +5 +%d$`, *d.Detail[0].Bytes)).MatchString(out) {
		t.Fatalf("describe's table:\n%s", out)
	}
}

// keyQueue sends each message to the queue its key names.
type keyQueue struct{}

func (keyQueue) Select(m *client.Message, queues int32) int32 {
	var q int32
	fmt.Sscan(m.Key, &q)
	return q % queues
}
