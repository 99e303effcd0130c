package grpctransport

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/ferrymq/ferry/core/sdk"
)

// clientCredentials gathers what the core needs to authenticate the call
// of ctx: the "authorization" metadata (gRPC per-RPC credentials), the
// verified client certificate under mutual TLS and the peer's address. The
// core checks them (docs/security.md); the transport only passes them on.
func clientCredentials(ctx context.Context) context.Context {
	var authz, remote string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			authz = v[0]
		}
	}
	var creds *sdk.ClientCredentials
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			remote = p.Addr.String()
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			creds = sdk.CredentialsOf(authz, &ti.State, remote)
		}
	}
	if creds == nil {
		creds = sdk.CredentialsOf(authz, nil, remote)
	}
	return sdk.WithClientCredentials(ctx, creds)
}

func unaryCredentials(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	return h(clientCredentials(ctx), req)
}

func streamCredentials(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, credentialStream{ss, clientCredentials(ss.Context())})
}

// credentialStream is a stream whose context carries its client's
// credentials.
type credentialStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s credentialStream) Context() context.Context { return s.ctx }
