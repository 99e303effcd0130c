package raft

import (
	"context"
	"net"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/ferrymq/ferry/core/security"
)

// streamLayer is hashicorp/raft's network layer over TCP with the peer
// handshake: TLS with the cluster CA and the cluster secret, as the config
// says, on every connection before raft reads or writes a byte of it. The
// requests on a connection it accepts must claim the node id the
// handshake bound it to (rpcguard.go).
type streamLayer struct {
	net.Listener // accepted connections shake hands on first use
	peers        *security.Peers
	advertise    net.Addr
	// owner names the member of the group's configuration whose raft
	// address is addr (false before raft runs, or for no member).
	owner func(addr string) (id string, ok bool)
}

var _ hraft.StreamLayer = (*streamLayer)(nil)

// newStreamLayer binds listen.
func newStreamLayer(listen string, advertise net.Addr, peers *security.Peers) (*streamLayer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	return &streamLayer{Listener: peers.NodeListener(ln), peers: peers, advertise: advertise}, nil
}

// Accept takes the next connection, whose raft requests are checked
// against the node id of its handshake.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardedConn{Conn: c, peers: s.peers, owner: s.owner}, nil
}

// Dial connects to a peer's raft listener and shakes hands, within
// timeout. When the links bind node ids and the group's configuration
// gives address to a member, the certificate the peer serves must name
// that member: raft takes every answer on the link (a vote, an
// AppendEntries' success) as that member's, by the id it dialled, and
// never reads the answer's own header, so this is where an answer is
// bound to its node. A peer that is another node (its certificate names
// another id) is refused before raft writes a request on the link,
// logged as `audit: replication peer refused` naming both ids.
func (s *streamLayer) Dial(address hraft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	c, st, err := s.peers.Client(ctx, raw, string(address))
	if err != nil {
		return nil, err
	}
	if s.owner != nil {
		if id, ok := s.owner(string(address)); ok {
			if err := s.peers.CheckServer(st, string(address), []string{id}, "the member the group's configuration gives raft address "+string(address)); err != nil {
				_ = c.Close()
				s.peers.Refused(string(address), err.(*security.PeerError).Reason)
				return nil, err
			}
		}
	}
	return c, nil
}

// Addr is the address peers reach this node at.
func (s *streamLayer) Addr() net.Addr { return s.advertise }
