package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// Replication links secured with mutual TLS (the cluster CA) and the
// cluster secret, with real `ferry run` processes; each test has its
// negative controls: processes that lack the certificate, the CA or the
// secret are refused, say why, and receive no data.

// peerLink is the tls and secret_file keys of a replication config (flow
// style, without braces), for a node with certificate pair, trusting
// caFile, knowing secretFile ("" for none).
func peerLink(pair securitytest.Pair, caFile, secretFile string) string {
	s := fmt.Sprintf("tls: {cert_file: %q, key_file: %q, ca_file: %q}", pair.CertFile, pair.KeyFile, caFile)
	if secretFile != "" {
		s += fmt.Sprintf(", secret_file: %q", secretFile)
	}
	return s
}

// writeLinkedNode writes a master–slave node whose replication config has
// the extra keys link (peerLink; "" for a plaintext node).
func writeLinkedNode(t *testing.T, id, role, mode, broker, repl string, peers []string, link string) *clusterNode {
	t.Helper()
	dir := t.TempDir()
	if link != "" {
		link = ", " + link
	}
	yaml := fmt.Sprintf(`name: secure
node: {id: %s, role: %s, data_dir: %s}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q}}
  replication:
    type: %s
    config: {listen: %q, peers: [%s], min_replicas: 1, timeout: 3s%s}
topics:
  - {name: orders, queues: 4}
`, id, role, filepath.Join(dir, "data"), broker, mode, repl, `"`+strings.Join(peers, `","`)+`"`, link)
	path := filepath.Join(dir, id+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return &clusterNode{id: id, role: role, broker: broker, repl: repl, yaml: path}
}

func mustPeerLink(t *testing.T, l security.PeerLink) *security.Peers {
	t.Helper()
	p, err := security.NewPeers(l, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitOutput waits until a node's output holds every one of want.
func waitOutput(t *testing.T, n *clusterNode, what string, want ...string) {
	t.Helper()
	eventually(t, 60*time.Second, what, func() bool {
		out := n.out.String()
		for _, w := range want {
			if !strings.Contains(out, w) {
				return false
			}
		}
		return true
	})
}

// A sync master–slave pair over mutual TLS with the cluster secret
// replicates under load, and when the master is SIGKILLed and the slave
// promoted (`ferry cluster promote SLAVE.yaml`, which takes the link's
// credentials from the pipeline), nothing acked OK is lost. Negative
// controls: a plaintext slave and a slave with another CA's certificate
// (but the right secret) follow the same master; the master refuses both,
// logging why, each says why it was refused, neither stores a message nor
// is listed as a replica; an impostor with a valid certificate of the
// cluster CA for node "spare" (and the secret) that claims to be the
// slave, in its handshake or only in its Follow request, is refused
// naming both ids, before any data; and `ferry cluster status` without
// credentials is refused.
func TestSecureMasterSlaveFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	ca := securitytest.NewCA(t, "cluster")
	other := securitytest.NewCA(t, "other")
	secret := ca.Secret("cluster.secret", "s3cret-0123456789abcdef")
	mPair, sPair := ca.Issue("master", securitytest.Options{Peer: true}), ca.Issue("slave", securitytest.Options{Peer: true})
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeLinkedNode(t, "master", "master", "sync", mb, mr, []string{sr}, peerLink(mPair, ca.CertFile, secret))
	// The impostor master: a master with a certificate of the cluster CA
	// (and the secret) for node "spare" that says it is node "master",
	// at an address the slave asks who is master.
	spare := ca.Issue("spare", securitytest.Options{Peer: true})
	xb, xr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	xmaster := writeLinkedNode(t, "master", "master", "sync", xb, xr, []string{ferrytest.FreeAddr(t)},
		strings.Replace(peerLink(spare, ca.CertFile, secret), "}", ", verify_node_id: false}", 1))
	xmaster.id = "impostor-master"
	slave := writeLinkedNode(t, "slave", "slave", "sync", sb, sr, []string{mr, xr}, peerLink(sPair, ca.CertFile, secret))
	pb, pr, fb, fr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	plain := writeLinkedNode(t, "plain", "slave", "sync", pb, pr, []string{mr}, "")
	foreign := writeLinkedNode(t, "foreign", "slave", "sync", fb, fr, []string{mr},
		peerLink(other.Issue("foreign", securitytest.Options{Peer: true}), ca.CertFile, secret))
	// The impostor: a certificate of the cluster CA (and the secret) for
	// node "spare", claiming to be the slave.
	ib, ir := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	// (Its own side does not check its own certificate, or it would not start.)
	impostor := writeLinkedNode(t, "slave", "slave", "sync", ib, ir, []string{mr},
		strings.Replace(peerLink(spare, ca.CertFile, secret), "}", ", verify_node_id: false}", 1))
	impostor.id = "impostor"
	peers := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: sPair.CertFile, KeyFile: sPair.KeyFile, CAFile: ca.CertFile}, SecretFile: secret})
	ctx := context.Background()
	for _, n := range []*clusterNode{master, xmaster} {
		n.logLevel = "info"
		n.start(t, bin)
	}
	// Both masters up before the slave asks who is master (it asks again
	// only once its link ends).
	off := false // a tool's link, as ferry cluster's: it checks no node id
	tool := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: spare.CertFile, KeyFile: spare.KeyFile, CAFile: ca.CertFile, VerifyNodeID: &off}, SecretFile: secret})
	eventually(t, 60*time.Second, "both masters answering", func() bool {
		_, err1 := clusterStatusVia(ctx, tool, mr)
		_, err2 := clusterStatusVia(ctx, tool, xr)
		return err1 == nil && err2 == nil
	})
	for _, n := range []*clusterNode{slave, plain, foreign, impostor} {
		n.logLevel = "info"
		n.start(t, bin)
	}
	eventually(t, 60*time.Second, "slave linked to master over TLS", func() bool {
		st, err := clusterStatusVia(ctx, peers, sr)
		return err == nil && st.LeaderConnected
	})
	waitOutput(t, master, "the master's refusals of both intruders",
		"replication peer refused", "requires TLS and the peer spoke plaintext", "not signed by the cluster CA")
	waitOutput(t, plain, "the plaintext slave told why", "requires TLS and the peer spoke plaintext")
	waitOutput(t, foreign, "the foreign slave told why", "replication link to peer refused")
	waitOutput(t, master, "the master's refusal of the impostor, naming both ids", "replication peer refused",
		`claims node id \"slave\" but its certificate is for node \"spare\"`)
	waitOutput(t, impostor, "the impostor told why", "replication link to peer refused", "claims node id")
	if st, err := clusterStatusVia(ctx, peers, sr); err != nil || st.LeaderAddress != mb {
		t.Errorf("the slave follows %s at %s (%v); want the master, broker %s", st.GetLeaderNode(), st.GetLeaderAddress(), err, mb)
	}

	l := startLoad(t, mb, 4)
	eventually(t, 60*time.Second, "200 sends acked OK", func() bool { return l.count(ferryv1.Status_STATUS_OK) >= 200 })
	st, err := clusterStatusVia(ctx, peers, mr)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Replicas {
		if r.Node != "slave" || r.Address != sb {
			t.Errorf("the master lists replica %q (%s): only the slave (%s) may link", r.Node, r.Address, sb)
		}
	}
	// The impostor's certificate on a Follow that claims the slave's id
	// only in the request (a handshake without a node id, as a tool's):
	// refused before any data, naming both ids.
	sp := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: spare.CertFile, KeyFile: spare.KeyFile, CAFile: ca.CertFile}, SecretFile: secret})
	if msgs, err := followVia(sp, mr, &ferryv1.FollowRequest{Node: "slave", Address: ir}); !namesBoth(err, "slave", "spare") || msgs != 0 {
		t.Errorf("a Follow claiming to be the slave with spare's certificate: %d messages, %v; want refused naming both ids", msgs, err)
	}
	// `ferry cluster status` with the link's credentials as flags.
	out, err := exec.Command(bin, "cluster", "status", "--nodes", mr+","+sr, "--peer-ca", ca.CertFile,
		"--peer-cert", sPair.CertFile, "--peer-key", sPair.KeyFile, "--secret-file", secret).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "master (") || strings.Contains(string(out), "unreachable") {
		t.Errorf("ferry cluster status with --peer-* flags: %v\n%s", err, out)
	}
	master.kill(t)
	l.halt()
	eventually(t, 30*time.Second, "slave sees its master gone", func() bool {
		st, err := clusterStatusVia(ctx, peers, sr)
		return err == nil && !st.LeaderConnected
	})
	eventually(t, 30*time.Second, "master's replication plugin gone", func() bool {
		_, err := clusterStatusVia(ctx, peers, mr)
		return err != nil
	})

	// Without credentials, `ferry cluster` is refused by the slave.
	out, err = exec.Command(bin, "cluster", "status", "--nodes", sr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "requires TLS") {
		t.Errorf("ferry cluster status without credentials: %v\n%s; want it refused, saying the listener requires TLS", err, out)
	}
	// The impostor master is still up: the slave does not count it as a
	// master reachable, as its certificate is not the master's.
	out, err = exec.Command(bin, "cluster", "promote", slave.yaml).CombinedOutput()
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	waitOutput(t, slave, "the slave's refusal of the impostor master, naming both ids", "replication link to peer refused", xr,
		`claims node id \"master\" but its certificate is for node \"spare\"`)
	waitOutput(t, slave, "the promotion audited", "audit: admin action", "action=Promote", "result=ok", "peer_certificate=slave")
	eventually(t, 30*time.Second, "promoted slave takes produce", func() bool {
		st, err := clusterStatusVia(ctx, peers, sr)
		return err == nil && st.Role == "master"
	})
	v := check(l, readLog(t, sb))
	t.Logf("acked OK %d; on the new master %d stored: lost %d, duplicated %d, unexpected %d", v.ok, v.stored, v.lost, v.dup, v.unexpected)
	if v.ok == 0 || v.lost != 0 || v.dup != 0 || v.unexpected != 0 {
		t.Fatalf("acked OK %d: lost %d, duplicated %d, unexpected %d", v.ok, v.lost, v.dup, v.unexpected)
	}
	for _, n := range []*clusterNode{plain, foreign, impostor} {
		if got := readLog(t, n.broker); len(got) != 0 {
			t.Errorf("%s, refused, stored %d messages", n.id, len(got))
		}
	}
}

