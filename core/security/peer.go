package security

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/tlsbatch"
)

// PeerTLS is the tls section of a replication plugin: the certificate this
// node serves to its peers and presents to them when it dials (mutual TLS),
// and the cluster CA that must have signed every peer's certificate.
//
//	tls:
//	  cert_file: /etc/ferry/node-1.pem     # server and client auth, naming the node's replication host
//	  key_file: /etc/ferry/node-1-key.pem
//	  ca_file: /etc/ferry/cluster-ca.pem   # the cluster CA
//
// All three are required together. The files are read again when their
// modification time or size changes, at the next handshake.
type PeerTLS struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CAFile   string `json:"ca_file"`
	// VerifyNodeID, true unless set false, binds a peer's certificate to
	// the node id it claims: the id a node sends in its handshake, and in
	// a follow or catch-up request, must be named by its certificate
	// (NodeNames). false lets any certificate of the cluster CA claim any
	// node id, for clusters whose certificates do not name their nodes.
	VerifyNodeID *bool `json:"verify_node_id"`
	// RequireNodeURI, false unless set, names a node only by a URI
	// subject alternative name ferry://node/<id> in its certificate, not
	// by its common name or DNS names: a DNS name several certificates
	// share (a wildcard, a load balancer's name) then names no node.
	RequireNodeURI bool `json:"require_node_uri"`
}

// Enabled reports whether the section asks for TLS.
func (t PeerTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" }

// verifiesNodeID reports whether peers' certificates must name the node
// id they claim (the default under TLS).
func (t PeerTLS) verifiesNodeID() bool { return t.VerifyNodeID == nil || *t.VerifyNodeID }

// PeerLink is how a replication plugin secures the links between the
// nodes of its cluster: its tls section and its secret_file, as its config
// holds them.
type PeerLink struct {
	TLS PeerTLS
	// SecretFile names a file holding the cluster secret (at least 16
	// bytes; surrounding whitespace is ignored). Every peer proves it
	// knows the secret by an HMAC-SHA256 challenge on each connection;
	// the secret itself is never sent.
	SecretFile string
	// Node is this node's id (node.id), sent in the handshake of every
	// link it dials, so that the peer can check it against this node's
	// certificate. Empty for a tool (ferry cluster), which claims none.
	Node string
}

// Enabled reports whether peers are authenticated at all.
func (l PeerLink) Enabled() bool { return l.TLS.Enabled() || l.SecretFile != "" }

// minSecret is the shortest cluster secret taken.
const minSecret = 16

// Validate reports every problem of the link's keys, with paths
// "tls.cert_file", "tls.key_file", "tls.ca_file" and "secret_file" under
// prefix ("" for a plugin's own config).
func (l PeerLink) Validate(prefix string) sdk.Problems {
	var ps sdk.Problems
	add := func(key, format string, args ...any) {
		ps = append(ps, sdk.Problem{Path: prefix + key, Message: fmt.Sprintf(format, args...)})
	}
	if t := l.TLS; t.Enabled() {
		missing := false
		for _, k := range []struct{ key, v string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"ca_file", t.CAFile}} {
			if k.v == "" {
				add("tls."+k.key, "is required: peers' TLS needs cert_file, key_file and ca_file (the cluster CA) together")
				missing = true
			}
		}
		if !missing {
			if c, err := loadKeyPair(t.CertFile, t.KeyFile); err != nil {
				add("tls.cert_file", "%v", err)
			} else if err := peerUsage(c.Leaf); err != nil {
				add("tls.cert_file", "certificate %s: %v", t.CertFile, err)
			}
			if _, err := loadPool(t.CAFile); err != nil {
				add("tls.ca_file", "%v", err)
			}
		}
	}
	if l.SecretFile != "" {
		if _, err := readSecret(l.SecretFile); err != nil {
			add("secret_file", "%v", err)
		}
	}
	if l.TLS.VerifyNodeID != nil && !l.TLS.Enabled() {
		add("tls.verify_node_id", "applies only with TLS (tls.cert_file, key_file, ca_file): without certificates a peer's node id cannot be checked")
	}
	if l.TLS.RequireNodeURI && !l.TLS.Enabled() {
		add("tls.require_node_uri", "applies only with TLS (tls.cert_file, key_file, ca_file): without certificates a peer's node id cannot be checked")
	} else if l.TLS.RequireNodeURI && !l.TLS.verifiesNodeID() {
		add("tls.require_node_uri", "contradicts tls.verify_node_id: false: node ids are not checked, so no URI is required")
	}
	return ps
}

