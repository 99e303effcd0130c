package verify

import (
	"strings"
	"testing"
	"time"
)

// nodeRun is a raft run of m0..m3 acknowledged at 1s, 2s, 3s, 4s, all on
// the leader; the follower f lacks lost. Under flush async (interval 500ms)
// a power loss of node at 4.2s (healed at 5s) is in the faults.
func nodeRun(flush, powerLossOf string, lost ...string) *Report {
	start := time.Unix(0, 0)
	var sends []Send
	var all, follower []Stored
	gone := map[string]bool{}
	for _, id := range lost {
		gone[id] = true
	}
	for i := range 4 {
		id := []string{"m0", "m1", "m2", "m3"}[i]
		at := time.Duration(i+1) * time.Second
		sends = append(sends, Send{ID: id, Key: "k", Seq: int64(i), Start: start.Add(at - time.Millisecond), Latency: time.Millisecond, Outcome: OutcomeOK, Queue: 0, Offset: int64(i)})
		s := Stored{ID: id, Key: "k", Queue: 0, Offset: int64(i)}
		all = append(all, s)
		if !gone[id] {
			follower = append(follower, s)
		}
	}
	rep := &Report{Replication: "raft", Mode: "sync", Duration: 10 * time.Second, Flush: flush}
	if flush == "async" {
		rep.FlushInterval = 500 * time.Millisecond
	}
	if powerLossOf != "" {
		rep.Faults = []FaultRecord{{Fault: Fault{Kind: "power-loss", Target: powerLossOf, At: 4200 * time.Millisecond}, Injected: 4200 * time.Millisecond, Healed: 5 * time.Second, Node: powerLossOf}}
	}
	rep.Result = Check(sends, all)
	rep.NodeStores = []*NodeStore{{Node: "l", Role: "leader", Result: rep.Result}, {Node: "f", Role: "follower", Result: Check(sends, follower)}, {Node: "x", Role: "down"}}
	summarize(rep, sends, start)
	return rep
}

// A follower that lacks what the leader holds fails the run, naming the
// node; under flush async it may lack only what it acknowledged within the
// flush window before its own power loss. The checker can fail.
func TestVerdictOnNodeStores(t *testing.T) {
	for _, c := range []struct {
		flush, powerLossOf string
		lost               []string
		pass               bool
		permitted          int
	}{
		{"sync", "", nil, true, 0},
		{"sync", "", []string{"m1"}, false, 0},
		{"sync", "f", []string{"m3"}, false, 0},  // flush sync: nothing
		{"async", "f", []string{"m3"}, true, 1},  // its own power loss, within the window
		{"async", "f", []string{"m2"}, false, 0}, // acked 1.2s before it
		{"async", "l", []string{"m3"}, false, 0}, // another node's power loss
		{"async", "", []string{"m3"}, false, 0},  // no power loss at all
	} {
		rep := nodeRun(c.flush, c.powerLossOf, c.lost...)
		f := rep.NodeStores[1]
		if (rep.Verdict == "pass") != c.pass || f.MissingHeld != len(c.lost) || f.PermittedLoss != c.permitted {
			t.Errorf("flush %s, power loss of %q, follower lacks %v: verdict %s, missing %d, permitted %d; want pass %v, %d, %d (%v)",
				c.flush, c.powerLossOf, c.lost, rep.Verdict, f.MissingHeld, f.PermittedLoss, c.pass, len(c.lost), c.permitted, rep.Reasons)
		}
		if !c.pass && (len(rep.Reasons) == 0 || !strings.Contains(rep.Reasons[0], "node f (follower): 1 acknowledged message(s) the leader holds are missing")) {
			t.Errorf("reasons %v", rep.Reasons)
		}
	}
	// A stranger or a duplicate on a follower fails too; a node that was
	// not read back fails, a failed-over one does not.
	rep := nodeRun("sync", "")
	rep.NodeStores[1].Result.Duplicated = 1
	rep.NodeStores = append(rep.NodeStores, &NodeStore{Node: "g", Role: "follower", Error: "read back: boom"})
	rep.Reasons, rep.Verdict = nil, ""
	summarize(rep, nil, time.Unix(0, 0))
	got := strings.Join(rep.Reasons, "\n")
	for _, want := range []string{"node f (follower): 1 message(s) stored more than once", "node g: its store was not read back after healing: read back: boom"} {
		if !strings.Contains(got, want) {
			t.Errorf("reasons %q lack %q", got, want)
		}
	}
	if strings.Contains(got, "node x") {
		t.Errorf("a failed-over node was judged: %q", got)
	}
}
