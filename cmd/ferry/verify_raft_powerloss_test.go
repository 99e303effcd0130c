package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// One fsync per message on raft (docs/replication.md): the stores of the
// 3-node group in pipelines/cluster/ (flush: sync) take committed entries
// without an fsync of their own, as the raft log holds them. The leader is
// killed (-9) and restarted: its store kept what it wrote (the page cache),
// and the entry it applies again is de-duplicated. Then every node loses
// power at once: each store drops what it had not fsynced, and every node
// applies those entries again from its raft log after the restart. Nothing
// acknowledged is lost, nothing is stored twice. The same with
// store_fsync: true (each store fsyncs every applied batch itself, the old
// double write): both settings are covered.
func TestVerifyRaftPowerLossOfAllNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	for _, tc := range []struct {
		name       string
		storeFsync bool
		tear       bool // the power loss tears a write (a ferry_faults build)
	}{
		{"log_durable", false, false},
		{"store_fsync", true, false},
		// Half of the first record each store had not fsynced stays
		// on disk: recovery cuts it, and raft applies its entry and the
		// later ones again from the log. (verify's entries hold one
		// message each: the torn record is always its entry's first.)
		{"torn_tail", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := raftFiles
			if tc.storeFsync {
				files = raftFilesWith(t, "store_fsync: true")
			}
			bin, env := ferryBin, []string(nil)
			if tc.tear {
				bin, env = ferrytest.BinaryWithTags(t, "ferry_faults"), []string{envPowerLossTear + "=1"}
			}
			r, stdout := verifyRaftPowerLossAll(t, bin, files, env, "kill:leader@2s-2500ms,power-loss:all@7s-8s")
			if !strings.Contains(stdout, "verdict: pass") {
				t.Fatalf("verdict:\n%s", stdout)
			}
			if r.Result.Lost != 0 || r.Result.Duplicated != 0 || r.Result.Unexpected != 0 || r.Result.OutOfOrder != 0 || r.Result.Acked < 100 {
				t.Fatalf("result: %+v\n%s", r.Result, stdout)
			}
			t.Logf("acked %d, stored %d", r.Result.Acked, r.Result.Stored)
		})
	}
}

// raftFilesWith copies the pipelines of raftFiles into a temporary
// directory with one more key of the raft plugin's config (after
// leader_lease_timeout, at its indent) and returns the copies' paths.
func raftFilesWith(t *testing.T, key string) []string {
	t.Helper()
	dir := t.TempDir()
	const anchor = "      leader_lease_timeout: 250ms\n"
	var out []string
	for _, f := range raftFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(anchor)) {
			t.Fatalf("%s has no line %q to put %q after", f, anchor, key)
		}
		b = bytes.Replace(b, []byte(anchor), []byte(anchor+"      "+key+"\n"), 1)
		path := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, path)
	}
	return out
}

// The negative control: the power loss with the re-apply disabled (the test
// build's hook FERRY_FAULT_RAFT_NO_REAPPLY=1: each node trusts the applied
// index it wrote after each batch, as before the stores skipped their
// fsync). After the power loss the stores lack acknowledged messages that
// no node applies again: the check reports them lost.
func TestVerifyRaftPowerLossOfAllNodesControl(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	// Whether a run loses depends on what was not yet fsynced when the
	// power went (a flush may have just covered everything): up to three
	// runs, and the control fails only if none of them loses anything.
	var stdout string
	for attempt := 1; attempt <= 3; attempt++ {
		var r verifyReport
		r, stdout = verifyRaftPowerLossAll(t, bin, raftFiles, []string{"FERRY_FAULT_RAFT_NO_REAPPLY=1"}, "power-loss:all@7s-8s")
		if r.Result.Lost > 0 {
			t.Logf("run %d lost %d of %d acked", attempt, r.Result.Lost, r.Result.Acked)
			return
		}
		t.Logf("run %d: nothing acknowledged was lost (everything had been fsynced); again", attempt)
	}
	t.Fatalf("with the re-apply disabled nothing acknowledged was lost in three runs: the test cannot fail\n%s", stdout)
}

func verifyRaftPowerLossAll(t *testing.T, bin string, files, env []string, faults string) (verifyReport, string) {
	out := t.TempDir()
	args := append([]string{"verify"}, files...)
	args = append(args, "--duration", "12s", "--producers", "2", "--out", out,
		"--faults", faults)
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("running ferry verify: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "results.json")); err != nil {
		t.Fatalf("no report: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	r, c := readClusterReport(t, out)
	if n := len(c.Faults); n == 0 || c.Faults[n-1].Node != "all" {
		t.Fatalf("faults: %+v", c.Faults)
	}
	for _, f := range r.Faults {
		if f.Error != "" {
			t.Fatalf("fault %+v\n%s", f, stdout.String())
		}
	}
	// The power loss was real on every node: each store armed its hook
	// and dropped what it had not fsynced.
	torn := 0
	for _, id := range []string{"raft-1", "raft-2", "raft-3"} {
		b, err := os.ReadFile(filepath.Join(out, "node-"+id+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ferry verify: power loss (storage pid") {
			t.Errorf("node %s's log lacks the power loss", id)
		}
		// The restarted store's recovery found a torn record and cut
		// it (a clean cut at the last fsync leaves zeros, which it
		// takes as the normal end without a word).
		if strings.Contains(string(b), "recovery: torn tail cut") {
			torn++
		}
	}
	t.Logf("%d of 3 nodes' stores cut a torn tail when they restarted", torn)
	if slices.Contains(env, envPowerLossTear+"=1") && torn == 0 {
		t.Errorf("asked for torn writes, but no node's store recovered from one (none had anything unsynced?)")
	}
	return r, stdout.String()
}

// envPowerLossTear is faults_on.go's EnvFaultPowerLossTear (defined only in
// ferry_faults builds; the tests are built without the tag).
const envPowerLossTear = "FERRY_FAULT_POWER_LOSS_TEAR"
