package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// clusterReport is the part of a cluster run's results.json these tests read.
type clusterReport struct {
	Replication    string   `json:"replication"`
	Nodes          []string `json:"nodes"`
	tornTails      int      // stores that cut a torn tail at restart (the power-loss tests count it from the logs)
	LostAtFailover int      `json:"lost_at_failover"`
	FailoverLag    int64    `json:"failover_lag_ns"`
	Result         struct {
		Weak int `json:"acked_weak"`
	} `json:"result"`
	NodeStores []nodeStore `json:"node_stores"`
	Faults     []struct {
		Kind     string `json:"kind"`
		Target   string `json:"target"`
		Node     string `json:"node"`
		Failover bool   `json:"failover"`
	} `json:"faults"`
}

// nodeStore is one node's read-back in results.json.
type nodeStore struct {
	Node        string `json:"node"`
	Role        string `json:"role"`
	Behind      bool   `json:"behind"`
	MissingHeld int    `json:"missing_held"`
	Error       string `json:"error"`
	Result      *struct {
		Stored     int `json:"stored"`
		Lost       int `json:"lost"`
		Duplicated int `json:"duplicated"`
		Unexpected int `json:"unexpected"`
		OutOfOrder int `json:"out_of_order"`
		WrongOff   int `json:"wrong_offset"`
	} `json:"result"`
}

func readClusterReport(t *testing.T, dir string) (verifyReport, clusterReport) {
	t.Helper()
	r := readVerifyReport(t, dir) // validates the schema and the picture
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c clusterReport
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return r, c
}

var raftFiles = []string{"../../pipelines/cluster/raft-1.yaml", "../../pipelines/cluster/raft-2.yaml", "../../pipelines/cluster/raft-3.yaml"}

// ferry verify of the 3-node raft group in pipelines/cluster/: the leader
// killed (-9) and restarted, paused (SIGSTOP) longer than the election
// timeout, cut off from its peers (every byte on its links dropped), its
// links reset, its replication plugin killed, and a node's links delayed.
// Raft commits on a quorum: nothing acknowledged is lost, and every fault
// was injected on a node of the cluster.
func TestVerifyRaftClusterUnderLeaderFaults(t *testing.T) {
	out := t.TempDir()
	args := append([]string{"verify"}, raftFiles...)
	args = append(args, "--duration", "16s", "--producers", "2", "--out", out,
		"--faults", "kill:leader@2s-3500ms,pause:leader@5s-7s,partition:leader@8500ms-10500ms,delay:raft-2@11500ms-13s,kill:replication@12s,reset:leader@14s")
	stdout, stderr, code := runFerry(t, nil, args...)
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r, c := readClusterReport(t, out)
	if r.Result.Lost != 0 || r.Result.Duplicated != 0 || r.Result.Unexpected != 0 || r.Result.OutOfOrder != 0 || r.Result.Acked < 100 {
		t.Fatalf("result: %+v", r.Result)
	}
	if c.Replication != "raft" || len(c.Nodes) != 3 || len(c.Faults) != 6 {
		t.Fatalf("cluster report: %+v", c)
	}
	for i, f := range r.Faults {
		if f.Error != "" || f.Healed < f.Injected || c.Faults[i].Node == "" {
			t.Errorf("fault %+v (%+v)", f, c.Faults[i])
		}
	}
	for _, id := range []string{"raft-1", "raft-2", "raft-3"} {
		if _, err := os.Stat(filepath.Join(out, "node-"+id+".log")); err != nil {
			t.Errorf("no log of node %s: %v", id, err)
		}
	}
	logs := ""
	for _, id := range c.Nodes {
		b, _ := os.ReadFile(filepath.Join(out, "node-"+id+".log"))
		logs += string(b)
	}
	for _, want := range []string{"kill -9 of the node and its plugins", "SIGSTOP to the node", "SIGCONT to the node", "partition: every link of", "black-holed", "delayed 100ms", "kill -9 of the replication plugin", "reset: every link of"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the node logs lack %q", want)
		}
	}
}

