package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// TestUserAdminOverTLS: `ferry user`, `ferry acl` and `ferry topic` work
// against a node whose admin listener and transport speak mutual TLS, by
// password (with --tls-ca and a client certificate) and by a client
// certificate alone (no --user); a plaintext command, one that does not
// trust the node's CA, and one without a client certificate are refused
// with an error that says what to pass.
func TestUserAdminOverTLS(t *testing.T) {
	adminHash, _, code := ferryEnv(t, nil, "root-pw\n", "user", "hash", "--cost", "4")
	if code != 0 {
		t.Fatal("user hash failed")
	}
	ca := securitytest.NewCA(t, "admin")
	other := securitytest.NewCA(t, "other")
	srv := ca.Issue("node", securitytest.Options{})
	cli := ca.Issue("ops", securitytest.Options{Client: true})         // a super user by certificate
	stranger := other.Issue("ops", securitytest.Options{Client: true}) // the same name, another CA
	tlsKeys := fmt.Sprintf("tls: {cert_file: %q, key_file: %q, client_ca_file: %q}", srv.CertFile, srv.KeyFile, ca.CertFile)

	n := &liveNode{t: t, addr: ferrytest.FreeAddr(t), admin: ferrytest.FreeAddr(t), logs: &syncBuffer{}}
	dir := t.TempDir()
	n.yaml = filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(n.yaml, []byte(fmt.Sprintf(`name: user-admin-tls
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms, %s}}
admin: {listen: %q, %s}
topics: [{name: t, queues: 1}]
security:
  users:
    - {name: admin, password_hash: %q, super: true}
    - {name: ops, certificate: true, super: true}
`, filepath.Join(dir, "data"), n.addr, tlsKeys, n.admin, tlsKeys, strings.TrimSpace(adminHash))), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	t.Cleanup(n.stop)

	mtls := []string{"--tls-ca", ca.CertFile, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile}
	byPassword := []string{"FERRY_USER=admin", "FERRY_PASSWORD=root-pw"}
	run := func(env []string, stdin string, args ...string) (string, string, int) {
		t.Helper()
		return ferryEnv(t, env, stdin, args...)
	}
	mustOK := func(env []string, stdin string, args ...string) string {
		t.Helper()
		out, stderr, code := run(env, stdin, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d %s %s\nnode log:\n%s", strings.Join(args, " "), code, out, stderr, n.logs.String())
		}
		return out
	}
	mustFail := func(want string, env []string, args ...string) {
		t.Helper()
		out, stderr, code := run(env, "", args...)
		if code == 0 || !strings.Contains(stderr, want) {
			t.Fatalf("%s: exit %d %s %s; want it refused with %q", strings.Join(args, " "), code, out, stderr, want)
		}
		t.Logf("refused as it should be: %s", strings.TrimSpace(stderr))
	}
	admin := func(args ...string) []string { return append(append(args, "--admin", n.admin), mtls...) }

	// By password over mutual TLS.
	mustOK(byPassword, "alice-pw\n", admin("user", "add", "alice")...)
	mustOK(byPassword, "", admin("acl", "add", "alice", "--resource", "Topic:t", "--action", "Pub,Get")...)
	if out := mustOK(byPassword, "", admin("acl", "list", "alice")...); !strings.Contains(out, "Allow Pub,Get on Topic:t") {
		t.Fatalf("acl list alice over TLS: %q", out)
	}
	// By the client certificate alone: no --user, no password.
	if out := mustOK(nil, "", admin("user", "list")...); !strings.Contains(out, "alice") {
		t.Fatalf("user list by certificate: %q", out)
	}
	mustOK(nil, "bob-pw\n", admin("user", "add", "bob")...)
	mustOK(nil, "", admin("user", "delete", "bob")...)
	// ferry topic on the transport, over mutual TLS, both ways.
	broker := func(args ...string) []string { return append(append(args, "--broker", n.addr), mtls...) }
	mustOK(byPassword, "", broker("topic", "create", "orders", "--queues", "2")...)
	if out := mustOK(nil, "", broker("topic", "list")...); !strings.Contains(out, "orders") {
		t.Fatalf("topic list by certificate: %q", out)
	}
	mustOK(byPassword, "alice-pw\n", broker("produce", "--topic", "t", "--timeout", "10s")...)

	// Refused, saying what to pass.
	mustFail("requires TLS", byPassword, "user", "list", "--admin", n.admin)
	mustFail("certificate signed by unknown authority", byPassword, "user", "list", "--admin", n.admin,
		"--tls-ca", other.CertFile, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile)
	mustFail("requires a client certificate", byPassword, "user", "list", "--admin", n.admin, "--tls-ca", ca.CertFile)
	mustFail("must be signed by the CA of the node's admin.tls.client_ca_file", nil, "user", "list", "--admin", n.admin, "--tls-ca", ca.CertFile,
		"--tls-cert", stranger.CertFile, "--tls-key", stranger.KeyFile)
	mustFail("--user", nil, "user", "list", "--admin", n.admin, "--tls-ca", ca.CertFile)

	for _, w := range []string{"user=admin source=127.0.0.1 action=UserAdd resource=User:alice result=ok",
		"user=ops source=127.0.0.1 action=UserAdd resource=User:bob result=ok"} {
		waitLog(t, n.logs, w)
	}
}

// waitLog waits until logs hold want.
func waitLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	eventually(t, 30*time.Second, "a log line with "+want, func() bool { return strings.Contains(logs.String(), want) })
}
