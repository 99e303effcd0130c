package verify

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// lagRun is a run in which the master died at 4s and its slave was master
// at 5s: m0 was acknowledged at 1s, m1 at 3.5s, m2 at 6s (by the new
// master), m3 at 7s; lost names which of them are not stored.
func lagRun(replication string, lost ...string) *Report {
	start := time.Unix(0, 0)
	var sends []Send
	var stored []Stored
	gone := map[string]bool{}
	for _, id := range lost {
		gone[id] = true
	}
	for i, at := range []time.Duration{time.Second, 3500 * time.Millisecond, 6 * time.Second, 7 * time.Second} {
		id := []string{"m0", "m1", "m2", "m3"}[i]
		sends = append(sends, Send{ID: id, Key: "k", Seq: int64(i), Start: start.Add(at - time.Millisecond), Latency: time.Millisecond, Outcome: OutcomeOK, Queue: 0, Offset: int64(i)})
		if !gone[id] {
			stored = append(stored, Stored{ID: id, Key: "k", Queue: 0, Offset: int64(i)})
		}
	}
	rep := &Report{Replication: replication, Mode: "sync", Duration: 10 * time.Second,
		Faults: []FaultRecord{{Fault: Fault{Kind: "kill", Target: "master", At: 4 * time.Second}, Injected: 4 * time.Second, Healed: 5 * time.Second, Node: "master", Failover: true}}}
	rep.Result = Check(sends, stored)
	summarize(rep, sends, start)
	return rep
}

// The verdict on a loss at a master's death depends on the replication:
// async may lose what the dead master acknowledged (the lag, counted and
// reported), sync and raft may not; a loss of what the new master
// acknowledged fails under every replication. The checker can fail.
func TestVerdictAtFailover(t *testing.T) {
	for _, c := range []struct {
		replication string
		lost        []string
		pass        bool
		atFailover  int
		why         string
	}{
		{"async", nil, true, 0, ""},
		{"async", []string{"m0", "m1"}, true, 2, ""},
		{"async", []string{"m1", "m2"}, false, 1, "async replication may lose only what a master acknowledged before it died"},
		{"sync", []string{"m1"}, false, 0, "sync replication acknowledges OK only once a slave holds the message"},
		{"raft", []string{"m1"}, false, 0, "raft replication commits on a quorum"},
		{"sync", nil, true, 0, ""},
	} {
		rep := lagRun(c.replication, c.lost...)
		if (rep.Verdict == "pass") != c.pass || rep.LostAtFailover != c.atFailover {
			t.Errorf("%s, lost %v: verdict %s, lost at failover %d; want pass %v, %d (%v)", c.replication, c.lost, rep.Verdict, rep.LostAtFailover, c.pass, c.atFailover, rep.Reasons)
		}
		if c.why != "" && (len(rep.Reasons) == 0 || !strings.Contains(rep.Reasons[0], c.why)) {
			t.Errorf("%s, lost %v: reasons %v, want %q", c.replication, c.lost, rep.Reasons, c.why)
		}
	}
	// The lag: from m0's ack (1s) to the death (4s).
	if rep := lagRun("async", "m0", "m1"); rep.FailoverLag != 3*time.Second {
		t.Errorf("failover lag %s, want 3s", rep.FailoverLag)
	}
}

// The files of pipelines/cluster/ rewritten for a run: no address of the
// files is left, every peer's raft address is a proxy of verify's to that
// peer's new listener, and each node has a data dir of its own.
func TestClusterRewritesPortsAndPeers(t *testing.T) {
	for _, files := range [][]string{
		{"../../pipelines/cluster/raft-1.yaml", "../../pipelines/cluster/raft-2.yaml", "../../pipelines/cluster/raft-3.yaml"},
		{"../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml"},
	} {
		dir := t.TempDir()
		c, err := newCluster("ferry", files, dir, dir)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range c.members {
			data, err := os.ReadFile(m.n.p.path)
			if err != nil {
				t.Fatal(err)
			}
			s := string(data)
			for _, old := range []string{":71", ":72", ":73", ":74", ":91", "data/cluster"} {
				if strings.Contains(s, old) {
					t.Errorf("%s as run still has %q:\n%s", files[i], old, s)
				}
			}
			for j, o := range c.members {
				if i == j {
					continue
				}
				if px := c.px[i][j]; px.Target() != o.repl || !strings.Contains(s, px.Addr()) {
					t.Errorf("%s: its link to %s is not the proxy %s -> %s:\n%s", m.id, o.id, px.Addr(), o.repl, s)
				}
			}
			if !strings.Contains(s, filepath.Join(dir, m.id, "data")) {
				t.Errorf("%s: data dir not under the run's dir:\n%s", m.id, s)
			}
			m.n.logf.Close()
		}
		c.closeProxies()
	}
}

