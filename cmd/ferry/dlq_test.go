package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// putDeadLetters stores dead letters of group "billing" as a consumer
// would, with fixed contents, so that the CLI's output is the same on every
// run.
func putDeadLetters(t *testing.T, c *client.Client, addr string) {
	t.Helper()
	// The group exists, as it does when its consumer dead-letters: it
	// committed (the broker keeps no dead-letter topic for made-up groups).
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := ferryv1.NewBrokerClient(cc).CommitOffsets(context.Background(), &ferryv1.CommitOffsetsRequest{Group: "billing",
		Offsets: []*ferryv1.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}}); err != nil {
		t.Fatal(err)
	}
	p := c.NewProducer(client.ProducerOptions{})
	letters := []struct {
		id, reason, lastErr, key, body string
		attempts                       string
		origin                         [2]string // queue, offset
	}{
		{"p0a1b2c3-17", "max attempts (16) reached", "POST http://127.0.0.1:8080/charge: 503 Service Unavailable: try later", "order-17", `{"order": 17, "amount": 1200}`, "16", [2]string{"2", "15"}},
		{"p0a1b2c3-18", "permanent error", "POST http://127.0.0.1:8080/charge: 422 Unprocessable Entity: unknown customer", "order-18", `{"order": 18, "amount": -5}`, "1", [2]string{"0", "9"}},
		{"p0a1b2c3-21", "max attempts (3) reached", "sh: exit status 1: payment service unavailable", "", "\x00\x01binary\xff", "3", [2]string{"1", "4"}},
	}
	for _, l := range letters {
		h := map[string]string{
			sdk.HeaderOriginID: l.id, sdk.HeaderOriginTopic: "orders", sdk.HeaderOriginQueue: l.origin[0], sdk.HeaderOriginOffset: l.origin[1],
			sdk.HeaderAttempt: l.attempts, sdk.HeaderDeadReason: l.reason, sdk.HeaderLastError: l.lastErr,
			sdk.HeaderFirstFailure: "2026-11-27T10:00:00.123456789Z", sdk.HeaderLastFailure: "2026-11-27T12:30:05.5Z",
			"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		}
		if _, err := p.SendSync(context.Background(), client.Message{Topic: sdk.DLQTopic("billing"), Key: l.key, Headers: h, Body: []byte(l.body)}); err != nil {
			t.Fatal(err)
		}
	}
}

var producedLine = regexp.MustCompile(`(?m)^(  produced:\s+).*$`)

// TestDLQGolden runs the dlq commands against a known DLQ and compares
// their output with testdata/dlq/NAME.golden (-update rewrites them).
func TestDLQGolden(t *testing.T) {
	addr := startNode(t, "[{name: orders, queues: 4}]")
	putDeadLetters(t, dialNode(t, addr), addr)
	steps := []struct {
		name string
		args []string
		code int
	}{
		{"empty", []string{"list", "--group", "nobody"}, 0},
		{"list", []string{"list", "--group", "billing"}, 0},
		{"list-limit", []string{"list", "--group", "billing", "--limit", "1"}, 0},
		{"show", []string{"show", "--group", "billing", "0", "2"}, 0},
		{"show-missing", []string{"show", "--group", "billing", "7"}, 1},
		{"list-json", []string{"list", "--group", "billing", "--json"}, 0},
		{"redrive-one", []string{"redrive", "--group", "billing", "--count", "1"}, 0},
		{"purge-needs-count", []string{"purge", "--group", "billing"}, 2},
		{"purge-one", []string{"purge", "--group", "billing", "--count", "1"}, 0},
		{"list-after", []string{"list", "--group", "billing"}, 0},
		{"show-gone", []string{"show", "--group", "billing", "0"}, 0},
		{"redrive-all", []string{"redrive", "--group", "billing"}, 0},
		{"list-none", []string{"list", "--group", "billing"}, 0},
	}
	for _, s := range steps {
		out, errOut, code := runFerry(t, nil, append(append([]string{"dlq"}, s.args...), "--broker", addr)...)
		got := producedLine.ReplaceAllString(out, "${1}<time>")
		if errOut != "" {
			got += "stderr: " + errOut
		}
		golden := filepath.Join("testdata", "dlq", s.name+".golden")
		if *update {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if got != string(want) {
			t.Errorf("ferry dlq %s: output differs from %s:\n--- got\n%s--- want\n%s", strings.Join(s.args, " "), golden, got, want)
		}
		if code != s.code {
			t.Errorf("ferry dlq %s: exit %d, want %d", strings.Join(s.args, " "), code, s.code)
		}
	}
	// The re-driven messages wait in the group's retry topic, due now, on
	// attempt 1 again.
	c := dialNode(t, addr)
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "billing", MaxWait: 200 * time.Millisecond})
	if err := cons.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []*client.Delivery
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2 && time.Now().Before(deadline); {
		ds, err := cons.Fetch(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ds...)
	}
	if len(got) != 2 {
		t.Fatalf("the group got %d re-driven messages, want 2 (one was purged)", len(got))
	}
	for _, d := range got {
		if d.Attempt != 1 || d.Topic != "orders" || d.Message.Headers[sdk.HeaderDeadReason] != "" || (d.ID != "p0a1b2c3-17" && d.ID != "p0a1b2c3-21") {
			t.Errorf("re-driven delivery %s %s/%d@%d attempt %d headers %v", d.ID, d.Topic, d.Queue, d.Offset, d.Attempt, d.Message.Headers)
		}
	}
}