// peerUsage checks that a node's certificate may serve and dial: a peer
// both accepts links and opens them with the same certificate.
func peerUsage(leaf *x509.Certificate) error {
	if leaf == nil || len(leaf.ExtKeyUsage) == 0 {
		return nil
	}
	var server, client bool
	for _, u := range leaf.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageAny:
			server, client = true, true
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageClientAuth:
			client = true
		}
	}
	if !server || !client {
		return errors.New("a node's certificate is presented both as a server's and as a client's: its extended key usage must include both serverAuth and clientAuth (or be absent)")
	}
	return nil
}

// readSecret reads a cluster secret file: at least minSecret bytes once
// surrounding whitespace is trimmed, and readable by its owner only.
func readSecret(file string) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster secret: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("cluster secret %s is readable or writable by other users (mode %04o): chmod 600 it", file, m)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster secret: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < minSecret {
		return nil, fmt.Errorf("cluster secret %s holds %d bytes, fewer than %d: make one with `head -c 32 /dev/urandom | base64 > %s`", file, len(b), minSecret, file)
	}
	return b, nil
}

// Peers secures one replication plugin's links: it runs the TLS and
// cluster-secret handshake on every connection it accepts (Server,
// Listener) or opens (Client, Dial), before anything else is read or
// written on it. Built once per plugin (NewPeers); safe for concurrent use.
type Peers struct {
	name string // the listener's config key, for logs ("listen", "admin")
	log  Logger
	tls  *reloader // nil: plaintext
	node string    // this node's id, claimed in the handshakes it dials
	// bindNode: a peer's certificate must name the node id it claims
	// (with tls only).
	bindNode bool
	// uriOnly: only a certificate's ferry://node/ URIs name its node
	// (tls.require_node_uri).
	uriOnly bool

	secretFile string
	mu         sync.Mutex
	secretAt   fileStamp
	secret     []byte
	refusals   map[refusalKey]*refusalLog // what was logged lately, by source host and reason
}

type refusalKey struct{ host, reason string }

type refusalLog struct {
	at         time.Time
	suppressed int
}

// refusalEvery is how often the same refusal of the same host is logged:
// a peer retrying every second would fill the log.
const refusalEvery = 10 * time.Second

// logRefusal logs a refused connection, the first of a kind from a host
// at once, repeats at most every refusalEvery with their count.
func (p *Peers) logRefusal(remote, reason string) {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	k := refusalKey{host, reason}
	now := time.Now()
	p.mu.Lock()
	if p.refusals == nil || len(p.refusals) > 4096 {
		p.refusals = map[refusalKey]*refusalLog{}
	}
	r := p.refusals[k]
	if r != nil && now.Sub(r.at) < refusalEvery {
		r.suppressed++
		p.mu.Unlock()
		return
	}
	repeated := 0
	if r != nil {
		repeated = r.suppressed
	}
	p.refusals[k] = &refusalLog{at: now}
	p.mu.Unlock()
	args := []any{"listener", p.name, "peer", remote, "reason", reason}
	if repeated > 0 {
		args = append(args, "refused_since_last_logged", repeated)
	}
	p.log.Warn("audit: replication peer refused", args...)
}

