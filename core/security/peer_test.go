package security

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security/securitytest"
)

// recLog records warnings.
type recLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *recLog) Info(string, ...any) {}
func (l *recLog) Warn(msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprint(append([]any{msg}, args...)...))
}

func (l *recLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// echoServer serves l: each accepted connection that passes the handshake
// and sends the 24 bytes of a gRPC client's preface gets "data\n" written
// and is closed. It returns the address.
func echoServer(t *testing.T, p *Peers) string { return echoServerOn(t, p, false) }

// echoServerOn is echoServer on a NodeListener with node.
func echoServerOn(t *testing.T, p *Peers, node bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pl := p.Listener(ln)
	if node {
		pl = p.NodeListener(ln)
	}
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The client's preface first, so that closing does not reset.
				if _, err := io.ReadFull(c, make([]byte, len(http2Preface)+8)); err != nil {
					return
				}
				_, _ = c.Write([]byte("data\n"))
			}()
		}
	}()
	return ln.Addr().String()
}

func mustPeers(t *testing.T, l PeerLink, log Logger) *Peers {
	t.Helper()
	p, err := NewPeers(l, "listen", log)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPeerHandshake: peers with the cluster's certificate and secret link;
// every peer lacking one of them is refused with the reason logged on the
// server, told to the client, and reads nothing of the server's data.
func TestPeerHandshake(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	other := securitytest.NewCA(t, "other")
	node := ca.Issue("node-1", securitytest.Options{Peer: true})
	node2 := ca.Issue("node-2", securitytest.Options{Peer: true})
	foreign := other.Issue("intruder", securitytest.Options{Peer: true})
	secret := ca.Secret("secret", "0123456789abcdef-cluster")
	wrong := ca.Secret("wrong", "0123456789abcdef-WRONG!!")
	full := PeerLink{TLS: PeerTLS{CertFile: node.CertFile, KeyFile: node.KeyFile, CAFile: ca.CertFile}, SecretFile: secret}
	byURI := ca.Issue("some-host", securitytest.Options{Peer: true, URIs: []string{"ferry://node/n7"}})
	off := false
	unbound := full.TLS
	unbound.VerifyNodeID = &off
	// An impostor's own side does not check its own certificate.
	impostor := node2TLS(node2, ca)
	impostor.VerifyNodeID = &off
	uriOnly := full.TLS
	uriOnly.RequireNodeURI = true

	cases := []struct {
		name      string
		server    PeerLink
		client    PeerLink
		clientErr string // "" : linked
		serverLog string
		nodes     bool // the server is a NodeListener
	}{
		{name: "tls and secret", server: full,
			client: PeerLink{TLS: PeerTLS{CertFile: node2.CertFile, KeyFile: node2.KeyFile, CAFile: ca.CertFile}, SecretFile: secret}},
		{name: "tls only", server: PeerLink{TLS: full.TLS}, client: PeerLink{TLS: PeerTLS{CertFile: node2.CertFile, KeyFile: node2.KeyFile, CAFile: ca.CertFile}}},
		{name: "secret only, plaintext", server: PeerLink{SecretFile: secret}, client: PeerLink{SecretFile: secret}},
		{name: "plaintext", server: PeerLink{}, client: PeerLink{}},
		{name: "certificate of another CA", server: full,
			client:    PeerLink{TLS: PeerTLS{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile, CAFile: ca.CertFile}, SecretFile: secret},
			clientErr: "certificate", serverLog: "not signed by the cluster CA"},
		{name: "client does not trust the server", server: full,
			client:    PeerLink{TLS: PeerTLS{CertFile: foreign.CertFile, KeyFile: foreign.KeyFile, CAFile: other.CertFile}, SecretFile: secret},
			clientErr: "not signed by the cluster CA", serverLog: "tls"},
		{name: "wrong secret", server: full,
			client:    PeerLink{TLS: PeerTLS{CertFile: node2.CertFile, KeyFile: node2.KeyFile, CAFile: ca.CertFile}, SecretFile: wrong},
			clientErr: "wrong cluster secret", serverLog: "wrong cluster secret"},
		{name: "no secret", server: full,
			client:    PeerLink{TLS: PeerTLS{CertFile: node2.CertFile, KeyFile: node2.KeyFile, CAFile: ca.CertFile}},
			clientErr: "has no cluster secret", serverLog: "has no cluster secret"},
		{name: "server without the secret", server: PeerLink{TLS: full.TLS},
			client:    PeerLink{TLS: PeerTLS{CertFile: node2.CertFile, KeyFile: node2.KeyFile, CAFile: ca.CertFile}, SecretFile: secret},
			clientErr: "the peer has no cluster secret"},
		{name: "plaintext client on a TLS port", server: full, client: PeerLink{SecretFile: secret},
			clientErr: "requires TLS and the peer spoke plaintext", serverLog: "requires TLS"},
		{name: "TLS client on a plaintext port", server: PeerLink{SecretFile: secret}, client: full,
			clientErr: "plaintext", serverLog: "speaks TLS and this replication listener (listen) is plaintext"},
		{name: "plaintext without secret on a secret port", server: PeerLink{SecretFile: secret}, client: PeerLink{},
			clientErr: "sent no credentials", serverLog: "sent no credentials"},
		{name: "plain client on a TLS port", server: full, client: PeerLink{},
			clientErr: "requires TLS and the peer spoke plaintext", serverLog: "requires TLS"},

		// A node's certificate is bound to the node id it claims.
		{name: "node claims the id its certificate names", server: full,
			client: PeerLink{TLS: node2TLS(node2, ca), SecretFile: secret, Node: "node-2"}},
		{name: "node claims the id of its certificate's URI", server: full,
			client: PeerLink{TLS: node2TLS(byURI, ca), SecretFile: secret, Node: "n7"}},
		{name: "node claims another node's id", server: full,
			client:    PeerLink{TLS: impostor, SecretFile: secret, Node: "node-1"},
			clientErr: `claims node id "node-1" but its certificate is for node "node-2"`,
			serverLog: `claims node id "node-1" but its certificate is for node "node-2"`},
		{name: "another node's id, tls only", server: PeerLink{TLS: full.TLS},
			client:    PeerLink{TLS: impostor, Node: "node-1"},
			clientErr: `claims node id "node-1"`, serverLog: `claims node id "node-1"`},
		{name: "control: another node's id with verify_node_id false", server: PeerLink{TLS: unbound, SecretFile: secret},
			client: PeerLink{TLS: impostor, SecretFile: secret, Node: "node-1"}},
		{name: "a tool claims no id", server: full, client: PeerLink{TLS: node2TLS(node2, ca), SecretFile: secret}},
		{name: "nodes only: no id claimed", server: PeerLink{TLS: full.TLS}, nodes: true,
			client:    PeerLink{TLS: node2TLS(node2, ca)},
			clientErr: "claimed no node id", serverLog: "claimed no node id"},
		{name: "nodes only: the right id", server: PeerLink{TLS: full.TLS}, nodes: true,
			client: PeerLink{TLS: node2TLS(node2, ca), Node: "node-2"}},

		// tls.require_node_uri: only a URI ferry://node/<id> names a node.
		{name: "require_node_uri: a node named by its URI", server: PeerLink{TLS: uriOnly, SecretFile: secret},
			client: PeerLink{TLS: node2TLS(byURI, ca), SecretFile: secret, Node: "n7"}},
		{name: "require_node_uri: a node named by its common name", server: PeerLink{TLS: uriOnly, SecretFile: secret},
			client:    PeerLink{TLS: node2TLS(node2, ca), SecretFile: secret, Node: "node-2"},
			clientErr: `claims node id "node-2" but its certificate is for node (none`,
			serverLog: "with tls.require_node_uri only a URI ferry://node/<id> names a node"},
		{name: "require_node_uri: a node named by a DNS name", server: PeerLink{TLS: uriOnly, SecretFile: secret},
			client:    PeerLink{TLS: impostor, SecretFile: secret, Node: "localhost"},
			clientErr: `claims node id "localhost"`, serverLog: `claims node id "localhost"`},
		{name: "control: a DNS name names a node without require_node_uri", server: full,
			client: PeerLink{TLS: impostor, SecretFile: secret, Node: "localhost"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := &recLog{}
			addr := echoServerOn(t, mustPeers(t, tc.server, log), tc.nodes)
			client := mustPeers(t, tc.client, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := client.Dial(ctx, addr)
			var got []byte
			if err == nil {
				_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
				// What a gRPC client sends first.
				if _, err = conn.Write([]byte(http2Preface + "\r\nSM\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				got, err = io.ReadAll(conn)
				conn.Close()
				if err == nil && string(got) != "data\n" {
					err = fmt.Errorf("read %q", got)
				}
			}
			if tc.clientErr == "" {
				if err != nil {
					t.Fatalf("link refused: %v (server log: %s)", err, log.text())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.clientErr) {
				t.Fatalf("client error %v, want one containing %q", err, tc.clientErr)
			}
			if strings.Contains(string(got), "data") {
				t.Fatalf("a refused peer read the server's data: %q", got)
			}
			if tc.serverLog != "" {
				deadline := time.Now().Add(20 * time.Second)
				for !strings.Contains(log.text(), tc.serverLog) {
					if time.Now().After(deadline) {
						t.Fatalf("server log %q, want %q", log.text(), tc.serverLog)
					}
					time.Sleep(10 * time.Millisecond)
				}
				if !strings.Contains(log.text(), "replication peer refused") {
					t.Fatalf("server log %q lacks the refusal line", log.text())
				}
			}
		})
	}
}

// node2TLS is a client's tls section with pair, trusting ca.
func node2TLS(pair securitytest.Pair, ca *securitytest.CA) PeerTLS {
	return PeerTLS{CertFile: pair.CertFile, KeyFile: pair.KeyFile, CAFile: ca.CertFile}
}

// TestPeerLinkValidate: the keys' problems are named.
func TestPeerLinkValidate(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	server := ca.Issue("server-only", securitytest.Options{})
	short := ca.Secret("short", "tooshort")
	open := ca.Secret("open", "0123456789abcdef-cluster")
	if err := chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		l    PeerLink
		want []string
	}{
		{PeerLink{TLS: PeerTLS{CertFile: server.CertFile}}, []string{"tls.key_file: is required", "tls.ca_file: is required"}},
		{PeerLink{TLS: PeerTLS{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: ca.CertFile}}, []string{"tls.cert_file: certificate", "clientAuth"}},
		{PeerLink{SecretFile: short}, []string{"secret_file: cluster secret", "fewer than 16"}},
		{PeerLink{SecretFile: open}, []string{"secret_file:", "chmod 600"}},
		{PeerLink{SecretFile: "/nonexistent/secret"}, []string{"secret_file:", "no such file"}},
	}
	for _, tc := range cases {
		got := tc.l.Validate("").Error()
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("Validate(%+v) = %q, want %q in it", tc.l, got, w)
			}
		}
	}
	if _, err := NewPeers(PeerLink{SecretFile: open, TLS: PeerTLS{VerifyNodeID: new(bool)}}, "listen", nil); err == nil || !strings.Contains(err.Error(), "tls.verify_node_id: applies only with TLS") {
		t.Errorf("verify_node_id without TLS: %v", err)
	}
	ok := ca.Issue("peer", securitytest.Options{Peer: true})
	// A node whose own certificate names another node fails at start,
	// naming both; with verify_node_id false it starts.
	own := PeerTLS{CertFile: ok.CertFile, KeyFile: ok.KeyFile, CAFile: ca.CertFile}
	if _, err := NewPeers(PeerLink{TLS: own, Node: "node-3"}, "listen", nil); err == nil ||
		!strings.Contains(err.Error(), `tls.cert_file: certificate `+ok.CertFile+` is for node "peer" or "localhost", not this node (node.id "node-3")`) {
		t.Errorf("a node with another node's certificate: %v", err)
	}
	if _, err := NewPeers(PeerLink{TLS: own, Node: "peer"}, "listen", nil); err != nil {
		t.Errorf("a node with its own certificate: %v", err)
	}
	off := own
	off.VerifyNodeID = new(bool)
	if _, err := NewPeers(PeerLink{TLS: off, Node: "node-3"}, "listen", nil); err != nil {
		t.Errorf("verify_node_id false: %v", err)
	}
	if ps := (PeerLink{TLS: PeerTLS{CertFile: ok.CertFile, KeyFile: ok.KeyFile, CAFile: ca.CertFile}, SecretFile: ca.Secret("s", "0123456789abcdef")}).Validate(""); len(ps) > 0 {
		t.Fatalf("a good section: %v", ps)
	}
	// require_node_uri: only with TLS that verifies node ids; a node whose
	// certificate names it only by its common name fails at start, one
	// with its URI starts.
	if ps := (PeerLink{SecretFile: open, TLS: PeerTLS{RequireNodeURI: true}}).Validate(""); len(ps) == 0 || !strings.Contains(ps.Error(), "tls.require_node_uri: applies only with TLS") {
		t.Errorf("require_node_uri without TLS: %v", ps)
	}
	both := off
	both.RequireNodeURI = true
	if ps := (PeerLink{TLS: both}).Validate(""); len(ps) == 0 || !strings.Contains(ps.Error(), "tls.require_node_uri: contradicts tls.verify_node_id: false") {
		t.Errorf("require_node_uri with verify_node_id false: %v", ps)
	}
	uri := own
	uri.RequireNodeURI = true
	if _, err := NewPeers(PeerLink{TLS: uri, Node: "peer"}, "listen", nil); err == nil || !strings.Contains(err.Error(), "tls.require_node_uri takes no other form") {
		t.Errorf("require_node_uri, a certificate naming the node by its common name only: %v", err)
	}
	byURI := ca.Issue("some-host", securitytest.Options{Peer: true, URIs: []string{"ferry://node/n7"}})
	if _, err := NewPeers(PeerLink{TLS: PeerTLS{CertFile: byURI.CertFile, KeyFile: byURI.KeyFile, CAFile: ca.CertFile, RequireNodeURI: true}, Node: "n7"}, "listen", nil); err != nil {
		t.Errorf("require_node_uri, a certificate naming the node by URI: %v", err)
	}
}

func chmod(path string, mode os.FileMode) error { return os.Chmod(path, mode) }

// A listener's certificate is reloaded when its files change: the next
// connection gets the new one, and links still work.
func TestPeerCertificateReloaded(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	node := ca.Issue("node-1", securitytest.Options{Peer: true})
	peer := ca.Issue("node-2", securitytest.Options{Peer: true})
	server := mustPeers(t, PeerLink{TLS: PeerTLS{CertFile: node.CertFile, KeyFile: node.KeyFile, CAFile: ca.CertFile}}, nil)
	client := mustPeers(t, PeerLink{TLS: PeerTLS{CertFile: peer.CertFile, KeyFile: peer.KeyFile, CAFile: ca.CertFile}}, nil)
	addr := echoServer(t, server)
	serial := func() string {
		t.Helper()
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, st, err := client.Client(ctx, raw, addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		return st.PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	if want := securitytest.Serial(t, node.CertFile).String(); first != want {
		t.Fatalf("served serial %s, want %s", first, want)
	}
	rotated := ca.Issue("node-1", securitytest.Options{Peer: true}) // same files, new certificate
	want := securitytest.Serial(t, rotated.CertFile).String()
	deadline := time.Now().Add(20 * time.Second)
	for got := serial(); got != want; got = serial() {
		// A file's stamp is its modification time and size: on a coarse
		// clock the rewrite may need a moment to show.
		if time.Now().After(deadline) {
			t.Fatalf("after rotation the listener serves serial %s, want %s", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Under mutual TLS alone the verified certificate is the credential: a
// plain TLS client with a certificate of the cluster CA (grpcurl, say) is
// served. With a cluster secret it must run the handshake, and is refused.
func TestPeerPlainClientOverMutualTLS(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	node := ca.Issue("node-1", securitytest.Options{Peer: true})
	tool := ca.Issue("tool", securitytest.Options{Client: true})
	secret := ca.Secret("secret", "0123456789abcdef-cluster")
	conf, err := ClientTLS{CAFile: ca.CertFile, CertFile: tool.CertFile, KeyFile: tool.KeyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		secret string
		served bool
	}{{"", true}, {secret, false}} {
		log := &recLog{}
		addr := echoServer(t, mustPeers(t, PeerLink{TLS: PeerTLS{CertFile: node.CertFile, KeyFile: node.KeyFile, CAFile: ca.CertFile}, SecretFile: tc.secret}, log))
		conn, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = conn.Write([]byte(http2Preface + "\r\nSM\r\n\r\n"))
		got, _ := io.ReadAll(conn)
		conn.Close()
		if served := string(got) == "data\n"; served != tc.served {
			t.Errorf("secret %q: served %v (read %q), want %v; server log %s", tc.secret, served, got, tc.served, log.text())
		}
		if !tc.served && !strings.Contains(string(got), "sent no credentials") {
			t.Errorf("refused plain client told %q, want why", got)
		}
	}
}

// Whatever a peer sends, the server side of the handshake neither panics
// nor accepts a peer that does not know the secret.
func FuzzPeerHandshake(f *testing.F) {
	f.Add([]byte("FERRYPEER/1 HELLO " + strings.Repeat("ab", 32) + "\nFERRYPEER/1 PROOF " + strings.Repeat("00", 32) + "\n"))
	f.Add([]byte("FERRYPEER/1 HELLO " + strings.Repeat("ab", 32) + "\nFERRYPEER/1 PROOF -\n"))
	f.Add([]byte("FERRYPEER/1 HELLO zz\n"))
	f.Add([]byte(http2Preface + "\r\nSM\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05})
	f.Add([]byte("FERRYPEER/1 HELLO " + strings.Repeat("a", 600)))
	dir := f.TempDir()
	secret := dir + "/secret"
	if err := os.WriteFile(secret, []byte("0123456789abcdef-fuzz"), 0o600); err != nil {
		f.Fatal(err)
	}
	p, err := NewPeers(PeerLink{SecretFile: secret}, "listen", nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		defer client.Close()
		go func() {
			// A pipe's write returns once the server read it all, or
			// closed its end; then the peer says no more.
			_, _ = client.Write(in)
			client.Close()
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		conn, _, err := p.Server(server)
		if err == nil {
			conn.Close()
			t.Fatalf("accepted %q without the secret", in)
		}
	})
}

// With only the cluster secret (no TLS), the proofs cover the node id the
// hello claims: a relay between two nodes that rewrites node-2's claim to
// node-1 makes the server refuse the proof; the same relay passing the
// hello unchanged links (the control).
func TestPeerSecretProofBindsNodeID(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	secret := ca.Secret("secret", "0123456789abcdef-cluster")
	for _, rewrite := range []bool{false, true} {
		log := &recLog{}
		addr := echoServer(t, mustPeers(t, PeerLink{SecretFile: secret}, log))
		relay := claimRelay(t, addr, rewrite)
		client := mustPeers(t, PeerLink{SecretFile: secret, Node: "node-2"}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := client.Dial(ctx, relay)
		cancel()
		var got []byte
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err = conn.Write([]byte(http2Preface + "\r\nSM\r\n\r\n")); err == nil {
				got, err = io.ReadAll(conn)
			}
			conn.Close()
		}
		if !rewrite {
			if err != nil || string(got) != "data\n" {
				t.Fatalf("control: the relay passing the hello unchanged: %v, read %q; want linked", err, got)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "wrong cluster secret") || strings.Contains(string(got), "data") {
			t.Fatalf("a hello whose claim was rewritten to node-1: %v, read %q; want refused as a wrong proof", err, got)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(log.text(), "wrong cluster secret") {
			if time.Now().After(deadline) {
				t.Fatalf("server log %q; want the refusal", log.text())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// claimRelay relays connections to addr; with rewrite, the client's hello
// claiming node-2 is passed on claiming node-1.
func claimRelay(t *testing.T, addr string, rewrite bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(c, s); c.Close() }()
				br := bufio.NewReader(c)
				hello, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if rewrite {
					hello = strings.Replace(hello, " node-2\n", " node-1\n", 1)
				}
				if _, err := io.WriteString(s, hello); err != nil {
					return
				}
				_, _ = io.Copy(s, br)
			}()
		}
	}()
	return ln.Addr().String()
}
