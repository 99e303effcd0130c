package sdk

import (
	"context"
	"crypto/tls"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// ClientCredentials are what a transport knows of the client behind a
// request: its authorization header or metadata, the names of its verified
// client certificate and its address. A transport gathers them
// (CredentialsOf) and attaches them to the context of each call it makes to
// the Core (WithClientCredentials); they travel to the core with the call,
// and the core, not the transport, decides who the client is and what it
// may do (docs/security.md).
type ClientCredentials = ferryv1.ClientCredentials

type credentialsKey struct{}

// WithClientCredentials returns ctx carrying c for the Core calls made with
// it. A transport calls it once per client request or stream.
func WithClientCredentials(ctx context.Context, c *ClientCredentials) context.Context {
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, credentialsKey{}, c)
}

// ClientCredentialsFrom returns the credentials attached to ctx, nil when
// none are.
func ClientCredentialsFrom(ctx context.Context) *ClientCredentials {
	c, _ := ctx.Value(credentialsKey{}).(*ClientCredentials)
	return c
}

// CredentialsOf gathers a client's credentials: authorization is its
// "authorization" header or gRPC metadata value as sent, state the TLS
// state of its connection (nil for plaintext), remote its address. Only a
// certificate whose chain the TLS handshake verified (mutual TLS) gives
// names: its subject's common name, then its DNS, email and URI subject
// alternative names.
func CredentialsOf(authorization string, state *tls.ConnectionState, remote string) *ClientCredentials {
	c := &ClientCredentials{Authorization: authorization, RemoteAddr: remote}
	if state != nil && len(state.VerifiedChains) > 0 && len(state.VerifiedChains[0]) > 0 {
		leaf := state.VerifiedChains[0][0]
		if leaf.Subject.CommonName != "" {
			c.CertificateNames = append(c.CertificateNames, leaf.Subject.CommonName)
		}
		c.CertificateNames = append(c.CertificateNames, leaf.DNSNames...)
		c.CertificateNames = append(c.CertificateNames, leaf.EmailAddresses...)
		for _, u := range leaf.URIs {
			c.CertificateNames = append(c.CertificateNames, u.String())
		}
	}
	return c
}