// pipelines/dlq-demo.yaml end to end: its payments end in the DLQ, the CLI
// lists them, and once the "service" is fixed a redrive delivers them again
// and they succeed.
func TestDLQDemoPipeline(t *testing.T) {
	cfg, err := config.Load(filepath.Join("..", "..", "pipelines", "dlq-demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.DataDir = t.TempDir()
	cfg.Plugins.Mode = "inprocess"
	addr := ferrytest.FreeAddr(t)
	cfg.Plugins.Transport.Config = map[string]any{"listen": addr}
	e, err := engine.Start(context.Background(), cfg, engine.Options{Registry: builtins()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	}()
	ctx, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	var out syncBuffer
	type result struct {
		s   *engine.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := e.Run(ctx, &out)
		done <- result{s, err}
	}()
	waitUntil(t, 30*time.Second, "the demo's flow caught up", func() bool { return strings.Contains(out.String(), "running until interrupted") })
	if !strings.Contains(out.String(), "(10 dead-lettered)") {
		t.Fatalf("demo output: %s", out.String())
	}
	list, _, code := runFerry(t, nil, "dlq", "list", "--broker", addr, "--group", "charge")
	if code != 0 || !strings.Contains(list, "group charge: 10 dead letter(s), DLQ offsets 0..9") ||
		strings.Count(list, "max attempts (3) reached: sh: exit status 1: payment service unavailable") != 10 {
		t.Fatalf("dlq list: exit %d\n%s", code, list)
	}
	if err := os.WriteFile(filepath.Join(cfg.Node.DataDir, "fixed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	redrive, _, code := runFerry(t, nil, "dlq", "redrive", "--broker", addr, "--group", "charge")
	if code != 0 || !strings.Contains(redrive, "re-drove 10 dead letter(s) of group charge") || !strings.Contains(redrive, "0 live dead letter(s) left") {
		t.Fatalf("dlq redrive: exit %d\n%s", code, redrive)
	}
	c := dialNode(t, addr)
	waitUntil(t, 20*time.Second, "the re-driven payments processed", func() bool {
		offs, err := c.GetOffsets(context.Background(), "charge", []*ferryv1.QueueRef{{Topic: sdk.RetryTopic("charge"), Queue: 0}})
		return err == nil && offs[0].End > 0 && offs[0].Committed == offs[0].End
	})
	stop()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	f := r.s.Flows[0]
	if f.Unique != 10 || f.Delivered != 40 || f.DeadLettered != 10 || f.Missing != 0 {
		t.Errorf("flow %+v; want 10 payments, 3 failed attempts and 1 success each", f)
	}
	if d, _ := c.DLQDepth(context.Background(), "charge"); d != 0 {
		t.Errorf("DLQ depth %d after the redrive", d)
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