// A 3-node raft group whose raft traffic, catch-up and status listeners
// speak mutual TLS with the cluster secret elects a leader, commits under
// load, and loses nothing acked OK when the leader is SIGKILLed (and
// restarted). Negative controls: a fourth raft process with a certificate
// of the cluster CA but the wrong secret, naming the group's nodes as its
// peers, is refused by them (they log why; it never stores a message or
// gets a vote); an impostor with the right secret and a valid certificate
// for node r9 that claims to be r2 is refused naming both ids (and never
// stores a message or leads); a catch-up (Follow) claiming r1 with r9's
// certificate is refused naming both, while r9 claiming r9 is served; a
// catch-up with another CA's certificate and a plain status call are
// refused before any data. Each node has its own certificate, naming its
// node id.
func TestSecureRaftGroupFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	// ferry_faults: FERRY_FAULT_RAFT_NO_RPC_CHECK=1 in the test's
	// environment turns the nodes' check of raft requests off (the
	// negative control of raftImpostor).
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	ca := securitytest.NewCA(t, "cluster")
	other := securitytest.NewCA(t, "other")
	secret := ca.Secret("cluster.secret", "raft-s3cret-0123456789")
	wrong := ca.Secret("wrong.secret", "raft-WRONG-0123456789")
	// One certificate per node, naming its node id; r9's is the
	// intruders'.
	var pair securitytest.Pair
	for _, id := range []string{"r1", "r2", "r3", "r9"} {
		pair = ca.Issue(id, securitytest.Options{Peer: true})
	}
	nodeFile := func(file string) string {
		return filepath.Join(filepath.Dir(file), "{{node}}"+strings.TrimPrefix(filepath.Base(file), "r9"))
	}
	nodes := raftGroupVia(t, 3, nil, "tls: {cert_file: "+fmt.Sprintf("%q", nodeFile(pair.CertFile))+", key_file: "+fmt.Sprintf("%q", nodeFile(pair.KeyFile))+
		", ca_file: "+fmt.Sprintf("%q", ca.CertFile)+"}\nsecret_file: "+fmt.Sprintf("%q", secret)+"\n")
	peers := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.CertFile}, SecretFile: secret})
	var seeds []string
	for _, nd := range nodes {
		nd.peers = peers
		nd.logLevel = "info" // the audit lines
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	leader, st := waitLeader(t, nodes, "a raft leader over TLS")
	t.Logf("%s leads in term %d", leader.id, st.Epoch)

	// The intruders: the group's nodes and itself as peers, with r9's
	// certificate. With no raft state each bootstraps and campaigns.
	// r9 has the wrong secret; the impostor the right one, but it claims
	// to be r2 (in place of r2 in its peers).
	intruder := func(id string, secretFile string) *raftNode {
		intr := &raftNode{clusterNode: &clusterNode{id: id, broker: ferrytest.FreeAddr(t), repl: ferrytest.FreeAddr(t)}, admin: ferrytest.FreeAddr(t)}
		var ps []string
		for _, nd := range append(append([]*raftNode{}, nodes...), intr) {
			if nd.id == id && nd != intr {
				continue
			}
			ps = append(ps, fmt.Sprintf("{id: %s, raft: %q, broker: %q, admin: %q}", nd.id, nd.repl, nd.broker, nd.admin))
		}
		dir := t.TempDir()
		intr.yaml = filepath.Join(dir, id+".yaml")
		if err := os.WriteFile(intr.yaml, []byte(fmt.Sprintf(`name: raft-faults
node: {id: %s, data_dir: %s}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q}}
  replication:
    type: raft
    config:
      listen: %q
      admin: %q
      peers: [%s]
      tls: {cert_file: %q, key_file: %q, ca_file: %q, verify_node_id: %t}
      secret_file: %q
topics:
  - {name: orders, queues: 4}
`, id, filepath.Join(dir, "data"), intr.broker, intr.repl, intr.admin, strings.Join(ps, ", "), pair.CertFile, pair.KeyFile, ca.CertFile,
			id == "r9", // the impostor's own side does not check its own certificate, or it would not start
			secretFile)), 0o644); err != nil {
			t.Fatal(err)
		}
		intr.logLevel = "info"
		intr.start(t, bin)
		return intr
	}
	intr := intruder("r9", wrong)
	impostor := intruder("r2", secret)
	for _, want := range []string{"wrong cluster secret", `claims node id \"r2\" but its certificate is for node \"r9\"`} {
		eventually(t, faultWait, "the group's refusal: "+want, func() bool {
			for _, nd := range nodes {
				if strings.Contains(nd.out.String(), want) {
					return true
				}
			}
			return false
		})
	}

	// Another CA's certificate on the catch-up, and a plain status call.
	foreign := other.Issue("foreign", securitytest.Options{Peer: true})
	fp := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile, CAFile: ca.CertFile}, SecretFile: secret})
	cc, err := grpc.NewClient(leader.admin, grpc.WithTransportCredentials(fp.GRPC()))
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	stream, err := ferryv1.NewReplicaLinkClient(cc).Follow(fctx)
	if err == nil {
		if err = stream.Send(&ferryv1.FollowRequest{Node: "x", Ends: []*ferryv1.QueueOffsets{{Topic: "orders", Queue: 0, End: 0, Committed: 1 << 40}}}); err == nil {
			var resp *ferryv1.FollowResponse
			if resp, err = stream.Recv(); err == nil {
				t.Errorf("a catch-up with another CA's certificate was served: %d messages", len(resp.Messages))
			}
		}
	}
	cancel()
	cc.Close()
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("catch-up with another CA's certificate: %v; want a certificate error", err)
	}
	if _, err := clusterStatus(context.Background(), leader.admin); err == nil || !strings.Contains(err.Error(), "requires TLS") {
		t.Errorf("plain status call: %v; want refused, saying the listener requires TLS", err)
	}

	// A promote sent to a raft node's admin listener is refused, and the
	// refusal audited with the caller's certificate.
	out, err := exec.Command(bin, "cluster", "promote", "--node", nodes[1].admin, "--force", "--peer-ca", ca.CertFile,
		"--peer-cert", pair.CertFile, "--peer-key", pair.KeyFile, "--secret-file", secret).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "raft elects its leader") {
		t.Errorf("ferry cluster promote of a raft node: %v\n%s; want refused, saying raft elects its leader", err, out)
	}
	waitOutput(t, nodes[1].clusterNode, "the refused promote audited", "audit: admin action", "action=Promote",
		"node="+nodes[1].id, "force=true", "raft elects its leader", "peer_certificate=r9")

	l := startClusterLoad(t, seeds, 4, false)
	l.waitOK(t, nodes, time.Time{}, 100, 0, "sends acked OK over TLS")

	// A catch-up by a holder of r9's certificate (and the secret) that
	// claims to be r1 in its Follow request: refused before any data,
	// naming both ids; and one that claims r1 in its handshake too.
	for _, claim := range []string{"", "r1"} {
		off := false // the impostor's side does not check its own certificate
		ip := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.CertFile, VerifyNodeID: &off}, SecretFile: secret, Node: claim})
		msgs, err := catchUpVia(ip, leader.admin, "r1")
		if !namesBoth(err, "r1", "r9") || msgs != 0 {
			t.Errorf("a catch-up claiming r1 with r9's certificate (handshake claim %q): %d messages, %v; want refused naming both ids", claim, msgs, err)
		}
	}
	// Control: r9's certificate claiming r9 is served (it is a catch-up
	// of the cluster's CA and secret; r9 is no member, which raft's
	// catch-up does not ask).
	if msgs, err := catchUpVia(mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.CertFile}, SecretFile: secret, Node: "r9"}), leader.admin, "r9"); err != nil || msgs == 0 {
		t.Errorf("control: a catch-up claiming r9 with r9's certificate: %d messages, %v; want served", msgs, err)
	}
	raftImpostor(t, nodes, leader, pair, ca.CertFile, secret)
	leader, _ = waitLeader(t, nodes, "the leader before the kill")
	t0 := time.Now()
	leader.kill(t)
	t.Logf("%s killed leader %s", stamp(), leader.id)
	var next *raftNode
	eventually(t, faultWait, "a new raft leader", func() bool {
		for _, nd := range nodes {
			if nd == leader {
				continue
			}
			if st, err := nd.status(context.Background()); err == nil && st.Role == "leader" {
				next = nd
				return true
			}
		}
		return false
	})
	t.Logf("%s %s leads after %s", stamp(), next.id, time.Since(t0).Round(time.Millisecond))
	l.waitOK(t, nodes, t0, 50, 0, "sends acked OK after the failover")
	leader.start(t, bin)
	l.waitOK(t, nodes, time.Now(), 50, 0, "sends acked OK with the old leader back")
	l.halt()
	convergeAndCheck(t, nodes, &l.load, faultWait)

	for _, in := range []*raftNode{intr, impostor} {
		if got := readLog(t, in.broker); len(got) != 0 {
			t.Errorf("intruder %s (%s), refused, stored %d messages", in.id, in.repl, len(got))
		}
		for _, nd := range nodes {
			if strings.Contains(nd.out.String(), `"leader":"`+in.repl) || strings.Contains(nd.out.String(), "leader-address="+in.repl) {
				t.Errorf("%s followed intruder %s (%s)", nd.id, in.id, in.repl)
			}
		}
		if strings.Contains(in.out.String(), "entering leader state") {
			t.Errorf("intruder %s (%s) became leader:\n%s", in.id, in.repl, in.out.String())
		}
	}
	for _, nd := range nodes {
		if strings.Contains(nd.out.String(), `"leader-id":"r9"`) {
			t.Errorf("%s followed the intruder", nd.id)
		}
	}
}

