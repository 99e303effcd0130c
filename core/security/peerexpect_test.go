package security

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security/securitytest"
)

// TestDialNodeChecksTheServersNode: a link dialled to a peer that must be
// one of some node ids (a slave's masters, the raft member at an address)
// is refused at the handshake, naming the ids the certificate holds and
// those expected, when the certificate the peer serves names none of them;
// it reads none of the peer's data. Controls: the right id, no list, and
// links that do not bind node ids (verify_node_id false) are served.
func TestDialNodeChecksTheServersNode(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	spare := ca.Issue("spare", securitytest.Options{Peer: true})
	slave := ca.Issue("slave", securitytest.Options{Peer: true})
	server := mustPeers(t, PeerLink{TLS: node2TLS(spare, ca), Node: "spare"}, nil)
	addr := echoServer(t, server)
	client := mustPeers(t, PeerLink{TLS: node2TLS(slave, ca), Node: "slave"}, nil)
	off := false
	loose := node2TLS(slave, ca)
	loose.VerifyNodeID = &off
	unbound := mustPeers(t, PeerLink{TLS: loose, Node: "slave"}, nil)
	for _, tc := range []struct {
		name   string
		p      *Peers
		ids    []string
		refuse bool
	}{
		{"another node", client, []string{"master", "m2"}, true},
		{"the node", client, []string{"master", "spare"}, false},
		{"no list", client, nil, false},
		{"ids not bound", unbound, []string{"master"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := tc.p.DialNode(ctx, addr, tc.ids, "masters")
			if tc.refuse {
				var pe *PeerError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), `certificate is for node "spare" or "localhost", not "master" or "m2" (masters)`) {
					t.Fatalf("dial: %v; want a refusal naming both", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(c, http2Preface+"\r\nSM\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(c)
			if string(b) != "data\n" {
				t.Fatalf("read %q, %v; want the peer's data", b, err)
			}
		})
	}
	// The gRPC credentials refuse the same at the handshake.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := client.GRPCTo([]string{"master"}, "masters").ClientHandshake(context.Background(), addr, conn); err == nil ||
		!strings.Contains(err.Error(), `not "master" (masters)`) {
		t.Fatalf("gRPC handshake: %v; want refused naming the masters", err)
	}
}
