package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// NodeURIPrefix starts the URI subject alternative name that names a
// node in its certificate: ferry://node/<node id>.
const NodeURIPrefix = "ferry://node/"

// maxNodeClaim bounds the node id a peer may claim in its handshake.
const maxNodeClaim = 128

// validNodeClaim reports whether s can be sent as a node id in a
// handshake line: printable ASCII without spaces.
func validNodeClaim(s string) bool {
	if s == "" || len(s) > maxNodeClaim {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// NodeNames lists the node ids a peer certificate names: its subject
// common name, each DNS subject alternative name, and the id of each URI
// subject alternative name ferry://node/<id>. A node may claim any of
// them.
func NodeNames(cert *x509.Certificate) []string { return nodeNames(cert, false) }

// nodeNames is NodeNames; with uriOnly, only the URIs' ids
// (tls.require_node_uri).
func nodeNames(cert *x509.Certificate, uriOnly bool) []string {
	if cert == nil {
		return nil
	}
	var names []string
	if cert.Subject.CommonName != "" && !uriOnly {
		names = append(names, cert.Subject.CommonName)
	}
	if !uriOnly {
		names = append(names, cert.DNSNames...)
	}
	for _, u := range cert.URIs {
		if id, ok := strings.CutPrefix(u.String(), NodeURIPrefix); ok && id != "" {
			names = append(names, id)
		}
	}
	return names
}

// VerifyPeerNode checks that the verified certificate of a peer
// connection (state) names the node id it claims, and says otherwise
// with both: the id claimed and the names the certificate holds. No TLS
// (state nil, or no certificate) is nothing to check.
func VerifyPeerNode(state *tls.ConnectionState, claimed string) error {
	return verifyPeerNode(state, claimed, false)
}

// verifyPeerNode is VerifyPeerNode; with uriOnly, only a URI
// ferry://node/<id> names a node (tls.require_node_uri).
func verifyPeerNode(state *tls.ConnectionState, claimed string, uriOnly bool) error {
	if state == nil || len(state.PeerCertificates) == 0 {
		return nil
	}
	names := nodeNames(state.PeerCertificates[0], uriOnly)
	for _, n := range names {
		if n == claimed {
			return nil
		}
	}
	if uriOnly {
		return fmt.Errorf("the peer claims node id %q but its certificate is for node %s: with tls.require_node_uri only a URI %s<id> names a node",
			claimed, certNodes(names), NodeURIPrefix)
	}
	return fmt.Errorf("the peer claims node id %q but its certificate is for node %s: a node's certificate must name its node.id (subject common name, a DNS name or a URI %s<id>)",
		claimed, certNodes(names), NodeURIPrefix)
}

// certNodes quotes a certificate's names for an error.
func certNodes(names []string) string {
	if len(names) == 0 {
		return "(none: no common name, DNS or ferry://node/ URI)"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, " or ")
}

// CheckNode checks, in a gRPC handler of a replication listener, that the
// node id a request claims (a follow or catch-up request's node) is named
// by the certificate of the connection it came on, when the links speak
// TLS and verify node ids. A mismatch is logged as `audit: replication
// peer refused` with both ids and returned as PermissionDenied, before
// the handler reads or writes any data. A nil *Peers checks nothing.
func (p *Peers) CheckNode(ctx context.Context, claimed string) error {
	if p == nil || !p.bindNode {
		return nil
	}
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	if err := verifyPeerNode(&ti.State, claimed, p.uriOnly); err != nil {
		p.logRefusal(pr.Addr.String(), err.Error())
		return status.Error(codes.PermissionDenied, "replication peer refused: "+err.Error())
	}
	return nil
}

// PeerAuditArgs are the keys an audit line of a replication listener's
// handler gives its caller: source (the caller's address) and, under
// mutual TLS, peer_certificate (its certificate's common name).
func PeerAuditArgs(ctx context.Context) []any {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	args := []any{"source", pr.Addr.String()}
	if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		args = append(args, "peer_certificate", ti.State.PeerCertificates[0].Subject.CommonName)
	}
	return args
}

// CheckAnswer checks, on a link this node dialled to addr, that the node
// id the peer answers as (a status answer's node, a follow answer's
// master) is named by the certificate the peer served (pr: the call's
// peer, from grpc.Peer or the stream's context), when the links speak TLS
// and verify node ids: a node of the cluster cannot pass itself off as
// another, say a slave's master. A mismatch is a *PeerError naming both
// ids. A nil *Peers, or links that do not verify node ids, check nothing.
func (p *Peers) CheckAnswer(pr *peer.Peer, addr, claimed string) error {
	if p == nil || !p.bindNode {
		return nil
	}
	var state *tls.ConnectionState
	if pr != nil {
		if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
			state = &ti.State
		}
	}
	if state == nil || len(state.PeerCertificates) == 0 {
		return &PeerError{Peer: addr, Reason: "the peer's answer came on no verified TLS link, so its node id cannot be checked against its certificate"}
	}
	if claimed == "" {
		return &PeerError{Peer: addr, Reason: "the peer answers as no node id: this node's links take only nodes whose certificate names their node.id"}
	}
	if err := verifyPeerNode(state, claimed, p.uriOnly); err != nil {
		return &PeerError{Peer: addr, Reason: err.Error()}
	}
	return nil
}