// raftImpostor speaks hashicorp/raft to a follower of the group from the
// test process, over a link whose handshake r9's certificate binds to
// node r9 (pair): a RequestVote claiming r9 from an address no member has
// is answered (raft refuses the vote: r9 is no member); requests that
// claim to be another member (a RequestVote, an AppendEntries, a
// TimeoutNow), or claim r9 from that member's raft address, are refused: the link is closed before raft
// takes them, and the follower's audit line names both ids.
func raftImpostor(t *testing.T, nodes []*raftNode, leader *raftNode, pair securitytest.Pair, caFile, secret string) {
	t.Helper()
	// The follower it speaks to, and the member it claims to be.
	var follower, r2 *raftNode
	for _, nd := range nodes {
		if nd != leader && follower == nil {
			follower = nd
		}
	}
	for _, nd := range nodes {
		if nd != follower && r2 == nil {
			r2 = nd
		}
	}
	peers := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: caFile}, SecretFile: secret, Node: "r9"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := hraft.NewNetworkTransport(&dialStream{Listener: ln, peers: peers}, 1, 20*time.Second, io.Discard)
	defer trans.Close()
	hdr := func(id, addr string) hraft.RPCHeader {
		return hraft.RPCHeader{ProtocolVersion: hraft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
	}
	target := hraft.ServerAddress(follower.repl)
	fid := hraft.ServerID(follower.id)
	var vote hraft.RequestVoteResponse
	if err := trans.RequestVote(fid, target, &hraft.RequestVoteRequest{RPCHeader: hdr("r9", ln.Addr().String()), Term: 1}, &vote); err != nil {
		t.Errorf("control: a RequestVote claiming r9 on r9's link: %v; want answered", err)
	}
	refusals := []struct {
		what, want string
		send       func() error
	}{
		{"a RequestVote claiming " + r2.id, fmt.Sprintf(`sent a raft RequestVote claiming node id \"%s\"`, r2.id), func() error {
			return trans.RequestVote(fid, target, &hraft.RequestVoteRequest{RPCHeader: hdr(r2.id, r2.repl), Term: 1}, &hraft.RequestVoteResponse{})
		}},
		{"an AppendEntries claiming " + r2.id, fmt.Sprintf(`sent a raft AppendEntries claiming node id \"%s\"`, r2.id), func() error {
			return trans.AppendEntries(fid, target, &hraft.AppendEntriesRequest{RPCHeader: hdr(r2.id, r2.repl), Term: 1, Leader: []byte(r2.repl)}, &hraft.AppendEntriesResponse{})
		}},
		{"a RequestVote claiming r9 from " + r2.id + "'s raft address", fmt.Sprintf(`claiming raft address %s, which is node \"%s\"'s`, r2.repl, r2.id), func() error {
			return trans.RequestVote(fid, target, &hraft.RequestVoteRequest{RPCHeader: hdr("r9", r2.repl), Term: 1}, &hraft.RequestVoteResponse{})
		}},
		{"a TimeoutNow claiming " + r2.id, fmt.Sprintf(`sent a raft TimeoutNow claiming node id \"%s\"`, r2.id), func() error {
			return trans.TimeoutNow(fid, target, &hraft.TimeoutNowRequest{RPCHeader: hdr(r2.id, r2.repl)}, &hraft.TimeoutNowResponse{})
		}},
	}
	for _, r := range refusals {
		if err := r.send(); err == nil {
			t.Errorf("%s with r9's certificate was answered: raft took it; want the link closed", r.what)
			continue
		}
		waitOutput(t, follower.clusterNode, "the refusal of "+r.what+", audited naming both ids", "audit: replication peer refused", `node \"r9\" (the id bound to its link at the handshake)`, r.want)
	}
}

