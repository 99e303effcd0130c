package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// startNode runs a broker node in this process (plugins in-process, memory
// storage) with the given topics and returns its address.
func startNode(t *testing.T, topics string) string {
	t.Helper()
	addr := ferrytest.FreeAddr(t)
	cfg, err := config.LoadBytes("node.yaml", fmt.Appendf(nil, `name: cli-test
plugins:
  mode: inprocess
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: %s
`, addr, topics))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.DataDir = t.TempDir()
	e, err := engine.Start(context.Background(), cfg, engine.Options{Registry: builtins()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	})
	return addr
}

func dialNode(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendKeyed sends n messages with keys k0..k<n-1> and returns their ids.
func sendKeyed(t *testing.T, c *client.Client, topic string, n int) []string {
	t.Helper()
	p := c.NewProducer(client.ProducerOptions{})
	var msgs []client.Message
	for i := range n {
		msgs = append(msgs, client.Message{Topic: topic, Key: fmt.Sprint("k", i), Body: fmt.Append(nil, "body ", i)})
	}
	var ids []string
	for len(msgs) > 0 {
		b := msgs[:min(len(msgs), 500)]
		msgs = msgs[len(b):]
		rs, err := p.SendBatchSync(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

func parseLines(t *testing.T, out []byte) []consumedLine {
	t.Helper()
	var ls []consumedLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var l consumedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		ls = append(ls, l)
	}
	return ls
}

// --json prints one object per message; --count stops after N and leaves the
// rest (fetched or not) to the group; --idle stops when nothing comes.
func TestConsumeCountIdleJSON(t *testing.T) {
	addr := startNode(t, "[{name: t, queues: 2}]")
	ids := sendKeyed(t, dialNode(t, addr), "t", 10)
	for _, mode := range []string{"push", "pull"} {
		t.Run(mode, func(t *testing.T) {
			group := "g-" + mode
			out, errOut, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "t", "--group", group, "--mode", mode, "--json", "--count", "4")
			first := parseLines(t, []byte(out))
			if code != 0 || len(first) != 4 || !strings.Contains(errOut, "ferry consume: 4 message(s) from t, group "+group) {
				t.Fatalf("--count 4: exit %d, %d lines\n%s%s", code, len(first), out, errOut)
			}
			l := first[0]
			if l.Topic != "t" || l.Attempt != 1 || !strings.HasPrefix(l.Key, "k") || l.Queue < 0 || l.Offset < 0 {
				t.Errorf("line %+v", l)
			}
			if !strings.Contains(out, `"id":"`+l.ID+`","topic":"t","queue":`) {
				t.Errorf("field order or names differ: %s", out)
			}
			start := time.Now()
			out, _, code = runFerry(t, nil, "consume", "--broker", addr, "--topic", "t", "--group", group, "--mode", mode, "--json", "--idle", "700ms")
			rest := parseLines(t, []byte(out))
			if code != 0 || len(rest) != 6 || time.Since(start) > 10*time.Second {
				t.Fatalf("--idle after --count 4: exit %d, %d lines (want the other 6) in %v", code, len(rest), time.Since(start))
			}
			seen := map[string]int{}
			for _, l := range append(first, rest...) {
				seen[l.ID]++
			}
			for _, id := range ids {
				if seen[id] != 1 {
					t.Errorf("message %s printed %d times over both runs, want once", id, seen[id])
				}
			}
		})
	}
	out, _, _ := runFerry(t, nil, "consume", "--broker", addr, "--topic", "t", "--group", "plain", "--count", "1")
	if !strings.HasPrefix(out, "t/") || !strings.Contains(out, " attempt=1 key=\"k") {
		t.Errorf("text line %q", out)
	}
	if _, errOut, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "t", "--group", "g", "--mode", "poll"); code != 2 || !strings.Contains(errOut, "--mode must be push or pull") {
		t.Errorf("bad --mode: exit %d, %s", code, errOut)
	}
	if _, errOut, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "nope", "--group", "g"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("unknown topic: exit %d, %s", code, errOut)
	}
}

// A consumer killed with SIGKILL between processing messages (printing them)
// and committing them: the next member of the group gets those messages
// again, and no message is lost.
func TestConsumeKill9Redelivers(t *testing.T) {
	for _, mode := range []string{"push", "pull"} {
		t.Run(mode, func(t *testing.T) {
			addr := startNode(t, "[{name: t, queues: 4}]")
			ids := sendKeyed(t, dialNode(t, addr), "t", 2000)

			cmd := exec.Command(ferryBin, "consume", "--broker", addr, "--topic", "t", "--group", "g", "--mode", mode,
				"--json", "--delay", "1ms", "--session-timeout", "1s")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var before []byte
			sc := bufio.NewScanner(stdout)
			n := 0
			deadline := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
			defer deadline.Stop()
			for sc.Scan() {
				before = append(append(before, sc.Bytes()...), '\n')
				if n++; n == 700 {
					if err := cmd.Process.Kill(); err != nil { // SIGKILL: no final commit, no leave
						t.Fatal(err)
					}
				}
			}
			err = cmd.Wait()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
				t.Fatalf("the consumer was not killed: %v\n%s", err, stderr.String())
			}
			first := parseLines(t, before)

			out, errOut, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "t", "--group", "g", "--mode", mode, "--json", "--idle", "2500ms")
			if code != 0 {
				t.Fatalf("second consumer: exit %d\n%s", code, errOut)
			}
			second := parseLines(t, []byte(out))
			got := map[string]bool{}
			again := 0
			for _, l := range first {
				got[l.ID] = true
			}
			for _, l := range second {
				if got[l.ID] {
					again++
				}
				got[l.ID] = true
			}
			for _, id := range ids {
				if !got[id] {
					t.Fatalf("message %s lost: printed by neither consumer", id)
				}
			}
			t.Logf("%s: killed after %d messages; the next consumer printed %d, %d of them again (processed, not committed)", mode, len(first), len(second), again)
			if again == 0 {
				t.Errorf("no message was delivered again: the kill did not land between processing and committing")
			}
			if len(first)+len(second)-again != len(ids) {
				t.Errorf("%d + %d - %d != %d", len(first), len(second), again, len(ids))
			}
		})
	}
}