// A nil *Peers is plaintext links that nobody proves anything on.
//
// NewPeers loads l's files now (failing naming the one that cannot be
// used) and returns the handshakes of a listener or dialler named name in
// logs. Refusals are logged to log (nil: slog's default) as "replication
// peer refused" with the peer's address and why.
func NewPeers(l PeerLink, name string, log Logger) (*Peers, error) {
	if ps := l.Validate(""); len(ps) > 0 {
		return nil, ps
	}
	if log == nil {
		log = nopLogger{}
	}
	if l.Node != "" && !validNodeClaim(l.Node) {
		return nil, fmt.Errorf("node id %q cannot be claimed in a peer handshake: at most %d printable characters without spaces", l.Node, maxNodeClaim)
	}
	p := &Peers{name: name, log: log, secretFile: l.SecretFile, node: l.Node, bindNode: l.TLS.Enabled() && l.TLS.verifiesNodeID(), uriOnly: l.TLS.RequireNodeURI}
	if l.TLS.Enabled() {
		r := &reloader{cfg: TLS{CertFile: l.TLS.CertFile, KeyFile: l.TLS.KeyFile, ClientCAFile: l.TLS.CAFile}, log: log}
		if err := r.reload(r.current()); err != nil {
			return nil, err
		}
		p.tls = r
		if p.bindNode && l.Node != "" {
			// Fail at start rather than be refused by every peer.
			c, err := loadKeyPair(l.TLS.CertFile, l.TLS.KeyFile)
			if err != nil {
				return nil, err
			}
			if err := verifyPeerNode(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}}, l.Node, p.uriOnly); err != nil {
				how := fmt.Sprintf("subject common name, a DNS name or a URI %s%s", NodeURIPrefix, l.Node)
				if p.uriOnly {
					how = fmt.Sprintf("a URI %s%s: tls.require_node_uri takes no other form", NodeURIPrefix, l.Node)
				}
				return nil, sdk.Problems{{Path: "tls.cert_file", Message: fmt.Sprintf(
					"certificate %s is for node %s, not this node (node.id %q): its peers would refuse it. Name the node id in the certificate (%s), or set tls.verify_node_id: false on every node",
					l.TLS.CertFile, certNodes(nodeNames(c.Leaf, p.uriOnly)), l.Node, how)}}
			}
		}
	}
	if _, err := p.currentSecret(); err != nil {
		return nil, err
	}
	return p, nil
}

// requires says what a peer must present, for errors.
func (p *Peers) requires() string {
	switch {
	case p.tls != nil && p.secretFile != "":
		return "TLS with a certificate of the cluster CA and the cluster secret (tls and secret_file in the peer's replication config)"
	case p.tls != nil:
		return "TLS with a certificate of the cluster CA (tls in the peer's replication config)"
	default:
		return "the cluster secret (secret_file in the peer's replication config)"
	}
}

// Secure reports whether the links speak TLS.
func (p *Peers) Secure() bool { return p != nil && p.tls != nil }

// Authenticated reports whether peers must prove they belong to the
// cluster (a certificate of the cluster CA, or the cluster secret).
func (p *Peers) Authenticated() bool { return p != nil && (p.tls != nil || p.secretFile != "") }

// currentSecret is the secret, read again when its file changed; nil
// without a secret_file. A file that no longer loads keeps the previous
// secret (logged).
func (p *Peers) currentSecret() ([]byte, error) {
	if p.secretFile == "" {
		return nil, nil
	}
	st := stamp(p.secretFile)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.secret != nil && st == p.secretAt {
		return p.secret, nil
	}
	s, err := readSecret(p.secretFile)
	if err != nil {
		if p.secret != nil {
			p.secretAt = st
			p.log.Warn("replication: keeping the previous cluster secret", "error", err)
			return p.secret, nil
		}
		return nil, err
	}
	if p.secret != nil {
		p.log.Info("replication: cluster secret reloaded", "secret_file", p.secretFile)
	}
	p.secret, p.secretAt = s, st
	return s, nil
}

// http2Preface starts what a plain gRPC client sends.
const http2Preface = "PRI * HTTP/2.0\r\n"

// plainPeers stands for a nil *Peers: plaintext links, nobody proves
// anything.
var plainPeers = &Peers{name: "replication", log: nopLogger{}}

// refusalDrain bounds how long a refused peer is read after it was told
// why, so that it reads the refusal before the connection closes.
const refusalDrain = 2 * time.Second

// peerHandshakeTimeout bounds a connection's handshake.
const peerHandshakeTimeout = 10 * time.Second

