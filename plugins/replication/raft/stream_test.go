package raft

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
)

// warnLog records the warnings of a Peers.
type warnLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *warnLog) Info(string, ...any) {}
func (l *warnLog) Warn(msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprint(append([]any{msg}, args...)...))
}

func (l *warnLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestRaftAnswersComeFromTheMemberDialled: raft takes an answer (here an
// AppendEntries' success: a follower holding the entries) as the member's
// it dialled, by that member's address. A node with a valid certificate
// of the cluster CA for r9 listening where the configuration has r3 is
// refused when r1 dials it, before any request is sent, naming both ids,
// and audited; real hashicorp/raft NetworkTransports on both sides, over
// TLS. Controls: the same answer is taken when the configuration gives
// that address to r9, or to no member.
func TestRaftAnswersComeFromTheMemberDialled(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	r9 := ca.Issue("r9", securitytest.Options{Peer: true})
	r1 := ca.Issue("r1", securitytest.Options{Peer: true})
	tlsOf := func(p securitytest.Pair) security.PeerTLS {
		return security.PeerTLS{CertFile: p.CertFile, KeyFile: p.KeyFile, CAFile: ca.CertFile}
	}
	// The impostor's side: a raft transport answering every AppendEntries
	// with success.
	sp, err := security.NewPeers(security.PeerLink{TLS: tlsOf(r9), Node: "r9"}, "listen", nil)
	if err != nil {
		t.Fatal(err)
	}
	adv, _ := net.ResolveTCPAddr("tcp", "127.0.0.1:0")
	ss, err := newStreamLayer("127.0.0.1:0", adv, sp)
	if err != nil {
		t.Fatal(err)
	}
	ss.advertise = ss.Listener.Addr()
	server := hraft.NewNetworkTransport(ss, 2, 5*time.Second, nil)
	defer server.Close()
	go func() {
		for rpc := range server.Consumer() {
			rpc.Respond(&hraft.AppendEntriesResponse{RPCHeader: hraft.RPCHeader{ID: []byte("r3")}, Term: 7, LastLog: 43, Success: true}, nil)
		}
	}()
	addr := ss.Listener.Addr().String()

	for _, tc := range []struct {
		name  string
		owner map[string]string // raft address → member, as the configuration says
		taken bool
	}{
		{"another member's address", map[string]string{addr: "r3"}, false},
		{"the member's address", map[string]string{addr: "r9"}, true},
		{"no member's address", map[string]string{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &warnLog{}
			cp, err := security.NewPeers(security.PeerLink{TLS: tlsOf(r1), Node: "r1"}, "listen", log)
			if err != nil {
				t.Fatal(err)
			}
			cs, err := newStreamLayer("127.0.0.1:0", adv, cp)
			if err != nil {
				t.Fatal(err)
			}
			cs.owner = func(a string) (string, bool) { id, ok := tc.owner[a]; return id, ok }
			client := hraft.NewNetworkTransport(cs, 2, 5*time.Second, nil)
			defer client.Close()
			var resp hraft.AppendEntriesResponse
			req := &hraft.AppendEntriesRequest{RPCHeader: hraft.RPCHeader{ProtocolVersion: hraft.ProtocolVersionMax, ID: []byte("r1"), Addr: []byte(cs.Listener.Addr().String())},
				Term: 7, PrevLogEntry: 42, PrevLogTerm: 7, Entries: []*hraft.Log{{Index: 43, Term: 7, Type: hraft.LogCommand, Data: []byte("x")}}}
			err = client.AppendEntries("r3", hraft.ServerAddress(addr), req, &resp)
			if tc.taken {
				if err != nil || !resp.Success {
					t.Fatalf("AppendEntries: %v, success %v; want the answer taken", err, resp.Success)
				}
				return
			}
			const both = `certificate is for node "r9" or "localhost", not "r3"`
			if err == nil || resp.Success || !strings.Contains(err.Error(), both) {
				t.Fatalf("AppendEntries: %v, success %v; want refused naming both ids", err, resp.Success)
			}
			if l := log.text(); !strings.Contains(l, "audit: replication peer refused") || !strings.Contains(l, both) {
				t.Errorf("log %q; want the refusal audited naming both", l)
			}
		})
	}
}