// NodeIDsVerified reports whether the section binds peers' node ids to
// their certificates: TLS with tls.verify_node_id not false. Only then is
// a peer's node id proven (a cluster secret is one for every node).
func (t PeerTLS) NodeIDsVerified() bool { return t.Enabled() && t.verifiesNodeID() }

// BindsNodes reports whether p's links prove peers' node ids by their
// certificates (PeerTLS.NodeIDsVerified).
func (p *Peers) BindsNodes() bool { return p != nil && p.bindNode }

// CheckServer is checkServer, for a caller that ran Client itself.
func (p *Peers) CheckServer(state *tls.ConnectionState, addr string, ids []string, what string) error {
	return p.checkServer(state, addr, ids, what)
}

// checkServer checks, on a link this node dialled to addr, that the
// certificate the peer served (state) names one of ids, the nodes this
// link may reach (what: the config key listing them, for the error). It
// checks nothing when the links do not bind node ids or ids is empty.
func (p *Peers) checkServer(state *tls.ConnectionState, addr string, ids []string, what string) error {
	if p == nil || !p.bindNode || len(ids) == 0 {
		return nil
	}
	if state == nil || len(state.PeerCertificates) == 0 {
		return &PeerError{Peer: addr, Reason: "the peer served no certificate, so it cannot be the node " + quoteIDs(ids) + " (" + what + ")"}
	}
	names := nodeNames(state.PeerCertificates[0], p.uriOnly)
	for _, n := range names {
		for _, id := range ids {
			if n == id {
				return nil
			}
		}
	}
	return &PeerError{Peer: addr, Reason: fmt.Sprintf("the peer's certificate is for node %s, not %s (%s): refused before any data",
		certNodes(names), quoteIDs(ids), what)}
}

// quoteIDs quotes node ids for an error: "a" or "b".
func quoteIDs(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = fmt.Sprintf("%q", id)
	}
	return strings.Join(q, " or ")
}

// DialNode is Dial to a peer that must be one of the nodes ids (what: the
// config key or the source of the list, for the error): when the links
// bind node ids, the certificate the peer serves must name one of them,
// or the connection is closed before this node writes or reads a byte of
// replication data on it, with a *PeerError naming the ids the
// certificate holds and the ids expected. Empty ids checks what Dial
// checks.
func (p *Peers) DialNode(ctx context.Context, addr string, ids []string, what string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, st, err := p.Client(ctx, conn, addr)
	if err != nil {
		return nil, err
	}
	if err := p.checkServer(st, addr, ids, what); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}