// A cluster run in this process (so that -race sees verify's own
// goroutines): on async master–slave a partition of the slave runs alongside
// the master's death and a reset of the new master's links. The failover
// happens once, the slave is promoted, the lag is counted as what async
// permits, and nothing else breaks.
func TestClusterRunOverlappingFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	t.Setenv("FERRY_PLUGINS__REPLICATION__TYPE", "async")
	faults, err := ParseFaults("partition:slave@1500ms-4s,kill:master@3s,reset:leader@5s", 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Options{
		Pipelines: []string{"../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml"},
		Exe:       ferrytest.Binary(t), Duration: 7 * time.Second, Producers: 2, Size: 64, Faults: faults, OutDir: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler), // the faults break streams on purpose
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verdict != "pass" || rep.Replication != "async" || len(rep.Faults) != 3 {
		t.Fatalf("verdict %s %v, replication %s, faults %+v", rep.Verdict, rep.Reasons, rep.Replication, rep.Faults)
	}
	for _, f := range rep.Faults {
		if f.Error != "" {
			t.Errorf("fault %s: %s", f.Fault, f.Error)
		}
	}
	if kill := rep.Faults[1]; !kill.Failover || kill.Node != "master" {
		t.Errorf("the master's kill: %+v, want a failover", kill)
	}
	if reset := rep.Faults[2]; reset.Node != "slave" {
		t.Errorf("the reset hit %q, want the promoted slave, the leader then", reset.Node)
	}
	if rep.Result.Lost != rep.LostAtFailover || rep.Result.Acked == 0 {
		t.Errorf("lost %d, at the failover %d, acked %d", rep.Result.Lost, rep.LostAtFailover, rep.Result.Acked)
	}
}

// A group's verdict on a cluster: delivering what the topic does not hold
// is permitted after a master–slave failover (the dead master served what
// its slave never got) and fails without one; a group that missed a
// stored message, delivered a stranger or a key's message after a later
// one fails with or without a failover.
func TestGroupVerdictOnCluster(t *testing.T) {
	for _, c := range []struct {
		name     string
		failover bool
		g        GroupResult
		fail     string
	}{
		{"clean", false, GroupResult{Delivered: 4}, ""},
		// A group's duplicates (redeliveries) are permitted and said
		// so in the table; the failing cases below are the controls.
		{"redelivered", false, GroupResult{Delivered: 4, Redelivered: 3}, ""},
		{"not stored after a failover", true, GroupResult{Delivered: 5, NotStored: 1}, ""},
		{"not stored without one", false, GroupResult{Delivered: 5, NotStored: 1}, "the topic does not hold"},
		{"missing", true, GroupResult{Delivered: 3, Missing: 1}, "never delivered 1 stored"},
		{"unexpected", true, GroupResult{Delivered: 5, Unexpected: 1}, "that no producer sent"},
		{"out of order", true, GroupResult{Delivered: 4, OutOfOrder: 1}, "for the first time after a later one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := lagRun("sync")
			if !c.failover {
				rep.Faults[0].Failover = false
			}
			g := c.g
			g.Group = "g"
			rep.Groups = []*GroupResult{&g}
			rep.Reasons, rep.Verdict = nil, ""
			summarize(rep, nil, time.Unix(0, 0))
			switch {
			case c.fail == "" && rep.Verdict != "pass":
				t.Fatalf("verdict %s: %v", rep.Verdict, rep.Reasons)
			case c.fail != "" && (rep.Verdict != "fail" || !strings.Contains(strings.Join(rep.Reasons, "; "), c.fail)):
				t.Fatalf("verdict %s: %v, want a failure with %q", rep.Verdict, rep.Reasons, c.fail)
			}
			if g.Redelivered > 0 {
				var table strings.Builder
				if err := rep.WriteTable(&table); err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("redelivered %d (duplicates: at least once permits them, not a failure)", g.Redelivered); !strings.Contains(table.String(), want) {
					t.Fatalf("the table does not say the group's duplicates are permitted (%q):\n%s", want, table.String())
				}
			}
		})
	}
}
