package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// The replication plugins' data plane: the broker's Replicate calls and the
// plugin's calls to its core (Apply, Read, NodeInfo, SetRole, commits) travel
// on the shared-memory rings, as storage's and transport's do.

// pluginGenerations returns the generations of kind's plugin that the node's
// log says were started on the ring data plane, and on any other.
func pluginGenerations(out, kind string) (ring, other []string) {
	re := regexp.MustCompile(`plugin\.` + kind + `/\S+: plugin started: pid=\d+ generation=(\d+) data_plane=(\S*)`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if m[2] == "ring/1" {
			ring = append(ring, m[1])
		} else {
			other = append(other, m[1])
		}
	}
	return ring, other
}

// A replication plugin that writes garbage into its ring under load (a
// fault-injection build) is replaced with fresh rings; sync replication
// answers the sends caught in between with an error, never OK, and every
// message answered OK is on the slave: nothing acked is lost.
func TestFaultReplicationRingGarbage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	once := filepath.Join(t.TempDir(), "fired")
	// Both nodes and their plugins inherit it; the first replication
	// plugin to read its 300th frame (the master's or the slave's) fires.
	t.Setenv("FERRY_FAULT_RING", "replication:garbage:300")
	t.Setenv("FERRY_FAULT_RING_ONCE", once)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "sync", mb, mr, []string{sr}, "1s")
	slave := writeNode(t, "slave", "slave", "sync", sb, sr, []string{mr}, "1s")
	master.logLevel, slave.logLevel = "info", "info"
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	eventually(t, 60*time.Second, "slave linked to master", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	})
	for _, n := range []*clusterNode{master, slave} {
		if ring, other := pluginGenerations(n.out.String(), "replication"); len(ring) != 1 || len(other) != 0 {
			t.Fatalf("%s: replication plugin generations on the rings %v, on another data plane %v; want one, on the rings", n.id, ring, other)
		}
	}
	l := startLoad(t, mb, 4)
	eventually(t, 60*time.Second, "the fault fired", func() bool {
		_, err := os.Stat(once)
		return err == nil
	})
	// The node whose plugin broke the protocol starts a new one, again on
	// fresh rings, and the pair links up again.
	eventually(t, 60*time.Second, "a replication plugin replaced, on the rings", func() bool {
		for _, n := range []*clusterNode{master, slave} {
			if ring, _ := pluginGenerations(n.out.String(), "replication"); len(ring) >= 2 {
				return true
			}
		}
		return false
	})
	eventually(t, 60*time.Second, "slave linked to master again", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	})
	okAfter := l.count(ferryv1.Status_STATUS_OK)
	eventually(t, 60*time.Second, "sends acked OK after the replacement", func() bool {
		return l.count(ferryv1.Status_STATUS_OK) >= okAfter+200
	})
	l.halt()
	for _, n := range []*clusterNode{master, slave} {
		if _, other := pluginGenerations(n.out.String(), "replication"); len(other) != 0 {
			t.Fatalf("%s: replication plugin generations %v not on the rings", n.id, other)
		}
	}
	v := check(l, readLog(t, sb))
	t.Logf("acked OK %d; on the slave %d stored: lost %d, duplicated %d, unexpected %d", v.ok, v.stored, v.lost, v.dup, v.unexpected)
	if v.ok == 0 || v.lost != 0 || v.unexpected != 0 {
		t.Fatalf("acked OK %d: lost %d, unexpected %d on the slave", v.ok, v.lost, v.unexpected)
	}
	if v.dup != 0 {
		t.Errorf("%d messages stored twice on the slave", v.dup)
	}
}
