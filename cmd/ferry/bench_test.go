package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// benchCmd runs `ferry bench` and returns stdout, stderr and the exit status.
func benchCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ferryBin, append([]string{"bench"}, args...)...)
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

var brokerPipeline = filepath.Join("..", "..", "pipelines", "broker.yaml")

// Each workload runs against an embedded broker and prints its table row.
func TestBenchEmbedded(t *testing.T) {
	for _, c := range []struct {
		args []string
		row  string
	}{
		{[]string{"produce", "--mode", "async", "--count", "300", "--flush", "async"}, "produce async w256 +300 "},
		{[]string{"produce", "--producers", "4", "--count", "40", "--plugins", "inprocess"}, "produce sync x4 +40 "},
		{[]string{"consume", "--count", "250", "--delivery", "push", "--plugins", "inprocess", "--topic", "events"}, "consume push +250 "},
		{[]string{"e2e", "--mode", "async", "--count", "100", "--plugins", "inprocess"}, "e2e async w256 / pull +100 "},
	} {
		out, errOut, code := benchCmd(t, append(c.args, "--embedded", brokerPipeline)...)
		if code != 0 {
			t.Errorf("%v: exit %d\n%s%s", c.args, code, out, errOut)
			continue
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "workload") || !regexp.MustCompile(`msgs/s +MB/s +p50 +p90 +p99 +p99.9 +max +errors`).MatchString(lines[0]) ||
			!regexp.MustCompile("^"+c.row).MatchString(lines[1]) || !strings.HasSuffix(lines[1], "  0") {
			t.Errorf("%v: output\n%s\nwant a header and a row starting %q, with 0 errors", c.args, out, c.row)
		}
	}
}

// --json prints one document with the rate, the latency percentiles in
// microseconds and the statuses.
func TestBenchJSONAgainstBroker(t *testing.T) {
	addr := startBroker(t)
	out, errOut, code := benchCmd(t, "produce", "--broker", addr, "--topic", "t", "--count", "120", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var doc struct {
		Results []struct {
			Workload string           `json:"workload"`
			Messages int64            `json:"messages"`
			Rate     float64          `json:"msgs_per_sec"`
			MBps     float64          `json:"mb_per_sec"`
			Latency  map[string]any   `json:"latency"`
			Statuses map[string]int64 `json:"statuses"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r := doc.Results[0]
	if r.Workload != "produce sync" || r.Messages != 120 || r.Rate <= 0 || r.MBps <= 0 || r.Statuses["OK"] != 120 {
		t.Errorf("result %+v", r)
	}
	for _, k := range []string{"p50_us", "p90_us", "p99_us", "p99_9_us"} {
		if v, ok := r.Latency[k].(float64); !ok || v <= 0 {
			t.Errorf("latency %s = %v", k, r.Latency[k])
		}
	}
	if errOut != "" {
		t.Errorf("stderr (no terminal: no progress bar): %q", errOut)
	}
}

func TestBenchErrors(t *testing.T) {
	addr := startBroker(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"produce", "--broker", addr, "--embedded", brokerPipeline}, "give either --broker or --embedded"},
		{[]string{"produce", "--broker", addr}, "--topic is required with --broker"},
		{[]string{"produce", "--broker", addr, "--topic", "nope"}, `topic "nope": not found: the broker has t`},
		{[]string{"produce", "--broker", addr, "--topic", "t", "--flush", "sync"}, "apply to --embedded only"},
		{[]string{"produce", "--broker", addr, "--topic", "t", "--mode", "fast"}, `mode must be sync, async or oneway, got "fast"`},
		{[]string{"e2e", "--broker", addr, "--topic", "t", "--mode", "oneway"}, "e2e needs acks"},
		{[]string{"fly", "--broker", addr, "--topic", "t"}, "kind must be produce, consume or e2e"},
		{[]string{"consume", "--broker", addr, "--topic", "t", "--count", "5", "--no-preload"}, "fewer than the 5 to consume"},
		{[]string{"produce", "--embedded", "nope.yaml"}, "nope.yaml"},
	} {
		out, errOut, code := benchCmd(t, c.args...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q\n%s", c.args, code, errOut, c.want, out)
		}
	}
}