// dialStream is a raft stream layer that dials through peers' handshake
// (accepting nothing it is sent).
type dialStream struct {
	net.Listener
	peers *security.Peers
}

func (s *dialStream) Dial(addr hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.peers.Dial(ctx, string(addr))
}

// namesBoth reports whether err refuses a peer that claims node id
// claimed with a certificate for node cert.
func namesBoth(err error, claimed, cert string) bool {
	if err == nil {
		return false
	}
	msg := strings.ReplaceAll(err.Error(), `\"`, `"`) // gRPC quotes a handshake error
	return strings.Contains(msg, fmt.Sprintf(`claims node id %q but its certificate is for node %q`, claimed, cert))
}

// followVia sends req on a Follow stream to a replication listener and
// returns how many messages the first answer carried.
func followVia(p *security.Peers, addr string, req *ferryv1.FollowRequest) (int, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.GRPC()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := ferryv1.NewReplicaLinkClient(cc).Follow(ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(req); err != nil {
		return 0, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return 0, err
	}
	return len(resp.Messages), nil
}

// catchUpVia asks a raft node's admin listener for queue 0 of orders from
// offset 0 as node claim would, and returns how many messages the first
// answer carried.
func catchUpVia(p *security.Peers, admin, claim string) (int, error) {
	return followVia(p, admin, &ferryv1.FollowRequest{Node: claim, Ends: []*ferryv1.QueueOffsets{{Topic: "orders", Queue: 0, End: 0, Committed: 1 << 40}}})
}