// Master–slave (pipelines/cluster/master.yaml and slave.yaml): the slave is
// cut off from its master, and while it is the master dies (its machine:
// SIGKILL, links cut); verify promotes the slave. A consumer group follows
// it (then its consumer is killed) and drains it. Async replication acked
// what the slave never got: verify must see that lag lost and count it as
// what async permits (the negative control: the checker sees loss). Sync
// replication acked nothing OK the slave lacked: nothing may be lost.
func TestVerifyMasterKillFailover(t *testing.T) {
	files := []string{"../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml"}
	for _, mode := range []string{"async", "sync"} {
		t.Run(mode, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"verify"}, files...)
			args = append(args, "--duration", "10s", "--producers", "2", "--groups", "1", "--out", out, "--faults", "partition:slave@2s-6s,kill:master@4s,kill:consumer@7s")
			stdout, stderr, code := runFerry(t, []string{"FERRY_PLUGINS__REPLICATION__TYPE=" + mode}, args...)
			if code != 0 || !strings.Contains(stdout, "verdict: pass") {
				t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
			}
			r, c := readClusterReport(t, out)
			if c.Replication != mode || len(c.Faults) != 3 || !c.Faults[1].Failover || c.Faults[1].Node != "master" {
				t.Fatalf("cluster report: %+v\n%s", c, stdout)
			}
			// The group followed the promoted slave and drained it:
			// every stored message delivered, in order, none a stranger.
			if len(r.Groups) != 1 {
				t.Fatalf("groups: %+v", r.Groups)
			}
			if g := r.Groups[0]; g.Missing != 0 || g.Unexpected != 0 || g.OutOfOrder != 0 || g.Restarts < 2 {
				t.Fatalf("group %+v\n%s", g, stdout)
			}
			if r.Result.Duplicated != 0 || r.Result.Unexpected != 0 || r.Result.OutOfOrder != 0 {
				t.Fatalf("result: %+v", r.Result)
			}
			switch mode {
			case "async":
				if r.Result.Lost == 0 || c.LostAtFailover != r.Result.Lost || c.FailoverLag <= 0 {
					t.Fatalf("lost %d, lost at failover %d, lag %d ns: want the lag the slave missed lost and reported\n%s", r.Result.Lost, c.LostAtFailover, c.FailoverLag, stdout)
				}
				if !strings.Contains(stdout, "lost at the master's death") {
					t.Errorf("the table does not say what the failover cost:\n%s", stdout)
				}
			case "sync":
				if r.Result.Lost != 0 || r.Result.Acked == 0 {
					t.Fatalf("sync replication lost %d of %d acknowledged\n%s", r.Result.Lost, r.Result.Acked, stdout)
				}
				// The partition did cut the slave off: the master
				// answered weaker than OK meanwhile.
				if c.Result.Weak == 0 {
					t.Fatalf("no send was acked weaker than OK: the partition did not cut the slave off\n%s", stdout)
				}
			}
		})
	}
}