// The peer handshake, after TLS when the link has it; lines of at most
// maxPeerLine bytes. The client (C) dials the server (S):
//
//	C: FERRYPEER/1 HELLO <client nonce> [<node id>]
//	S: FERRYPEER/1 CHALLENGE <server nonce> <1: S has a secret, 0: not>
//	C: FERRYPEER/1 PROOF <HMAC(secret, client…) or ->
//	S: FERRYPEER/1 OK <HMAC(secret, server…) or ->
//
// Either side may answer FERRYPEER/1 ERR <reason> instead and close; a
// server on a TLS port answers that in plaintext to a client that does not
// speak TLS. The HMACs cover both nonces, the role and, under TLS, keying
// material exported from the TLS session, so a proof cannot be replayed on
// another connection or relayed through a man in the middle; they cover
// the node id claimed in HELLO too, so that a relay cannot change the
// claim without the secret. A side with a
// secret requires the other's proof: both prove, or the link is refused.
// A node sends its node id in HELLO (a tool such as ferry cluster sends
// none); under TLS the server refuses it at once unless the client's
// certificate names that id (VerifyPeerNode).
const (
	peerProto   = "FERRYPEER/1"
	maxPeerLine = 512
	nonceSize   = 32
	exportLabel = "EXPORTER-ferry-peer-auth"
)

// PeerError is a refused peer link: why, as logged and as the other side
// is told.
type PeerError struct {
	Peer   string
	Reason string
}

func (e *PeerError) Error() string { return "replication peer " + e.Peer + ": " + e.Reason }

// Server runs the server side of the handshake on conn, accepted by the
// listener: it returns the connection to use (the TLS one with TLS), or
// an error once conn is closed and the refusal logged.
func (p *Peers) Server(conn net.Conn) (net.Conn, *tls.ConnectionState, error) {
	c, st, _, err := p.server(conn, false)
	return c, st, err
}

