package main

import (
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

// liveNode is a `ferry run` with users and an admin listener that a test
// can stop and start again on the same data directory and ports.
type liveNode struct {
	t           *testing.T
	yaml        string
	addr, admin string
	logs        *syncBuffer // every start's log
	cmd         *exec.Cmd
}

func newLiveNode(t *testing.T, security string) *liveNode {
	t.Helper()
	n := &liveNode{t: t, addr: ferrytest.FreeAddr(t), admin: ferrytest.FreeAddr(t), logs: &syncBuffer{}}
	dir := t.TempDir()
	n.yaml = filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(n.yaml, []byte(fmt.Sprintf(`name: user-admin
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
admin: {listen: %q}
topics: [{name: t, queues: 1}]
%s`, filepath.Join(dir, "data"), n.addr, n.admin, security)), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *liveNode) start() {
	t := n.t
	t.Helper()
	n.cmd = exec.Command(ferryBin, "run", "--log-level", "info", n.yaml)
	n.cmd.Stderr = n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range []string{n.addr, n.admin} {
		for {
			c, err := net.DialTimeout("tcp", a, 100*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node not listening on %s: %v\n%s", a, err, n.logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (n *liveNode) stop() {
	if n.cmd != nil {
		n.cmd.Process.Signal(syscall.SIGTERM)
		n.cmd.Wait()
		n.cmd = nil
	}
}

// run runs ferry as user (password pw) with --admin or --broker added as
// the command needs.
func (n *liveNode) run(user, pw, stdin string, args ...string) (string, string, int) {
	n.t.Helper()
	if args[0] == "produce" {
		args = append(args, "--broker", n.addr, "--topic", "t", "--timeout", "10s")
	} else {
		args = append(args, "--admin", n.admin)
	}
	return ferryEnv(n.t, []string{"FERRY_USER=" + user, "FERRY_PASSWORD=" + pw}, stdin, args...)
}

// TestUserAdminLive: on a real node, a super user adds a user and its ACL
// entries with `ferry user` and `ferry acl`; they count at the next
// request, without a restart, and after a restart. A normal user cannot
// run these commands (the control), and each change is an audit line.
func TestUserAdminLive(t *testing.T) {
	adminHash, _, code := ferryEnv(t, nil, "root-pw\n", "user", "hash", "--cost", "4")
	if code != 0 {
		t.Fatal("user hash failed")
	}
	appHash, _, _ := ferryEnv(t, nil, "app-pw\n", "user", "hash", "--cost", "4")
	n := newLiveNode(t, fmt.Sprintf(`security:
  users:
    - {name: admin, password_hash: %q, super: true}
    - name: app
      password_hash: %q
      policies: [{resources: ["Topic:t"], actions: [Pub]}]
`, strings.TrimSpace(adminHash), strings.TrimSpace(appHash)))
	mustOK := func(user, pw, stdin string, args ...string) string {
		t.Helper()
		out, stderr, code := n.run(user, pw, stdin, args...)
		if code != 0 {
			t.Fatalf("%s as %s: exit %d %s %s\nnode log:\n%s", strings.Join(args, " "), user, code, out, stderr, n.logs.String())
		}
		return out
	}
	mustFail := func(want, user, pw, stdin string, args ...string) {
		t.Helper()
		out, stderr, code := n.run(user, pw, stdin, args...)
		if code == 0 || !strings.Contains(stderr, want) {
			t.Fatalf("%s as %s: exit %d %s %s; want it refused with %q", strings.Join(args, " "), user, code, out, stderr, want)
		}
	}

	// The control: a normal user can produce, but cannot administer.
	mustOK("app", "app-pw", "x\n", "produce")
	mustFail("403 Forbidden", "app", "app-pw", "", "user", "list")
	mustFail("403 Forbidden", "app", "app-pw", "sneaky-pw\n", "user", "add", "sneaky", "--super")
	mustFail("403 Forbidden", "app", "app-pw", "", "acl", "add", "app", "--resource", "*", "--action", "All")
	mustFail("401 Unauthorized", "admin", "wrong", "", "user", "list")
	mustFail("the admin listener is plaintext", "admin", "root-pw", "", "user", "list", "--tls")

	// `ferry acl check` says what the node would decide, and which entry
	// decides; a denial exits 1. A normal user may not ask.
	if out := mustOK("admin", "root-pw", "", "acl", "check", "app", "--resource", "Topic:t", "--action", "Pub"); !strings.Contains(out, `allowed: user "app" Pub on Topic:t (allowed by: Allow Pub on Topic:t)`) {
		t.Errorf("acl check of an allowed action: %q", out)
	}
	if out, stderr, code := n.run("admin", "root-pw", "", "acl", "check", "app", "--resource", "Topic:t", "--action", "Sub"); code != 1 || !strings.Contains(out, `denied: user "app" Sub on Topic:t (no entry allows it)`) {
		t.Errorf("acl check of a denied action: exit %d %q %q; want exit 1, denied", code, out, stderr)
	}
	mustFail(`400 Bad Request: invalid argument: action "Publish"`, "admin", "root-pw", "", "acl", "check", "app", "--resource", "Topic:t", "--action", "Publish")
	mustFail("403 Forbidden", "app", "app-pw", "", "acl", "check", "app", "--resource", "Topic:t", "--action", "Pub")

	// A user added live can produce at once.
	mustFail("unknown user or wrong password", "alice", "alice-pw", "x\n", "produce")
	mustOK("admin", "root-pw", "alice-pw\n", "user", "add", "alice")
	mustFail(`topic "t": not found`, "alice", "alice-pw", "x\n", "produce") // no right: the topic is not shown to alice
	mustOK("admin", "root-pw", "", "acl", "add", "alice", "--resource", "Topic:t", "--action", "Pub,Get")
	mustOK("alice", "alice-pw", "from-alice\n", "produce")
	mustFail("already exists", "admin", "root-pw", "other\n", "user", "add", "alice")

	// A deny entry wins at once.
	mustOK("admin", "root-pw", "", "acl", "add", "alice", "--resource", "Topic:*", "--action", "Pub", "--decision", "Deny")
	mustFail("may not Pub on Topic:t", "alice", "alice-pw", "x\n", "produce")
	if out := mustOK("admin", "root-pw", "", "acl", "list", "alice"); !strings.Contains(out, "Allow Pub,Get on Topic:t") || !strings.Contains(out, "Deny Pub on Topic:*") {
		t.Fatalf("acl list alice: %q", out)
	}
	// The list never shows a hash.
	list := mustOK("admin", "root-pw", "", "user", "list", "--json")
	if !strings.Contains(list, `"alice"`) || strings.Contains(list, "$2a$") || strings.Contains(list, "hash") {
		t.Fatalf("user list: %s", list)
	}

	// A restart keeps the live state: alice exists, and is still denied.
	n.stop()
	n.start()
	mustFail("may not Pub on Topic:t", "alice", "alice-pw", "x\n", "produce")
	mustOK("admin", "root-pw", "", "acl", "delete", "alice", "--resource", "Topic:*", "--action", "Pub", "--decision", "Deny")
	mustOK("alice", "alice-pw", "again\n", "produce")

	// A new password counts at once; the old one is refused.
	mustOK("admin", "root-pw", "alice-pw2\n", "user", "passwd", "alice")
	mustFail("unknown user or wrong password", "alice", "alice-pw", "x\n", "produce")
	mustOK("alice", "alice-pw2", "new-pw\n", "produce")

	// A removed user is refused at once, its verified credentials too, and
	// after a restart; so is a pipeline user removed live.
	mustOK("admin", "root-pw", "", "user", "delete", "alice")
	mustFail("unknown user or wrong password", "alice", "alice-pw2", "x\n", "produce")
	mustOK("admin", "root-pw", "", "user", "delete", "app")
	mustFail("unknown user or wrong password", "app", "app-pw", "x\n", "produce")
	mustFail("without a super user", "admin", "root-pw", "", "user", "delete", "admin")
	n.stop()
	n.start()
	mustFail("unknown user or wrong password", "alice", "alice-pw2", "x\n", "produce")
	mustFail("unknown user or wrong password", "app", "app-pw", "x\n", "produce")
	if !strings.Contains(n.logs.String(), "live state, which wins") {
		t.Fatalf("the node did not say that its live state overrides the pipeline's app:\n%s", n.logs.String())
	}
	mustOK("admin", "root-pw", "", "user", "list")

	// Every change is audited, with who made it; so are the refusals.
	want := []string{"user=admin source=127.0.0.1 action=UserAdd resource=User:alice result=ok",
		"user=admin source=127.0.0.1 action=AclAdd resource=User:alice result=ok",
		"user=admin source=127.0.0.1 action=AclDelete resource=User:alice result=ok",
		"user=admin source=127.0.0.1 action=UserPassword resource=User:alice result=ok",
		"user=admin source=127.0.0.1 action=UserDelete resource=User:alice result=ok",
		"action=UserDelete resource=User:admin result=\"that would leave",
		"audit: access denied: user=app source=127.0.0.1 action=UserAdd resource=\"User:*\"",
		"audit: access denied: user=app source=127.0.0.1 action=AclAdd resource=User:app",
		"audit: admin request: user=admin source=127.0.0.1 endpoint=UserList",
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range want {
		for !strings.Contains(n.logs.String(), w) {
			if time.Now().After(deadline) {
				t.Fatalf("no audit line with %q in the node's log:\n%s", w, n.logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