// Consumer groups and power loss on the 3-node raft group: two groups
// consume from the leader and follow it while the leader is killed, the
// groups' consumers are killed (-9, between processing and commit), and the
// leader loses power (its file store drops what it did not fsync: with
// flush sync, nothing acknowledged). After the heal every group drains
// through the public API. Raft with flush sync may lose nothing
// acknowledged; a group must deliver every stored message, in each key's
// order, and nothing no producer sent. Redelivery is permitted (at least
// once) and reported: a commit may not yet have gone through the raft log
// when the leader died.
func TestVerifyRaftClusterGroupsAndPowerLoss(t *testing.T) {
	out := t.TempDir()
	args := append([]string{"verify"}, raftFiles...)
	args = append(args, "--duration", "14s", "--producers", "2", "--groups", "2", "--out", out,
		"--faults", "kill:leader@2s-3500ms,kill:consumer@5500ms,power-loss:leader@8s-9s,kill:consumer@11s")
	stdout, stderr, code := runFerry(t, nil, args...)
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r, c := readClusterReport(t, out)
	if r.Result.Lost != 0 || r.Result.Duplicated != 0 || r.Result.Unexpected != 0 || r.Result.OutOfOrder != 0 || r.Result.Acked < 100 {
		t.Fatalf("result: %+v\n%s", r.Result, stdout)
	}
	if len(c.Faults) != 4 || c.Faults[2].Kind != "power-loss" || c.Faults[2].Node == "" {
		t.Fatalf("faults: %+v", c.Faults)
	}
	for _, f := range r.Faults {
		if f.Error != "" {
			t.Errorf("fault %+v", f)
		}
	}
	if len(r.Groups) != 2 {
		t.Fatalf("groups: %+v", r.Groups)
	}
	for _, g := range r.Groups {
		if g.Missing != 0 || g.Lost != 0 || g.Unexpected != 0 || g.OutOfOrder != 0 || g.NotStored != 0 || g.Delivered != r.Result.Stored {
			t.Errorf("group %+v (stored %d)", g, r.Result.Stored)
		}
		if g.Restarts < 2 {
			t.Errorf("group %s: %d consumer restarts, want at least the 2 kills", g.Group, g.Restarts)
		}
		t.Logf("group %s: delivered %d, redelivered %d, restarts %d", g.Group, g.Delivered, g.Redelivered, g.Restarts)
	}
	// Every node's own store was read back after healing and holds
	// everything the leader does (raft with flush sync).
	if len(c.NodeStores) != 3 {
		t.Fatalf("node stores: %+v", c.NodeStores)
	}
	for _, ns := range c.NodeStores {
		if ns.Result == nil || ns.MissingHeld != 0 || ns.Result.Lost != 0 || ns.Result.Duplicated != 0 || ns.Result.Unexpected != 0 || ns.Result.OutOfOrder != 0 || ns.Result.WrongOff != 0 || ns.Result.Stored != r.Result.Stored {
			t.Errorf("node %s (%s): %+v %+v (the leader stored %d)", ns.Node, ns.Role, ns, ns.Result, r.Result.Stored)
		}
	}
	// The power loss was real: the leader's store armed its hook and
	// dropped what it had not fsynced.
	b, err := os.ReadFile(filepath.Join(out, "node-"+c.Faults[2].Node+".log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"power-loss hook armed", "ferry verify: power loss (storage pid"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("node %s's log lacks %q", c.Faults[2].Node, want)
		}
	}
	cl, _ := os.ReadFile(filepath.Join(out, "consumers.log"))
	if !strings.Contains(string(cl), "kill -9 of the consumer") {
		t.Errorf("consumers.log lacks the consumer kills")
	}
}

// The negative control of the read-back from every node: a master–slave
// pair with sync replication whose slave's store (testdata/holeystore, a
// test-only plugin) loses every 5th message of a queue after acknowledging
// it. The master holds everything, so the run's Result (read
// from the master) is clean; only the slave's own read-back sees the loss,
// and the verdict must fail naming the slave.
func TestVerifyFailsALossOnlyTheSlaveHas(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "ferry-storage-holey"), "./testdata/holeystore").CombinedOutput(); err != nil {
		t.Fatalf("build holeystore: %v\n%s", err, out)
	}
	slave := filepath.Join(dir, "slave.yaml")
	if err := os.WriteFile(slave, []byte(`name: cluster-ms
node: {id: slave, role: slave}
plugins:
  dirs: [`+dir+`]
  storage: {type: holey}
  transport: {type: grpc, config: {listen: 127.0.0.1:7172}}
  replication:
    type: sync
    config: {listen: 127.0.0.1:7272, peers: [127.0.0.1:7271], min_replicas: 1, timeout: 3s}
topics: [{name: orders, queues: 4}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	stdout, stderr, code := runFerry(t, nil, "verify", "../../pipelines/cluster/master.yaml", slave,
		"--duration", "4s", "--producers", "2", "--groups", "0", "--faults", "kill:transport@1500ms", "--out", out)
	if code != 1 || !strings.Contains(stdout, "verdict: fail") || !strings.Contains(stdout, "node slave (slave): ") || !strings.Contains(stdout, "the leader holds are missing from its store after healing") {
		t.Fatalf("exit %d, want 1 and a failed verdict naming the slave's loss\n%s\n%s", code, stdout, stderr)
	}
	r, c := readClusterReport(t, out)
	if r.Result.Lost != 0 || r.Result.Acked < 8 {
		t.Fatalf("the master's result: %+v: want nothing lost there", r.Result)
	}
	if len(c.NodeStores) != 2 {
		t.Fatalf("node stores: %+v", c.NodeStores)
	}
	for _, ns := range c.NodeStores {
		if ns.Result == nil {
			t.Fatalf("node %s not read back: %+v", ns.Node, ns)
		}
		switch ns.Node {
		case "master":
			if ns.Role != "leader" || ns.Result.Lost != 0 {
				t.Errorf("master: %+v %+v", ns, *ns.Result)
			}
		case "slave":
			// About a fifth of what it holds.
			if ns.Role != "slave" || ns.Result.Lost == 0 || ns.MissingHeld != ns.Result.Lost || ns.Result.Lost > r.Result.Acked/3 || ns.Result.Stored+ns.Result.Lost < r.Result.Acked {
				t.Errorf("slave: %+v %+v (acked %d)", ns, *ns.Result, r.Result.Acked)
			}
		}
	}
}

// The end-to-end control of the group checks on a cluster: a raft run whose
// group's consumer (a ferry_faults build, FERRY_FAULT_CONSUME) takes every
// 7th message as processed without delivering it and holds every 5th back
// past the next one (each consumer process counts its own: small numbers,
// so that a slow run on a loaded machine still has some), while the leader is killed and the group follows the
// new one. The topic loses nothing, so only the group checks can fail the
// run: the verdict must name the group's missing and out-of-order messages.
func TestVerifyFailsAGroupThatLosesOnACluster(t *testing.T) {
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	t0 := time.Now()
	defer func() { t.Logf("the verify run took %s", time.Since(t0).Round(time.Second)) }()
	out := t.TempDir()
	args := append([]string{"verify"}, raftFiles...)
	args = append(args, "--duration", "6s", "--producers", "2", "--groups", "1", "--drain-timeout", "5s", "--out", out, "--faults", "kill:leader@2s-3s")
	stdout, stderr, code := runFerryBin(t, bin, []string{"FERRY_FAULT_CONSUME=skip:7,hold:5"}, args...)
	if code != 1 || !strings.Contains(stdout, "verdict: fail") {
		t.Fatalf("exit %d, want 1 and a failed verdict\n%s\n%s", code, stdout, stderr)
	}
	r, c := readClusterReport(t, out)
	if r.Result.Lost != 0 || r.Result.Duplicated != 0 || r.Result.OutOfOrder != 0 || r.Result.Acked < 10 {
		t.Fatalf("the topic's result: %+v: want it clean", r.Result)
	}
	if len(c.Faults) != 1 || c.Faults[0].Node == "" || r.Faults[0].Error != "" {
		t.Fatalf("faults: %+v %+v", c.Faults, r.Faults)
	}
	if len(r.Groups) != 1 {
		t.Fatalf("groups: %+v", r.Groups)
	}
	g := r.Groups[0]
	// About one in 7 of what the group was given; redeliveries after the
	// leader's kill may deliver a few of them after all.
	if g.Missing == 0 || g.Missing > r.Result.Stored/4 || g.OutOfOrder == 0 || g.Unexpected != 0 {
		t.Fatalf("group %+v (stored %d): want missing and out-of-order deliveries", g, r.Result.Stored)
	}
	for _, want := range []string{
		fmt.Sprintf("group %s never delivered %d stored message(s)", g.Group, g.Missing),
		fmt.Sprintf("group %s delivered %d acknowledged message(s) of a key for the first time after a later one", g.Group, g.OutOfOrder),
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the verdict lacks %q\n%s", want, stdout)
		}
	}
}

// ferry verify of a 3-node raft group whose files secure everything with
// real certificates: the brokers serve mutual TLS (client_ca_file), the
// replication and admin links mutual TLS with the cluster CA and a cluster
// secret. Verify runs the nodes with that TLS, its producers, read-back
// and group present --tls-ca, --tls-cert and --tls-key, its status calls
// the nodes' own link credentials; the leader is killed and the group
// follows it: pass, nothing lost, every node read back. Negative controls:
// without --tls-ca, and under mutual TLS without a client certificate,
// verify refuses before it starts anything, saying what to give; a client
// certificate of another CA fails the run (the brokers refuse it).
func TestVerifyRaftClusterOverTLS(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	other := securitytest.NewCA(t, "other")
	server := ca.Issue("broker", securitytest.Options{})
	app := ca.Issue("verify", securitytest.Options{Client: true})
	stranger := other.Issue("stranger", securitytest.Options{Client: true})
	secret := ca.Secret("cluster.secret", "verify-s3cret-0123456789")
	dir := t.TempDir()
	var files []string
	for i := 1; i <= 3; i++ {
		// Each node's replication certificate names its node id, as a
		// secured cluster needs (tls.verify_node_id).
		peer := ca.Issue(fmt.Sprintf("r%d", i), securitytest.Options{Peer: true, URIs: []string{fmt.Sprintf("ferry://node/r%d", i)}})
		var peers []string
		for j := 1; j <= 3; j++ {
			peers = append(peers, fmt.Sprintf("{id: r%d, raft: 127.0.0.1:%d, broker: 127.0.0.1:%d, admin: 127.0.0.1:%d}", j, 7380+j, 7180+j, 7480+j))
		}
		yaml := fmt.Sprintf(`name: secure-raft
node: {id: r%d}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport:
    type: grpc
    config:
      listen: 127.0.0.1:%d
      tls: {cert_file: %q, key_file: %q, client_ca_file: %q}
  replication:
    type: raft
    config:
      listen: 127.0.0.1:%d
      admin: 127.0.0.1:%d
      peers: [%s]
      tls: {cert_file: %q, key_file: %q, ca_file: %q}
      secret_file: %q
      heartbeat_timeout: 500ms
      election_timeout: 500ms
      leader_lease_timeout: 250ms
topics: [{name: orders, queues: 4}]
`, i, 7180+i, server.CertFile, server.KeyFile, ca.CertFile, 7380+i, 7480+i, strings.Join(peers, ", "), peer.CertFile, peer.KeyFile, ca.CertFile, secret)
		path := filepath.Join(dir, fmt.Sprintf("r%d.yaml", i))
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, path)
	}
	verify := func(extra ...string) (string, string, int, string) {
		out := t.TempDir()
		args := append(append([]string{"verify"}, files...), "--duration", "4s", "--producers", "2", "--groups", "1", "--out", out, "--faults", "kill:leader@1500ms-2500ms")
		t0 := time.Now()
		stdout, stderr, code := runFerry(t, nil, append(args, extra...)...)
		t.Logf("verify %v: %s\n%s", extra, time.Since(t0).Round(100*time.Millisecond), stderr)
		return stdout, stderr, code, out
	}
	for _, c := range []struct {
		extra []string
		want  string
	}{
		{nil, "give --tls-ca, the CA that signed the brokers' certificates"},
		{[]string{"--tls-ca", ca.CertFile}, "asks for mutual TLS: give --tls-cert and --tls-key"},
	} {
		if stdout, stderr, code, _ := verify(c.extra...); code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("verify %v: exit %d, want 1 and %q\n%s%s", c.extra, code, c.want, stdout, stderr)
		}
	}
	stdout, stderr, code, out := verify("--tls-ca", ca.CertFile, "--tls-cert", app.CertFile, "--tls-key", app.KeyFile)
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r, cr := readClusterReport(t, out)
	if r.Result.Lost != 0 || r.Result.Acked < 10 || len(r.Groups) != 1 || r.Groups[0].Missing != 0 || r.Groups[0].Delivered != r.Result.Stored {
		t.Fatalf("result %+v, groups %+v", r.Result, r.Groups)
	}
	if len(cr.Faults) != 1 || cr.Faults[0].Node == "" || r.Faults[0].Error != "" || len(cr.NodeStores) != 3 {
		t.Fatalf("faults %+v %+v, node stores %+v", cr.Faults, r.Faults, cr.NodeStores)
	}
	for _, ns := range cr.NodeStores {
		if ns.Result == nil || ns.Result.Lost != 0 || ns.Result.Stored != r.Result.Stored {
			t.Errorf("node %s: %+v", ns.Node, ns)
		}
	}
	// The links really ran TLS: a plaintext status call is refused.
	b, _ := os.ReadFile(filepath.Join(out, "node-r1.log"))
	if strings.Contains(string(b), "spoke plaintext") {
		t.Errorf("a node was spoken to in plaintext:\n%s", b)
	}
	// The brokers check the client certificate: another CA's fails at
	// the start (a single node of the same transport: a raft group that
	// never formed is slow to stop).
	single := filepath.Join(dir, "single.yaml")
	if err := os.WriteFile(single, []byte(fmt.Sprintf(`name: secure-single
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: 127.0.0.1:7070, tls: {cert_file: %q, key_file: %q, client_ca_file: %q}}}
topics: [{name: orders, queues: 4}]
`, server.CertFile, server.KeyFile, ca.CertFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code = runFerry(t, nil, "verify", single, "--duration", "2s", "--groups", "0", "--faults", "kill:transport@1s",
		"--tls-ca", ca.CertFile, "--tls-cert", stranger.CertFile, "--tls-key", stranger.KeyFile)
	if code != 1 || !strings.Contains(stderr, "refused verify's TLS") {
		t.Fatalf("a client certificate of another CA: exit %d, want 1 and the refusal\n%s\n%s", code, stdout, stderr)
	}
}
