package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/security/securitytest"
)

// The commands that talk to a broker speak TLS with --tls-ca (and mutual
// TLS with --tls-cert/--tls-key); without them a TLS port refuses them with
// a hint.
func TestCLIOverTLS(t *testing.T) {
	ca := securitytest.NewCA(t, "cli")
	srv := ca.Issue("broker", securitytest.Options{})
	cli := ca.Issue("app", securitytest.Options{Client: true})
	addr := startBrokerWith(t, fmt.Sprintf(", tls: {cert_file: %q, key_file: %q, client_ca_file: %q}", srv.CertFile, srv.KeyFile, ca.CertFile))
	base := []string{"--broker", addr, "--topic", "t", "--timeout", "5s"}

	if _, stderr, code := produce(t, "plain\n", base...); code == 0 || !strings.Contains(stderr, "TLS") {
		t.Fatalf("a plaintext produce to a TLS port: exit %d, stderr %q; want a failure naming TLS", code, stderr)
	}
	if _, stderr, code := produce(t, "no-cert\n", append(base, "--tls-ca", ca.CertFile)...); code == 0 {
		t.Fatalf("a produce without a client certificate to a mutual-TLS port succeeded: %s", stderr)
	}
	if _, stderr, code := produce(t, "over-tls\n", append(base, "--tls-ca", ca.CertFile, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile)...); code != 0 {
		t.Fatalf("produce over mutual TLS: exit %d\n%s", code, stderr)
	}
	out, stderr, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "t", "--group", "g", "--count", "1", "--body", "--idle", "30s",
		"--tls-ca", ca.CertFile, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile)
	if code != 0 || !strings.Contains(out, "over-tls") {
		t.Fatalf("consume over mutual TLS: exit %d, out %q\n%s", code, out, stderr)
	}
}
