package harness_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/bench/harness"
)

// TestMain makes the test binary serve Ferry's built-in plugins when the
// plugin host re-executes it.
func TestMain(m *testing.M) {
	if len(os.Args) >= 3 && os.Args[1] == "plugin" && os.Args[2] == "serve" {
		if err := harness.ServePlugin(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) >= 3 && os.Args[1] == "node" && os.Args[2] == "run" {
		if err := harness.ServeNode(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) >= 3 && os.Args[1] == "jetstream" && os.Args[2] == "serve" {
		if err := harness.ServeJetStream(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A tiny comparison (not a measurement): every system runs every workload
// at both durability levels, and the report has the table, the ratios and
// the targets.
func TestRunTiny(t *testing.T) {
	o := harness.DefaultOptions()
	o.Pipeline = "../../pipelines/broker.yaml"
	o.Reps, o.Duration, o.ConsumeCount = 1, 100*time.Millisecond, 3000
	var log bytes.Buffer
	o.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := harness.Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "\n"); n != 7*3 {
		t.Errorf("%d runs logged, want 21 (7 workloads × 3 systems):\n%s", n, log.String())
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	for _, s := range []string{
		"| workload | ferry | ferry in-process | jetstream | ferry ÷ jetstream | ferry ÷ ferry in-process |",
		"| flush async vs JS default: 1 sync producer |",
		"| flush sync vs JS sync always: 16 sync producers |",
		"| consume 3k, ack each (pull) |",
		"flush async vs JS default: async, 256 in flight: ferry ÷ jetstream",
		"subprocess ÷ in-process, lowest over the workloads",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	for _, m := range rep.Cmp.Medians() {
		if m.Messages == 0 || m.Failed() != 0 {
			t.Errorf("%s on %s: %d messages, errors %s", m.Workload, m.System, m.Messages, m.Errors())
		}
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Medians []json.RawMessage `json:"medians"`
		Runs    []json.RawMessage `json:"runs"`
		Targets []string          `json:"targets"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Medians) != 21 || len(doc.Runs) != 21 || len(doc.Targets) == 0 {
		t.Errorf("JSON: %d medians, %d runs, %d targets", len(doc.Medians), len(doc.Runs), len(doc.Targets))
	}
}

// With Apart, the node with in-process plugins and JetStream run in
// processes of their own beside the node: every workload runs on all six
// systems, and the report has the servers-apart ratios and targets.
func TestRunApartTiny(t *testing.T) {
	o := harness.DefaultOptions()
	o.Pipeline = "../../pipelines/broker.yaml"
	o.Reps, o.Duration, o.ConsumeCount, o.Durability = 1, 100*time.Millisecond, 2000, []string{"async"}
	o.Apart = true
	var log bytes.Buffer
	o.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := harness.Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log.String(), "\n"); n != 4*6 {
		t.Errorf("%d runs logged, want 24 (4 workloads × 6 systems):\n%s", n, log.String())
	}
	var out bytes.Buffer
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	for _, s := range []string{
		"ferry node ÷ jetstream apart", "ferry node ÷ ferry in-process node",
		"1 sync producer: node ÷ jetstream apart",
		"1 sync producer: p50 node",
		"node process ÷ in-process node, lowest over the workloads",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	for _, m := range rep.Cmp.Medians() {
		if m.Messages == 0 || m.Failed() != 0 {
			t.Errorf("%s on %s: %d messages, errors %s", m.Workload, m.System, m.Messages, m.Errors())
		}
	}
}
