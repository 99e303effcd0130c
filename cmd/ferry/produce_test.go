package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startBroker runs `ferry run` on a broker pipeline with memory storage on a
// free port and returns the port's address.
func startBroker(t *testing.T) string {
	t.Helper()
	return startBrokerWith(t, "")
}

// startBrokerWith is startBroker with more keys of the grpc transport's
// config (flow style, e.g. `tls: {cert_file: a, key_file: b}`).
func startBrokerWith(t *testing.T, transportExtra string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: produce-test
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms%s}}
topics: [{name: t, queues: 4}]
`, filepath.Join(dir, "data"), addr, transportExtra)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ferryBin, "run", "--log-level", "error", yaml)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not listening on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// produce runs `ferry produce` with stdin and returns stdout, stderr and the
// exit status.
func produce(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ferryBin, append([]string{"produce"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

var idField = regexp.MustCompile(`"id":"p[0-9a-f]+-\d+"`)

// TestProduceJSONGolden checks the --json output shape against
// testdata/produce/lines.golden (message ids normalised to "ID").
func TestProduceJSONGolden(t *testing.T) {
	addr := startBroker(t)
	stdout, stderr, code := produce(t, "", "--broker", addr, "--topic", "t", "--key", "k", "--json", "--file", "testdata/produce/lines.txt")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	got := idField.ReplaceAllString(stdout, `"id":"ID"`)
	golden := "testdata/produce/lines.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("stdout differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
	}
	if !strings.Contains(stderr, "produced 3 messages to t") || !strings.Contains(stderr, "3 OK, 0 with a weaker status, 0 failed") {
		t.Errorf("summary on stderr:\n%s", stderr)
	}
}

func TestProduceModes(t *testing.T) {
	addr := startBroker(t)
	for _, tc := range []struct{ mode, status string }{{"sync", "OK"}, {"async", "OK"}, {"oneway", "SENT"}} {
		t.Run(tc.mode, func(t *testing.T) {
			stdout, stderr, code := produce(t, "", "--broker", addr, "--topic", "t", "--mode", tc.mode, "--count", "300", "--size", "100", "--json")
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			if len(lines) != 300 {
				t.Fatalf("%d lines on stdout, want 300", len(lines))
			}
			ids := map[string]bool{}
			for _, l := range lines {
				var r struct {
					ID, Status, Topic, Error string
					Queue                    int32
					Offset                   int64
				}
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if r.Status != tc.status || r.Error != "" || r.Topic != "t" || ids[r.ID] || (tc.mode != "oneway" && r.Offset < 0) {
					t.Fatalf("line %s", l)
				}
				ids[r.ID] = true
			}
			if !regexp.MustCompile(`produced 300 messages to t in \S+ \(` + tc.mode + `\): \d+ msgs/s`).MatchString(stderr) {
				t.Errorf("no summary with the rate on stderr:\n%s", stderr)
			}
		})
	}
	// Lines from stdin, without --json: the summary goes to stdout.
	stdout, stderr, code := produce(t, "a\nb\n", "--broker", addr, "--topic", "t", "--mode", "async")
	if code != 0 || !strings.Contains(stdout, "produced 2 messages to t") || !strings.Contains(stdout, "latency p50") {
		t.Fatalf("stdin lines: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestProduceErrors(t *testing.T) {
	addr := startBroker(t)
	for _, tc := range []struct {
		name string
		args []string
		text string
	}{
		{"unknown topic", []string{"--broker", addr, "--topic", "nope", "--count", "1"}, `topic "nope": not found: the broker has t`},
		{"bad mode", []string{"--broker", addr, "--topic", "t", "--mode", "fast"}, "--mode must be sync, async or oneway"},
		{"no topic", []string{"--broker", addr}, `required flag(s) "topic" not set`},
		{"too large", []string{"--broker", addr, "--topic", "t", "--count", "1", "--size", "5000000"}, "max_message_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := produce(t, "", tc.args...)
			if code != 1 || !strings.Contains(stderr, tc.text) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 mentioning %q", code, stderr, tc.text)
			}
		})
	}
	// A broker that is not there.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	_, stderr, code := produce(t, "", "--broker", dead, "--topic", "t", "--count", "1", "--timeout", "500ms")
	if code != 1 || !strings.Contains(stderr, "cannot reach "+dead) {
		t.Errorf("dead broker: exit %d, stderr:\n%s", code, stderr)
	}
}

// `ferry produce --id` run twice (an operator's retry after an unknown
// outcome) stores each message once, with the given ids; the control without
// --id stores them again.
func TestProduceID(t *testing.T) {
	addr := startBroker(t)
	run := func(args ...string) []string {
		t.Helper()
		stdout, stderr, code := produce(t, "a\nb\n", append([]string{"--broker", addr, "--topic", "t", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		var offsets []string
		for _, l := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
			var r struct {
				ID, Status string
				Queue      int32
				Offset     int64
			}
			if err := json.Unmarshal([]byte(l), &r); err != nil || r.Status != "OK" {
				t.Fatalf("line %q: %v", l, err)
			}
			offsets = append(offsets, fmt.Sprintf("%s@%d/%d", r.ID, r.Queue, r.Offset))
		}
		return offsets
	}
	first := run("--id", "order-7")
	if len(first) != 2 || !strings.HasPrefix(first[0], "order-7@") || !strings.HasPrefix(first[1], "order-7-2@") {
		t.Fatalf("ids and offsets %v, want order-7 and order-7-2", first)
	}
	if again := run("--id", "order-7"); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("sent again with the same ids: %v, want the first offsets %v (stored once)", again, first)
	}
	if control := run(); fmt.Sprint(control) == fmt.Sprint(first) {
		t.Fatalf("without --id the messages were not stored again: %v", control)
	}
}
