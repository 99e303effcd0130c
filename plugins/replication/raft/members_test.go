package raft

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/security"
)

func liveConfig(ids ...string) hraft.Configuration {
	var c hraft.Configuration
	for _, id := range ids {
		c.Servers = append(c.Servers, hraft.Server{Suffrage: hraft.Voter, ID: hraft.ServerID(id), Address: hraft.ServerAddress("127.0.0.1:7" + id[1:])})
	}
	return c
}

func pipelinePeers(ids ...string) []Peer {
	var ps []Peer
	for _, id := range ids {
		ps = append(ps, Peer{ID: id, Raft: "127.0.0.1:7" + id[1:]})
	}
	return ps
}

// The pipeline's peers and the live configuration: agreement is "", every
// kind of disagreement is named.
func TestMembershipConflict(t *testing.T) {
	for _, tc := range []struct {
		name     string
		node     string
		join     bool
		pipeline []Peer
		live     hraft.Configuration
		want     []string // substrings; none: agreement
	}{
		{name: "agree", node: "n1", pipeline: pipelinePeers("n1", "n2", "n3"), live: liveConfig("n1", "n2", "n3")},
		{name: "group grew", node: "n1", pipeline: pipelinePeers("n1", "n2", "n3"), live: liveConfig("n1", "n2", "n3", "n4"),
			want: []string{"the group has n4, which the pipeline does not list"}},
		{name: "pipeline lists more", node: "n1", pipeline: pipelinePeers("n1", "n2", "n3", "n4"), live: liveConfig("n1", "n2", "n3"),
			want: []string{"the pipeline lists n4, which is not in the group"}},
		{name: "removed", node: "n1", pipeline: pipelinePeers("n1", "n2", "n3"), live: liveConfig("n2", "n3"),
			want: []string{"this node (n1) is not a member of the group"}},
		{name: "address", node: "n1", pipeline: []Peer{{ID: "n1", Raft: "127.0.0.1:71"}, {ID: "n2", Raft: "127.0.0.1:9"}}, live: liveConfig("n1", "n2"),
			want: []string{"the pipeline gives n2 raft address 127.0.0.1:9, the group 127.0.0.1:72"}},
		{name: "joining", node: "n4", join: true, pipeline: pipelinePeers("n1", "n4"), want: []string{"not been added to the group yet"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Plugin{node: tc.node, cfg: Config{Peers: tc.pipeline, Join: tc.join}}
			got := p.conflict(tc.live)
			if len(tc.want) == 0 && got != "" {
				t.Fatalf("conflict %q, want none", got)
			}
			if len(tc.want) > 0 && got == "" {
				t.Fatal("no conflict reported")
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("conflict %q lacks %q", got, w)
				}
			}
		})
	}
}

func membersLog(t *testing.T, index uint64, ch memberChange) *hraft.Log {
	t.Helper()
	b, err := encodeMembers(ch)
	if err != nil {
		t.Fatal(err)
	}
	return &hraft.Log{Index: index, Type: hraft.LogCommand, Data: b}
}

// A members entry records an added node's addresses (looked up after the
// pipeline's peers), durably in members.json and in snapshots; a remove
// drops them; an entry of an unknown op fails and changes nothing.
func TestMembersEntries(t *testing.T) {
	dir := t.TempDir()
	core := newMemCore("orders/0")
	p := &Plugin{node: "n1", dir: dir, log: quietLog(), cfg: Config{Peers: []Peer{{ID: "n1"}, {ID: "n2", Broker: "pipeline:1"}}}}
	f := newFSM(p, context.Background(), core, dir)
	n9 := Peer{ID: "n9", Raft: "r:9", Broker: "b:9", Admin: "a:9"}
	out := f.ApplyBatch([]*hraft.Log{
		membersLog(t, 1, memberChange{Op: "add", Peer: n9}),
		membersLog(t, 2, memberChange{Op: "add", Peer: Peer{ID: "n2", Broker: "log:2"}}),
		membersLog(t, 3, memberChange{Op: "bogus", Peer: Peer{ID: "n7"}}),
	})
	if out[0] != nil || out[1] != nil {
		t.Fatalf("applies: %v", out)
	}
	if err, ok := out[2].(error); !ok || !strings.Contains(err.Error(), `unknown op "bogus"`) {
		t.Fatalf("an unknown op applied as %v, want its error", out[2])
	}
	if got, ok := p.peer("n9"); !ok || got != n9 {
		t.Fatalf("peer n9: %v %v, want %v", got, ok, n9)
	}
	if got, _ := p.peer("n2"); got.Broker != "pipeline:1" {
		t.Errorf("peer n2's broker %q: the pipeline comes first", got.Broker)
	}
	if _, ok := p.peer("n7"); ok {
		t.Error("n7 recorded by an entry that failed")
	}
	if f.applied != 3 {
		t.Errorf("applied %d, want 3", f.applied)
	}
	// Durable: a plugin started again reads the table.
	q := &Plugin{dir: dir}
	if err := q.loadMembers(); err != nil {
		t.Fatal(err)
	}
	if got, ok := q.peer("n9"); !ok || got != n9 {
		t.Fatalf("after a restart peer n9: %v %v", got, ok)
	}
	// In snapshots.
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.(*snapshot).Members["n9"]; got != n9 {
		t.Errorf("snapshot members n9 %v", got)
	}
	// Catch-up peers include the added node (its admin address).
	found := false
	for _, peer := range p.catchUpPeers() {
		found = found || peer.ID == "n9"
	}
	if !found {
		t.Errorf("catch-up peers %v lack n9", p.catchUpPeers())
	}
	f.ApplyBatch([]*hraft.Log{membersLog(t, 4, memberChange{Op: "remove", Peer: Peer{ID: "n9"}})})
	if _, ok := p.peer("n9"); ok {
		t.Error("n9 still recorded after its remove entry")
	}
	// Replayed entries (at or below the applied index) are skipped.
	f.ApplyBatch([]*hraft.Log{membersLog(t, 1, memberChange{Op: "add", Peer: n9})})
	if _, ok := p.peer("n9"); ok {
		t.Error("an entry replayed below the applied index was applied again")
	}
	if _, err := os.Stat(filepath.Join(dir, membersFile)); err != nil {
		t.Error(err)
	}
}

// ChangeMembers is served behind the admin listener's peer handshake: a
// caller without the cluster secret is refused before the call reaches the
// plugin; one with it reaches it.
func TestChangeMembersNeedsTheClusterSecret(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	peers, err := security.NewPeers(security.PeerLink{SecretFile: secret}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(peers.GRPC()))
	ferryv1.RegisterReplicaLinkServer(srv, &admin{p: &Plugin{node: "n1", log: quietLog()}})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	call := func(p *security.Peers) error {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(p.GRPC()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = ferryv1.NewReplicaLinkClient(cc).ChangeMembers(ctx, &ferryv1.ChangeMembersRequest{Op: "remove", Id: "n2"})
		return err
	}
	plain, err := security.NewPeers(security.PeerLink{}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = call(plain)
	if status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "raft is starting") {
		t.Errorf("without the secret: %v, want refused at the handshake", err)
	}
	// With it the call reaches the plugin (no raft running here).
	if err := call(peers); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "raft is starting") {
		t.Errorf("with the secret: %v, want the plugin's answer", err)
	}
}