// server is Server; with node, a link that verifies node ids (TLS) takes
// only a peer that runs the handshake and claims its node id (the
// listener of NodeListener). It also returns the node id the peer claimed
// in its handshake ("" for none).
func (p *Peers) server(conn net.Conn, node bool) (net.Conn, *tls.ConnectionState, string, error) {
	if p == nil {
		p = plainPeers
	}
	remote := conn.RemoteAddr().String()
	raw := conn
	_ = conn.SetDeadline(time.Now().Add(peerHandshakeTimeout))
	refuse := func(reason string, tell bool) (net.Conn, *tls.ConnectionState, string, error) {
		if tell {
			_, _ = fmt.Fprintf(conn, "%s ERR %s\n", peerProto, reason)
			// Let the peer read it: closing with what it sent unread
			// would reset the connection before it does.
			if hc, ok := raw.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
				_ = raw.SetReadDeadline(time.Now().Add(refusalDrain))
				_, _ = io.Copy(io.Discard, io.LimitReader(raw, 1<<20))
			}
		}
		_ = conn.Close()
		p.logRefusal(remote, reason)
		return nil, nil, "", &PeerError{Peer: remote, Reason: reason}
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(conn, first); err != nil {
		return refuse("closed before its handshake: "+err.Error(), false)
	}
	conn = &prefixConn{Conn: conn, prefix: first}
	isTLS := first[0] == 0x16 // a TLS handshake record
	var state *tls.ConnectionState
	switch {
	case p.tls != nil && !isTLS:
		return refuse(fmt.Sprintf("this replication listener (%s) requires TLS and the peer spoke plaintext: set tls (cert_file, key_file, ca_file) in the peer's replication config", p.name), true)
	case p.tls == nil && isTLS:
		return refuse(fmt.Sprintf("the peer speaks TLS and this replication listener (%s) is plaintext: set the same tls section on every node", p.name), false)
	case p.tls != nil:
		conf, err := p.tls.serverConf()
		if err != nil {
			return refuse("tls: "+err.Error(), false)
		}
		raw := tlsbatch.NewRaw(conn) // one socket write per Write (internal/tlsbatch)
		tc := tls.Server(raw, conf)
		if err := tc.Handshake(); err != nil {
			return refuse(tlsReason(err, true), false)
		}
		st := tc.ConnectionState()
		state = &st
		conn = raw.Wrap(tc)
	}
	if !p.Authenticated() && first[0] != peerProto[0] {
		// An open listener takes plain gRPC clients (tools, older nodes)
		// and raft connections as it always has: there is nothing for
		// them to prove. Only a peer that starts the handshake (it has a
		// secret to prove) is answered, and then refused.
		_ = conn.SetDeadline(time.Time{})
		return conn, nil, "", nil
	}
	br := bufio.NewReaderSize(conn, maxPeerLine)
	if b, err := br.Peek(1); err != nil {
		return refuse("closed before its handshake: "+err.Error(), false)
	} else if b[0] != peerProto[0] {
		if state != nil && p.secretFile == "" && node && p.bindNode {
			return refuse(fmt.Sprintf("the peer sent no Ferry peer handshake, so no node id to check against its certificate: this replication listener (%s) takes only nodes of the cluster", p.name), true)
		}
		if state != nil && p.secretFile == "" {
			// Mutual TLS alone: the certificate the handshake verified
			// against the cluster CA is the credential, so a plain gRPC
			// client over mutual TLS (grpcurl, say) is taken too.
			if br.Buffered() > 0 {
				conn = &prefixConn{Conn: conn, prefix: drain(br)}
			}
			_ = conn.SetDeadline(time.Time{})
			return conn, state, "", nil
		}
		// A plain gRPC client or raft connection: no credentials at all.
		return refuse(fmt.Sprintf("the peer sent no credentials (no Ferry peer handshake): this replication listener (%s) requires %s", p.name, p.requires()), true)
	}
	hello, err := readPeerLine(br)
	if err != nil {
		return refuse("not a Ferry replication peer: "+err.Error(), true)
	}
	rest, ok := strings.CutPrefix(hello, peerProto+" HELLO ")
	cnonce, claimed, _ := strings.Cut(rest, " ")
	if !ok || !validNonce(cnonce) || (claimed != "" && !validNodeClaim(claimed)) {
		return refuse(fmt.Sprintf("not a Ferry replication peer (it sent %.40q)", hello), true)
	}
	if claimed == "" && state != nil && node && p.bindNode {
		return refuse(fmt.Sprintf("the peer claimed no node id in its handshake: this replication listener (%s) takes only nodes of the cluster, each with a certificate naming its node.id", p.name), true)
	}
	if claimed != "" && state != nil && p.bindNode {
		// Before anything else is read or written: a node of the cluster
		// that claims another node's id is refused here.
		if err := verifyPeerNode(state, claimed, p.uriOnly); err != nil {
			return refuse(err.Error(), true)
		}
	}
	secret, err := p.currentSecret()
	if err != nil {
		return refuse("cluster secret: "+err.Error(), false)
	}
	snonce := newNonce()
	has := "0"
	if secret != nil {
		has = "1"
	}
	if _, err := fmt.Fprintf(conn, "%s CHALLENGE %s %s\n", peerProto, snonce, has); err != nil {
		return refuse("writing the challenge: "+err.Error(), false)
	}
	proof, err := readPeerLine(br)
	if err != nil {
		return refuse("no proof: "+err.Error(), false)
	}
	mac, ok := strings.CutPrefix(proof, peerProto+" PROOF ")
	if !ok {
		return refuse(fmt.Sprintf("malformed proof %.40q", proof), true)
	}
	binding, err := exported(state)
	if err != nil {
		return refuse(err.Error(), true)
	}
	answer := "-"
	if secret != nil {
		want := peerMAC(secret, "client", cnonce, snonce, binding, claimed)
		got, err := hex.DecodeString(mac)
		if mac == "-" || err != nil || !hmac.Equal(got, want) {
			reason := "wrong cluster secret (secret_file)"
			if mac == "-" {
				reason = "the peer has no cluster secret and this node requires one (secret_file)"
			}
			return refuse(reason, true)
		}
		answer = hex.EncodeToString(peerMAC(secret, "server", cnonce, snonce, binding, claimed))
	} else if mac != "-" {
		return refuse("the peer proves a cluster secret and this node has none: set the same secret_file on every node", true)
	}
	if _, err := fmt.Fprintf(conn, "%s OK %s\n", peerProto, answer); err != nil {
		return refuse("writing the answer: "+err.Error(), false)
	}
	if br.Buffered() > 0 {
		conn = &prefixConn{Conn: conn, prefix: drain(br)}
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, state, claimed, nil
}

// Client runs the client side of the handshake on conn, dialled to addr
// (host:port; its host is the name checked in the peer's certificate). It
// returns the connection to use, or an error (conn closed) that says why
// the peer was refused or refused this node.
func (p *Peers) Client(ctx context.Context, conn net.Conn, addr string) (net.Conn, *tls.ConnectionState, error) {
	if p == nil {
		p = plainPeers
	}
	dl := time.Now().Add(peerHandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = conn.SetDeadline(dl)
	fail := func(reason string) (net.Conn, *tls.ConnectionState, error) {
		_ = conn.Close()
		return nil, nil, &PeerError{Peer: addr, Reason: reason}
	}
	if !p.Authenticated() {
		// Nothing to prove: the connection is what plain gRPC or raft
		// expects (so that this node links with older ones), except that
		// a refusal from a secured listener is read as one.
		_ = conn.SetDeadline(time.Time{})
		return &refusalConn{Conn: conn, addr: addr}, nil, nil
	}
	var state *tls.ConnectionState
	if p.tls != nil {
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		conf, err := p.tls.clientConf(host)
		if err != nil {
			return fail("tls: " + err.Error())
		}
		raw := tlsbatch.NewRaw(conn) // one socket write per Write (internal/tlsbatch)
		tc := tls.Client(raw, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(tlsReason(err, false))
		}
		st := tc.ConnectionState()
		state = &st
		conn = raw.Wrap(tc)
	}
	cnonce := newNonce()
	claim := ""
	if p.node != "" {
		claim = " " + p.node
	}
	if _, err := fmt.Fprintf(conn, "%s HELLO %s%s\n", peerProto, cnonce, claim); err != nil {
		return fail("writing hello: " + err.Error())
	}
	br := bufio.NewReaderSize(conn, maxPeerLine)
	line, err := readPeerLine(br)
	if err != nil {
		return fail(noAnswer(err, p.tls != nil))
	}
	if reason, ok := strings.CutPrefix(line, peerProto+" ERR "); ok {
		return fail("refused this node: " + reason)
	}
	rest, ok := strings.CutPrefix(line, peerProto+" CHALLENGE ")
	snonce, has, _ := strings.Cut(rest, " ")
	if !ok || !validNonce(snonce) || (has != "0" && has != "1") {
		return fail(fmt.Sprintf("not a Ferry replication peer (it answered %.40q)", line))
	}
	secret, err := p.currentSecret()
	if err != nil {
		return fail("cluster secret: " + err.Error())
	}
	if secret != nil && has == "0" {
		return fail("the peer has no cluster secret and this node requires one: set the same secret_file on every node")
	}
	binding, err := exported(state)
	if err != nil {
		return fail(err.Error())
	}
	proof := "-"
	if secret != nil {
		proof = hex.EncodeToString(peerMAC(secret, "client", cnonce, snonce, binding, p.node))
	}
	if _, err := fmt.Fprintf(conn, "%s PROOF %s\n", peerProto, proof); err != nil {
		return fail("writing the proof: " + err.Error())
	}
	line, err = readPeerLine(br)
	if err != nil {
		return fail("no answer to the proof: " + err.Error())
	}
	if reason, ok := strings.CutPrefix(line, peerProto+" ERR "); ok {
		return fail("refused this node: " + reason)
	}
	mac, ok := strings.CutPrefix(line, peerProto+" OK ")
	if !ok {
		return fail(fmt.Sprintf("malformed answer %.40q", line))
	}
	if secret != nil {
		got, err := hex.DecodeString(mac)
		if err != nil || !hmac.Equal(got, peerMAC(secret, "server", cnonce, snonce, binding, p.node)) {
			return fail("the peer does not know the cluster secret (secret_file): refused")
		}
	}
	if br.Buffered() > 0 {
		conn = &prefixConn{Conn: conn, prefix: drain(br)}
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, state, nil
}

// Dial connects to a peer at addr and runs the handshake.
func (p *Peers) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, _, err := p.Client(ctx, conn, addr)
	return c, err
}

// Listener returns ln whose accepted connections run the server side of
// the handshake on their first read or write, in the goroutine that serves
// them (so that a slow peer does not hold up Accept). A refused
// connection is closed and its reads and writes fail.
func (p *Peers) Listener(ln net.Listener) net.Listener { return &peerListener{Listener: ln, p: p} }

// NodeListener is Listener for a listener that only nodes of the cluster
// dial (raft's traffic): when the links verify node ids, a connection must
// run the handshake and claim a node id its certificate names, so that
// mutual TLS alone (a plain client with some certificate of the CA) is not
// enough.
func (p *Peers) NodeListener(ln net.Listener) net.Listener {
	return &peerListener{Listener: ln, p: p, node: true}
}

type peerListener struct {
	net.Listener
	p    *Peers
	node bool // only nodes: see NodeListener
}

func (l *peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lazyConn{raw: c, p: l.p, node: l.node}, nil
}

// lazyConn is an accepted connection whose handshake runs on first use.
type lazyConn struct {
	raw     net.Conn
	p       *Peers
	node    bool
	once    sync.Once
	conn    net.Conn
	err     error
	claimed string // the node id the peer claimed in its handshake
	bound   bool   // claimed is named by the peer's verified certificate
}

func (c *lazyConn) ready() error {
	c.once.Do(func() {
		var st *tls.ConnectionState
		c.conn, st, c.claimed, c.err = c.p.server(c.raw, c.node)
		c.bound = c.err == nil && c.claimed != "" && st != nil && c.p.bindNode
	})
	return c.err
}

// PeerNode runs the handshake of a connection accepted by a Listener or
// NodeListener, if it has not run yet, and returns the node id the peer
// claimed in it ("" for none: a tool, an open listener's plain client)
// and whether the claim is bound to the peer's certificate (TLS with
// tls.verify_node_id: the handshake refused a claim the certificate does
// not name). Without TLS a claimed id is only what the peer said, proved
// by nothing but its knowledge of the cluster secret. A connection of any
// other kind claims nothing. Called by the goroutine that serves the
// connection, before it takes the peer's requests as the node's.
func PeerNode(conn net.Conn) (node string, bound bool, err error) {
	c, ok := conn.(*lazyConn)
	if !ok {
		return "", false, nil
	}
	if err := c.ready(); err != nil {
		return "", false, err
	}
	return c.claimed, c.bound, nil
}

// Refused logs a peer refused after its handshake (by a check of what it
// sent on the link), as the handshake's refusals are: "audit: replication
// peer refused" with the peer's address (remote) and reason, the same
// refusal of the same host at most every 10 s. A nil *Peers logs nothing.
func (p *Peers) Refused(remote, reason string) {
	if p == nil {
		return
	}
	p.logRefusal(remote, reason)
}

func (c *lazyConn) Read(b []byte) (int, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	return c.conn.Read(b)
}

func (c *lazyConn) Write(b []byte) (int, error) {
	if err := c.ready(); err != nil {
		return 0, err
	}
	return c.conn.Write(b)
}

// Close closes the socket (without a TLS close_notify): it may be called
// while the handshake runs, from another goroutine.
func (c *lazyConn) Close() error { return c.raw.Close() }

func (c *lazyConn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *lazyConn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *lazyConn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *lazyConn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *lazyConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// refusalConn is a plaintext client connection whose first read turns a
// secured listener's "FERRYPEER/1 ERR reason" into a PeerError.
type refusalConn struct {
	net.Conn
	addr    string
	checked bool
	refused error
}

func (c *refusalConn) Read(b []byte) (int, error) {
	if c.refused != nil {
		return 0, c.refused
	}
	n, err := c.Conn.Read(b)
	if c.checked || n == 0 {
		return n, err
	}
	c.checked = true
	const refusal = peerProto + " ERR "
	if n < len(refusal) && strings.HasPrefix(refusal, string(b[:n])) {
		// The start of a refusal, perhaps: read up to its prefix.
		m, _ := io.ReadAtLeast(c.Conn, b[n:], min(len(refusal)-n, len(b)-n))
		n += m
	}
	if !strings.HasPrefix(string(b[:n]), refusal) {
		return n, err
	}
	line := string(b[len(refusal):n])
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	} else {
		rest, _ := bufio.NewReaderSize(c.Conn, maxPeerLine).ReadString('\n')
		line += strings.TrimSuffix(rest, "\n")
	}
	// Not closed here: the reader (gRPC's, raft's) closes it on this error,
	// and a write failing on a closed socket meanwhile would hide why.
	c.refused = &PeerError{Peer: c.addr, Reason: "refused this node: " + line}
	return 0, c.refused
}

// prefixConn reads prefix before the rest of the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func drain(br *bufio.Reader) []byte {
	b := make([]byte, br.Buffered())
	_, _ = br.Read(b)
	return b
}

// readPeerLine reads one handshake line (without its newline). On error,
// the bytes read so far are returned with it.
func readPeerLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return string(line), errors.New("handshake line too long")
		}
		return string(line), err
	}
	return strings.TrimSuffix(string(line), "\n"), nil
}

