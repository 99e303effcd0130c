package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// WithTLS makes the client speak TLS to the brokers: ca is the PEM file of
// the CA that signed the brokers' certificates ("" trusts the system's
// roots); certFile and keyFile, both or neither, are the client's own
// certificate for a broker that requires mutual TLS (its identity is the
// certificate's common name). The files are read when Dial is called; a
// file that cannot be used fails Dial naming it.
func WithTLS(ca, certFile, keyFile string) Option {
	return func(o *options) {
		conf, err := security.ClientTLS{CAFile: ca, CertFile: certFile, KeyFile: keyFile}.Config()
		if err != nil {
			o.err = errors.Join(o.err, err)
			return
		}
		o.tls = conf
	}
}

// tlsHint explains the usual cause of a failed dial: a plaintext client on
// a TLS port (the broker closes the connection before HTTP/2 starts), or a
// TLS client on a plaintext one.
func tlsHint(o options, errs []error) string {
	msg := errors.Join(errs...).Error()
	switch {
	case o.tls == nil && (strings.Contains(msg, "server preface") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")):
		return " (the broker may require TLS: use client.WithTLS)"
	case o.tls != nil && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return " (the broker does not speak TLS on this port)"
	case o.tls != nil && len(o.tls.Certificates) == 0 && !strings.Contains(msg, "certificate required") &&
		(strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")):
		// Under TLS 1.3 the broker's "certificate required" alert may
		// come after the client has written, and be lost.
		return " (the broker may require a client certificate, mutual TLS: give one to client.WithTLS)"
	}
	return ""
}

// WithCredentials makes the client authenticate as user with password on
// every call (gRPC per-RPC credentials: the metadata "authorization: Basic
// base64(user:password)"), for a broker whose pipeline has users
// (docs/security.md). The secret is sent only over TLS (WithTLS) or to a
// broker on a loopback address; a call to another broker in plaintext fails
// with sdk.ErrUnauthenticated before anything is sent.
func WithCredentials(user, password string) Option {
	return func(o *options) {
		if user == "" {
			o.err = errors.Join(o.err, fmt.Errorf("ferry client: WithCredentials: %w: empty user", sdk.ErrInvalidArgument))
			return
		}
		if strings.Contains(user, ":") {
			o.err = errors.Join(o.err, fmt.Errorf("ferry client: WithCredentials: %w: user %q contains ':'", sdk.ErrInvalidArgument, user))
			return
		}
		o.grpcOpts = append(o.grpcOpts, grpc.WithPerRPCCredentials(basicAuth{
			header: "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)),
		}))
	}
}

// basicAuth is HTTP Basic credentials as gRPC per-RPC credentials.
type basicAuth struct{ header string }

// GetRequestMetadata is called by gRPC before each call (and each stream);
// uri names the service on the broker ("https://host:port/ferry.v1.Broker").
func (b basicAuth) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	ri, _ := credentials.RequestInfoFromContext(ctx)
	if credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity) != nil {
		host := ""
		if len(uri) > 0 {
			if u, err := url.Parse(uri[0]); err == nil {
				host = u.Hostname()
			}
		}
		if !loopbackHost(host) {
			return nil, sdk.ErrorToStatus(fmt.Errorf("ferry client: %w: refusing to send the password in plaintext to %s: use client.WithTLS", sdk.ErrUnauthenticated, host))
		}
	}
	return map[string]string{"authorization": b.header}, nil
}

// RequireTransportSecurity is false so that a broker on loopback can be
// reached without TLS; GetRequestMetadata refuses plaintext elsewhere.
func (basicAuth) RequireTransportSecurity() bool { return false }

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	// 0.0.0.0 and :: reach this machine.
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
