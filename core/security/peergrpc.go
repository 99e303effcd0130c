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

type peerCreds struct{ p *Peers }

// peerAuthInfo is the AuthInfo of a plaintext link (with or without the
// cluster secret).
type peerAuthInfo struct{ credentials.CommonAuthInfo }

func (peerAuthInfo) AuthType() string { return "ferry-peer" }

func (c *peerCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, st, err := c.p.Client(ctx, raw, authority)
	if err != nil {
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

func (c *peerCreds) Clone() credentials.TransportCredentials { return &peerCreds{p: c.p} }

// OverrideServerName is deprecated in gRPC; the name checked is the host
// dialled.
func (c *peerCreds) OverrideServerName(string) error { return nil }