func newNonce() string {
	b := make([]byte, nonceSize)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

func validNonce(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == nonceSize
}

// exported is the TLS session's keying material that binds proofs to
// the connection; empty without TLS.
func exported(st *tls.ConnectionState) ([]byte, error) {
	if st == nil {
		return nil, nil
	}
	b, err := st.ExportKeyingMaterial(exportLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("tls: exporting keying material: %v", err)
	}
	return b, nil
}

// peerMAC is one side's proof of the cluster secret, over both nonces,
// the TLS session's keying material (binding) and the node id the client
// claimed in its hello ("" for none): a hello whose claim was changed on
// the way fails both proofs.
func peerMAC(secret []byte, role, cnonce, snonce string, binding []byte, node string) []byte {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "%s %s %s %s %x %s", peerProto, role, cnonce, snonce, binding, node)
	return m.Sum(nil)
}

// tlsReason says why a TLS handshake with a peer failed, in the terms of
// the config keys.
func tlsReason(err error, server bool) string {
	msg := err.Error()
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown) || strings.Contains(msg, "unknown certificate authority") || strings.Contains(msg, "unknown authority"):
		if server {
			return "tls: the peer's certificate is not signed by the cluster CA (tls.ca_file): " + msg
		}
		return "tls: the peer's certificate is not signed by the cluster CA (tls.ca_file), or the peer does not trust this node's: " + msg
	case server && strings.Contains(msg, "remote error: tls: bad certificate"):
		return "tls: the peer refused this node's certificate (does the peer trust the cluster CA, tls.ca_file?): " + msg
	case strings.Contains(msg, "didn't provide a certificate") || strings.Contains(msg, "certificate required"):
		return "tls: the peer presented no certificate; the cluster requires mutual TLS (tls.cert_file and key_file on every node): " + msg
	case errors.As(err, &hostErr):
		return "tls: the peer's certificate does not name the address dialled: " + msg
	case errors.As(err, &invalid) || strings.Contains(msg, "expired"):
		return "tls: invalid or expired peer certificate: " + msg
	case !server && (errors.Is(err, io.EOF) || strings.Contains(msg, "connection reset")):
		return "tls: the peer closed the connection during the TLS handshake (is its replication listener plaintext? set the same tls section on every node): " + msg
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "tls: the peer does not speak TLS (its replication listener is plaintext: set the same tls section on every node): " + msg
	}
	return "tls handshake: " + msg
}

// noAnswer explains a peer that closed or answered nothing to hello.
func noAnswer(err error, secure bool) string {
	if secure && strings.Contains(err.Error(), "tls:") {
		// TLS 1.3: the server judges this node's certificate after the
		// client's handshake is done, and says so with an alert.
		return "the peer refused this node's certificate: " + tlsReason(err, false)
	}
	if !secure && (errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset")) {
		return "the peer closed the connection during the handshake (does it require TLS? set plugins.replication.config.tls): " + err.Error()
	}
	return "no answer to hello: " + err.Error()
}

// serverConf is the current server config of the listener (files reloaded
// when they changed).
func (r *reloader) serverConf() (*tls.Config, error) { return r.forClient(nil) }

// clientConf is a client config for dialling a peer named host: the
// node's current certificate, and the cluster CA as the only root.
func (r *reloader) clientConf(host string) (*tls.Config, error) {
	s, err := r.forClient(nil)
	if err != nil {
		return nil, err
	}
	cert := &s.Certificates[0]
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Always presented, even when the peer asks for another CA's, so
		// that the peer can say which certificate it refused and why.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		RootCAs:              s.ClientCAs,
		ServerName:           host,
		NextProtos:           []string{"h2"},
	}, nil
}
