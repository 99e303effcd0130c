package client

import (
	"errors"
	"strings"

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
