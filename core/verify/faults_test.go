package verify

import (
	"strings"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	fs, err := ParseFaults("kill:storage@3s, kill:broker@5s-7s,kill:transport@1500ms,kill:broker@8s,pause:storage@400ms-1s,pause:broker@2s", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pause:storage@400ms-1s", "kill:transport@1.5s", "pause:broker@2s-3s", "kill:storage@3s", "kill:broker@5s-7s", "kill:broker@8s-9s"}
	if len(fs) != len(want) {
		t.Fatalf("%v", fs)
	}
	for i, f := range fs {
		if f.String() != want[i] {
			t.Errorf("fault %d = %s, want %s", i, f, want[i])
		}
	}
	for _, c := range []struct{ spec, want string }{
		{"kill:broker", "want KIND:TARGET@TIME"},
		{"crash:broker@1s", "the kind must be kill, pause, power-loss, partition, delay or reset"},
		{"partition:broker@1s", "a link fault names a node of a cluster"},
		{"delay:storage@1s", "a link fault names a node of a cluster"},
		{"reset:leader@1s-2s", "a reset takes no end time"},
		{"kill:a/b@1s", `target "a/b"`},
		{"partition:leader@1s-3s,delay:raft-2@2s", "starts while partition:leader@1s-3s lasts"},
		{"pause:consumer@1s", "a consumer can only be killed"},
		{"power-loss:storage@1s", "a power loss hits a node"},
		{"power-loss:consumer@1s", "a power loss hits a node"},
		{"kill:broker@soon", `bad time "soon"`},
		{"kill:broker@5s-4s", `bad end "4s"`},
		{"kill:storage@1s-2s", "a plugin kill takes no end time"},
		{"kill:broker@9500ms", "not within the run's 10s"},
		{"kill:broker@2s-5s,kill:storage@3s", "starts while kill:broker@2s-5s lasts"},
	} {
		if _, err := ParseFaults(c.spec, 10*time.Second); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseFaults(%q) = %v, want an error with %q", c.spec, err, c.want)
		}
	}
}

// The default schedule depends on the seed only, and stays in the run.
func TestDefaultFaults(t *testing.T) {
	a, b := DefaultFaults(20*time.Second, 7, true), DefaultFaults(20*time.Second, 7, true)
	c := DefaultFaults(20*time.Second, 8, true)
	if len(a) != 4 || len(DefaultFaults(20*time.Second, 7, false)) != 3 {
		t.Fatalf("with consumers %v; without %v", a, DefaultFaults(20*time.Second, 7, false))
	}
	if a[0] != b[0] || a[1] != b[1] || a[2] != b[2] {
		t.Fatalf("same seed, different schedules: %v %v", a, b)
	}
	if a[0] == c[0] && a[1] == c[1] && a[2] == c[2] {
		t.Fatalf("seeds 7 and 8 gave the same schedule %v", a)
	}
	for _, f := range fixUntil(a) {
		if f.At <= 0 || f.Until >= 20*time.Second || f.Until < f.At {
			t.Errorf("fault %s outside the run", f)
		}
	}
}

// Cluster faults: a node's id or leader as the target; link faults last
// (partition, delay) or not (reset), and may overlap a node's fault.
func TestParseClusterFaults(t *testing.T) {
	fs, err := ParseFaults("partition:slave@2s-6s,kill:master@4s,reset:leader@7s,delay:raft-2@8s,pause:leader@9500ms-11s,kill:replication@12s", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"partition:slave@2s-6s", "kill:master@4s-5s", "reset:leader@7s", "delay:raft-2@8s-9s", "pause:leader@9.5s-11s", "kill:replication@12s"}
	for i, f := range fs {
		if i >= len(want) || f.String() != want[i] {
			t.Fatalf("faults %v, want %v", fs, want)
		}
	}
	links := 0
	for _, f := range fs {
		if f.link() {
			links++
		}
	}
	if links != 3 {
		t.Errorf("%d link faults in %v, want 3", links, fs)
	}
}

// On a cluster the default schedule's node kill hits the leader, which a
// cluster accepts; the single node's "broker" it refuses (the control).
func TestDefaultFaultsForCluster(t *testing.T) {
	c := &cluster{mode: "raft", election: time.Second}
	single := DefaultFaults(20*time.Second, 7, true)
	refused := 0
	for _, f := range single {
		if c.check(f) != nil {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("the single node's schedule has %d faults a cluster refuses, want 1 (broker): %v", refused, single)
	}
	for _, f := range ForCluster(single) {
		if err := c.check(f); err != nil {
			t.Errorf("cluster schedule: %v", err)
		}
	}
}

// follower names a node of a cluster that follows the leader, for every
// node fault; a node's id that is none of the cluster's is refused naming
// the choices.
func TestClusterFollowerTarget(t *testing.T) {
	c := &cluster{mode: "raft", election: 500 * time.Millisecond, members: []*member{{id: "a"}, {id: "b"}}}
	fs, err := ParseFaults("power-loss:follower@1s-2s,kill:follower@3s,pause:follower@5s-7s,partition:follower@8s-9s", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if err := c.check(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	err = c.check(Fault{Kind: "kill", Target: "c", At: time.Second, Until: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "(the nodes: a, b, or leader, or follower)") {
		t.Fatalf("kill:c: %v", err)
	}
}
