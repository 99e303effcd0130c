package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// A slave's power loss on master–slave (pipelines/cluster/master.yaml and
// slave.yaml, sync replication): the slave's store runs flush: async with a
// flush interval far longer than the run, so the power loss
// (power-loss:follower, the slave) drops everything it held. The master
// holds every batch it acknowledged (flush: sync); the slave starts again
// on its empty store, links to the master and catches up. Nothing
// acknowledged is lost, and the slave's own read-back (every node's store)
// finds it holding every message the master holds, at the offsets
// acknowledged. The loss was real: the slave's store came back with queues
// shorter than the group offsets it had been sent (its recovery moves them
// back and says so). That the slave's read-back fails a run whose slave
// lacks what the master holds is TestVerifyFailsALossOnlyTheSlaveHas.
func TestVerifyMasterSlavePowerLossOfTheSlave(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	master, slave := filepath.Join(dir, "master.yaml"), filepath.Join(dir, "slave.yaml")
	copyFile(t, "../../pipelines/cluster/master.yaml", master, "", "")
	copyFile(t, "../../pipelines/cluster/slave.yaml", slave,
		"      flush: sync                 # a slave confirms a batch once fsynced\n",
		"      flush: async\n      flush_interval: 10m\n")
	out := t.TempDir()
	stdout, stderr, code := runFerry(t, nil, "verify", master, slave, "--duration", "8s", "--producers", "2",
		"--out", out, "--faults", "power-loss:follower@4s-5s")
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r, c := readClusterReport(t, out)
	if r.Result.Lost != 0 || r.Result.Duplicated != 0 || r.Result.Unexpected != 0 || r.Result.OutOfOrder != 0 || r.Result.Acked < 100 {
		t.Fatalf("result: %+v\n%s", r.Result, stdout)
	}
	if c.Replication != "sync" || len(c.Faults) != 1 || c.Faults[0].Kind != "power-loss" || c.Faults[0].Node != "slave" {
		t.Fatalf("the power loss did not hit the slave: %+v\n%s", c.Faults, stdout)
	}
	var ns *nodeStore
	for i := range c.NodeStores {
		if c.NodeStores[i].Node == "slave" {
			ns = &c.NodeStores[i]
		}
	}
	if ns == nil || ns.Role != "slave" || ns.Behind || ns.MissingHeld != 0 || ns.Result == nil ||
		ns.Result.Lost != 0 || ns.Result.WrongOff != 0 || ns.Result.Duplicated != 0 || ns.Result.Stored != r.Result.Stored {
		t.Fatalf("the slave, read back after its power loss: %+v\n%s", ns, stdout)
	}
	log, err := os.ReadFile(filepath.Join(out, "node-slave.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(log, []byte("ferry verify: power loss (storage pid")); n != 1 {
		t.Fatalf("the slave's log has %d power losses, want 1", n)
	}
	// The store came back short: a group offset it had been sent is past
	// the end of its queue.
	short := 0
	for _, m := range regexp.MustCompile(`committed offset is past its queue's end.*`).FindAll(log, -1) {
		committed, end := logInt(m, "committed"), logInt(m, "end")
		if committed >= 0 && end >= 0 && end < committed {
			short++
		}
	}
	if short == 0 {
		t.Fatalf("the slave's store came back with no queue shorter than its group's offset: the power loss dropped nothing\n%s", log)
	}
	t.Logf("acked %d, stored %d; the slave came back short on %d queue(s) and caught up to %d", r.Result.Acked, r.Result.Stored, short, ns.Result.Stored)
}

// copyFile copies a pipeline file, replacing old (which must be there) by
// new when old is not empty.
func copyFile(t *testing.T, from, to, old, new string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("%s has no %q", from, old)
		}
		b = bytes.Replace(b, []byte(old), []byte(new), 1)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// logInt is the integer field name=N of a log line, or -1.
func logInt(line []byte, name string) int64 {
	m := regexp.MustCompile(`\b` + name + `=(\d+)`).FindSubmatch(line)
	if m == nil {
		return -1
	}
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}
