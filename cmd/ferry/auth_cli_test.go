package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// ferryEnv runs ferry with stdin and only the FERRY_ variables of env.
func ferryEnv(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ferryBin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// startSecureBroker runs `ferry run` on a pipeline with the security
// section given (YAML at the top level) and returns its address.
func startSecureBroker(t *testing.T, security string) string {
	t.Helper()
	addr, _ := startSecureBrokerLogs(t, security, "error")
	return addr
}

// startSecureBrokerLogs is startSecureBroker at a log level, with the
// node's log.
func startSecureBrokerLogs(t *testing.T, security, level string) (string, *syncBuffer) {
	t.Helper()
	// A reserved port below the ephemeral range: a port of
	// 127.0.0.1:0 can be taken by an outgoing connection before the
	// broker binds it.
	addr := ferrytest.FreeAddr(t)
	dir := t.TempDir()
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: auth-cli
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: [{name: t, queues: 1}, {name: u, queues: 1}]
%s`, filepath.Join(dir, "data"), addr, security)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := ferryEnv(t, nil, "", "validate", yaml); code != 0 {
		t.Fatalf("validate: %d %s %s", code, out, stderr)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(ferryBin, "run", "--log-level", level, yaml)
	cmd.Stderr = os.Stderr
	if level != "error" {
		cmd.Stderr = logs
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return addr, logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker not listening on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `ferry user hash` makes the password_hash of a pipeline's user; produce,
// consume and dlq authenticate with --user and the password from
// $FERRY_PASSWORD or --password-file, and say why when they cannot.
func TestCLIWithUsers(t *testing.T) {
	hash, stderr, code := ferryEnv(t, nil, "s3cret\n", "user", "hash", "--cost", "4")
	hash = strings.TrimSpace(hash)
	if code != 0 || !strings.HasPrefix(hash, "$2a$04$") {
		t.Fatalf("user hash: exit %d, %q %s", code, hash, stderr)
	}
	if _, stderr, code := ferryEnv(t, nil, "", "user", "hash"); code != 2 || !strings.Contains(stderr, "no password on stdin") {
		t.Fatalf("user hash without input: exit %d %s", code, stderr)
	}
	addr := startSecureBroker(t, fmt.Sprintf(`security:
  users:
    - name: app
      password_hash: %q
      policies: [{resources: ["Topic:t", "Group:g"], actions: [Pub, Sub, Get]}]
`, hash))
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"produce", "--broker", addr, "--topic", "t", "--timeout", "10s"}

	if _, stderr, code := ferryEnv(t, nil, "anon\n", base...); code == 0 || !strings.Contains(stderr, "requires authentication") {
		t.Fatalf("produce without --user: exit %d %s; want refused, authentication required", code, stderr)
	}
	if _, stderr, code := ferryEnv(t, []string{"FERRY_PASSWORD=wrong"}, "x\n", append(base, "--user", "app")...); code == 0 || !strings.Contains(stderr, "unknown user or wrong password") {
		t.Fatalf("produce with a wrong password: exit %d %s", code, stderr)
	}
	if _, stderr, code := ferryEnv(t, nil, "x\n", append(base, "--user", "app")...); code != 2 || !strings.Contains(stderr, "needs a password") {
		t.Fatalf("--user without a password: exit %d %s; want exit 2", code, stderr)
	}
	if _, stderr, code := ferryEnv(t, []string{"FERRY_PASSWORD=s3cret"}, "from-env\n", append(base, "--user", "app")...); code != 0 {
		t.Fatalf("produce with $FERRY_PASSWORD: exit %d %s", code, stderr)
	}
	if _, stderr, code := ferryEnv(t, []string{"FERRY_USER=app"}, "from-file\n", append(base, "--password-file", pwFile)...); code != 0 {
		t.Fatalf("produce with $FERRY_USER and --password-file: exit %d %s", code, stderr)
	}
	if _, stderr, code := ferryEnv(t, []string{"FERRY_PASSWORD=s3cret"}, "x\n", "produce", "--broker", addr, "--topic", "u", "--timeout", "10s", "--user", "app"); code == 0 || !strings.Contains(stderr, `topic "u": not found`) {
		// The node lists only the topics a user may see.
		t.Fatalf("produce to a topic app may not use: exit %d %s; want it unknown to app", code, stderr)
	}
	out, stderr, code := ferryEnv(t, []string{"FERRY_PASSWORD=s3cret"}, "", "consume", "--broker", addr, "--topic", "t", "--group", "g",
		"--count", "2", "--body", "--idle", "30s", "--user", "app")
	if code != 0 || !strings.Contains(out, "from-env") || !strings.Contains(out, "from-file") {
		t.Fatalf("consume as app: exit %d, out %q\n%s", code, out, stderr)
	}
	// dlq reads g's dead-letter queue with Sub on the group (purging it
	// needs Delete: core/client's TestAuthDeadLettersBelongToTheirGroup).
	if out, stderr, code := ferryEnv(t, []string{"FERRY_PASSWORD=s3cret"}, "", "dlq", "list", "--broker", addr, "--group", "g", "--user", "app"); code != 0 {
		t.Fatalf("dlq list as app: exit %d %q %s", code, out, stderr)
	}
	if _, stderr, code := ferryEnv(t, []string{"FERRY_PASSWORD=s3cret"}, "", "dlq", "list", "--broker", addr, "--group", "h", "--user", "app"); code == 0 || !strings.Contains(stderr, "Group:h") {
		t.Fatalf("dlq list of group h as app: exit %d %s; want permission denied on Group:h", code, stderr)
	}
}

// TestCLIAuditLog: a real `ferry run` with users logs a wrong password and
// a denied topic creation as audit lines; the allowed produce (negative
// control) writes none.
func TestCLIAuditLog(t *testing.T) {
	hash, _, code := ferryEnv(t, nil, "s3cret\n", "user", "hash", "--cost", "4")
	if code != 0 {
		t.Fatal("user hash failed")
	}
	addr, logs := startSecureBrokerLogs(t, fmt.Sprintf(`security:
  users:
    - name: app
      password_hash: %q
      policies: [{resources: ["Topic:t", "Group:g"], actions: [Pub, Sub, Get]}]
`, strings.TrimSpace(hash)), "info")
	pw := []string{"FERRY_PASSWORD=s3cret"}
	if _, stderr, code := ferryEnv(t, pw, "ok\n", "produce", "--broker", addr, "--topic", "t", "--timeout", "10s", "--user", "app"); code != 0 {
		t.Fatalf("produce as app: exit %d %s", code, stderr)
	}
	if _, _, code := ferryEnv(t, []string{"FERRY_PASSWORD=wrong"}, "x\n", "produce", "--broker", addr, "--topic", "t", "--timeout", "10s", "--user", "app"); code == 0 {
		t.Fatal("produce with a wrong password succeeded")
	}
	if _, _, code := ferryEnv(t, pw, "", "topic", "create", "sneaky", "--queues", "1", "--broker", addr, "--user", "app"); code == 0 {
		t.Fatal("app created a topic")
	}
	want := []string{"audit: authentication failed", "user=app", "source=127.0.0.1"}
	want2 := []string{"audit: access denied", "user=app", "action=Create", "resource=Topic:sneaky"}
	deadline := time.Now().Add(30 * time.Second)
	has := func(parts []string) bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return true
			}
		}
		return false
	}
	for !has(want) || !has(want2) {
		if time.Now().After(deadline) {
			t.Fatalf("no audit lines %q and %q in the node's log:\n%s", want, want2, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "audit:"); n != 2 {
		t.Fatalf("%d audit lines, want 2 (the allowed produce writes none):\n%s", n, logs.String())
	}
}
