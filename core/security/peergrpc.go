package security

import (
	"context"
	"net"

	"google.golang.org/grpc/credentials"
)

// GRPC returns the gRPC transport credentials of p: the peer handshake
// (TLS and the cluster secret, as configured) on every connection a
// server built with grpc.Creds(p.GRPC()) accepts or a client dialled with
// grpc.WithTransportCredentials(p.GRPC()) opens. A refused connection
// never carries a single RPC.
func (p *Peers) GRPC() credentials.TransportCredentials { return &peerCreds{p: p} }

// GRPCTo is GRPC for a client connection to a peer that must be one of
// the nodes ids (what: the config key listing them, for the error): when
// the links bind node ids, a peer whose certificate names none of them is
// refused at the handshake, before any RPC, with a *PeerError naming the
// ids its certificate holds and the ids expected (DialNode). Empty ids
// is GRPC.
func (p *Peers) GRPCTo(ids []string, what string) credentials.TransportCredentials {
	return &peerCreds{p: p, ids: ids, what: what}
}

type peerCreds struct {
	p    *Peers
	ids  []string // the nodes a dialled peer must be (GRPCTo); empty: any
	what string
}

// peerAuthInfo is the AuthInfo of a plaintext link (with or without the
// cluster secret).
type peerAuthInfo struct{ credentials.CommonAuthInfo }

func (peerAuthInfo) AuthType() string { return "ferry-peer" }

func (c *peerCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, st, err := c.p.Client(ctx, raw, authority)
	if err != nil {
		return nil, nil, err
	}
	if err := c.p.checkServer(st, authority, c.ids, c.what); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	if st != nil {
		return conn, credentials.TLSInfo{State: *st, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return conn, peerAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (c *peerCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, st, err := c.p.Server(raw)
	if err != nil {
		return nil, nil, err
	}
	if st != nil {
		return conn, credentials.TLSInfo{State: *st, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	return conn, peerAuthInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (c *peerCreds) Info() credentials.ProtocolInfo {
	if c.p.Secure() {
		return credentials.ProtocolInfo{SecurityProtocol: "tls"}
	}
	return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
}

func (c *peerCreds) Clone() credentials.TransportCredentials {
	return &peerCreds{p: c.p, ids: c.ids, what: c.what}
}

// OverrideServerName is deprecated in gRPC; the name checked is the host
// dialled.
func (c *peerCreds) OverrideServerName(string) error { return nil }
