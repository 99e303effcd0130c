package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/freeport"
)

// prepared is a user's pipeline rewritten to run under verify: its own data
// dir, a free loopback port for its grpc transport, no admin listener, its
// security section (users, ACLs) as it was, and kept running once its own
// generators and flows are done.
type prepared struct {
	src      string // the user's file
	path     string // the rewritten pipeline
	addr     string // its grpc transport
	pipeline *config.Pipeline
	// creds are what verify's calls to its broker present (brokerTLS,
	// brokerAuth).
	creds brokerCreds
}

// prepare rewrites the pipeline file src of a single node into dir.
func prepare(src, dir string) (*prepared, error) {
	return rewrite(src, dir, func(orig *config.Pipeline, doc map[string]any) error {
		if r := orig.Plugins.Replication.Type; r != "" && r != "none" {
			return fmt.Errorf("%s: plugins.replication.type is %q: give every pipeline file of the cluster (ferry verify A.yaml B.yaml ...)", src, r)
		}
		return nil
	})
}

// rewrite loads src, checks its transport, gives it a data dir in dir and a
// free loopback port, drops its admin listener, keeps its security section
// (a relative users_file made absolute, as it moves), lets
// edit change the rest (a cluster's replication addresses) and writes it to
// dir/pipeline.yaml.
func rewrite(src, dir string, edit func(orig *config.Pipeline, doc map[string]any) error) (*prepared, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	orig, err := config.LoadBytes(src, data)
	if err != nil {
		return nil, err
	}
	if t := orig.Plugins.Transport.Type; t != "" && t != "grpc" {
		return nil, fmt.Errorf("%s: plugins.transport.type is %q: ferry verify drives a node through the grpc transport", src, t)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	set := func(path []string, v any) { setPath(doc, path, v) }
	set([]string{"node", "data_dir"}, filepath.Join(dir, "data"))
	set([]string{"plugins", "transport", "type"}, "grpc")
	set([]string{"plugins", "transport", "config", "listen"}, addr)
	if dirs, ok := doc["plugins"].(map[string]any)["dirs"].([]any); ok {
		// Relative plugin directories stay where they were for the
		// node, which runs in this process's working directory.
		for i, d := range dirs {
			if s, ok := d.(string); ok && !filepath.IsAbs(s) {
				if abs, err := filepath.Abs(s); err == nil {
					dirs[i] = abs
				}
			}
		}
	}
	delete(doc, "admin")
	// The users and ACLs stay: verify's clients authenticate as the user
	// it is given (brokerAuth). The users file stays where it was.
	if sec, ok := doc["security"].(map[string]any); ok {
		if uf, ok := sec["users_file"].(string); ok && uf != "" && !filepath.IsAbs(uf) {
			sec["users_file"] = filepath.Join(filepath.Dir(src), uf)
		}
	}
	doc["keep_running"] = true
	if err := edit(orig, doc); err != nil {
		return nil, err
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		return nil, err
	}
	p, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("the pipeline as verify runs it (%s, from %s): %w", path, src, err)
	}
	return &prepared{src: src, path: path, addr: addr, pipeline: p}, nil
}

// setPath sets doc[path[0]][path[1]]... = v, making the maps on the way.
func setPath(doc map[string]any, path []string, v any) {
	m := doc
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// freeAddr returns a loopback address nobody listens on now, below the
// kernel's ephemeral range and reserved among cooperating processes
// (internal/freeport): a port the kernel picks (127.0.0.1:0) can be taken by
// another connection's local end before the node binds it, which made a
// node exit at start in a busy test run.
func freeAddr() (string, error) {
	a, err := freeport.Addrs(1)
	if err != nil {
		return "", err
	}
	return a[0], nil
}

// node is the `ferry run` process of a prepared pipeline, in a process group
// of its own with its plugins, so that a kill takes them all at once.
type node struct {
	exe  string
	p    *prepared
	logf *os.File
	env  []string // added to the node's environment

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newNode(exe string, p *prepared, logPath string) (*node, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &node{exe: exe, p: p, logf: f}, nil
}

// start runs the node and waits until its Broker API answers.
func (n *node) start(ctx context.Context) error {
	n.mu.Lock()
	fmt.Fprintf(n.logf, "--- ferry verify: starting the node at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(n.exe, "run", n.p.path)
	cmd.Stdout, cmd.Stderr = n.logf, n.logf
	cmd.Env = append(os.Environ(), n.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := startTied(cmd); err != nil {
		n.mu.Unlock()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	return n.waitServing(ctx, done)
}

// waitServing waits until the node answers Metadata, or fails if it exits.
func (n *node) waitServing(ctx context.Context, done chan struct{}) error {
	cc, err := dialBroker(n.p.addr, n.p.creds)
	if err != nil {
		return err
	}
	defer cc.Close()
	rpc := ferryv1.NewBrokerClient(cc)
	deadline := time.Now().Add(90 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := rpc.Metadata(cctx, &ferryv1.MetadataRequest{})
		cancel()
		if err == nil {
			return nil
		}
		if m := err.Error(); strings.Contains(m, "x509: ") || strings.Contains(m, "tls: ") {
			// A handshake refused: waiting will not mend it.
			return fmt.Errorf("the node at %s refused verify's TLS, or verify its certificate (--tls-ca, --tls-cert, --tls-key against the file's plugins.transport.config.tls): %v", n.p.addr, err)
		}
		if status.Code(err) == codes.Unauthenticated {
			// Nor will credentials it refused.
			return fmt.Errorf("the node at %s refused verify's credentials (--user and its password, or the client certificate, against the file's security.users): %v", n.p.addr, err)
		}
		select {
		case <-done:
			return fmt.Errorf("the node exited while starting (its log: %s)%s", n.logf.Name(), logTail(n.logf.Name(), 10))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node did not serve on %s within 90s (its log: %s): %v", n.p.addr, n.logf.Name(), err)
		}
	}
}

// kill sends SIGKILL to the node's process group (the core and every plugin
// process) and waits until the core is gone.
func (n *node) kill() error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return errors.New("the node is not running")
	}
	fmt.Fprintf(n.logf, "--- ferry verify: kill -9 of the node and its plugins at %s\n", time.Now().Format(time.RFC3339Nano))
	children := childPIDs(cmd.Process.Pid)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	for _, c := range children { // in case a plugin left the group
		_ = syscall.Kill(c, syscall.SIGKILL)
	}
	<-done
	// The plugins, too, are gone before a restart takes their files: every
	// process of the group (a plugin the host started while the group died
	// is in it as well).
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := groupMembers(cmd.Process.Pid)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of the node still run 30s after kill -9", left)
		}
		for _, c := range left {
			_ = syscall.Kill(c, syscall.SIGKILL)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	// state ppid pgrp: fields 0, 1, 2 after the command.
	return procs(func(f []string) bool { return len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" })
}

// procs lists the processes whose /proc/PID/stat fields (procStat) match.
func procs(match func(stat []string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && match(procStat(pid)) {
			out = append(out, pid)
		}
	}
	return out
}

// procStat returns the fields of /proc/PID/stat after the command name.
func procStat(pid int) []string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// plugin finds the node's plugin process of kind (storage, transport,
// replication): a built-in one (ferry plugin serve KIND/…) or an external
// ferry-KIND-… executable.
func (n *node) plugin(kind string) (int, error) {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil {
		return 0, errors.New("the node is not running")
	}
	for _, pid := range childPIDs(cmd.Process.Pid) {
		argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(argv), "\x00"), "\x00")
		line := strings.Join(args, " ")
		if strings.Contains(line, "plugin serve "+kind) || strings.Contains(filepath.Base(args[0]), "ferry-"+kind+"-") ||
			(len(args) > 1 && strings.Contains(filepath.Base(args[1]), "ferry-"+kind+"-")) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("the node has no %s plugin process", kind)
}

// killPlugin sends SIGKILL to the node's plugin process of kind; the node's
// plugin host restarts it.
func (n *node) killPlugin(kind string) (int, error) {
	pid, err := n.plugin(kind)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(n.logf, "--- ferry verify: kill -9 of the %s plugin (pid %d) at %s\n", kind, pid, time.Now().Format(time.RFC3339Nano))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return pid, err
	}
	return pid, waitGone(pid)
}

// powerLoss cuts the node's power: its file store drops what it did not
// fsync and dies (SIGUSR1: the hook ferry verify armed), then the rest of
// the node dies with SIGKILL.
func (n *node) powerLoss() error {
	pid, err := n.plugin("storage")
	if err != nil {
		return err
	}
	fmt.Fprintf(n.logf, "--- ferry verify: power loss (storage pid %d) at %s\n", pid, time.Now().Format(time.RFC3339Nano))
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return err
	}
	if err := waitGone(pid); err != nil {
		return fmt.Errorf("%w (was its power-loss hook armed? see node.log)", err)
	}
	return n.kill()
}

// waitGone waits until pid has exited (a zombie until its parent reaps it
// counts as gone): a send that starts later cannot reach it.
func waitGone(pid int) error {
	for deadline := time.Now().Add(30 * time.Second); processAlive(pid); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d still runs 30s after the fault", pid)
		}
	}
	return nil
}

// stop ends the node with SIGTERM, then SIGKILL if it lingers.
func (n *node) stop() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	_ = n.logf.Close()
}

// childPIDs lists the processes whose parent is pid (from /proc).
func childPIDs(pid int) []int {
	return procs(func(f []string) bool { return len(f) > 1 && f[1] == strconv.Itoa(pid) })
}

func processAlive(pid int) bool {
	f := procStat(pid)
	return len(f) > 0 && f[0] != "Z"
}

// signal stops (SIGSTOP) or continues (SIGCONT) the node's process group
// (target broker) or one of its plugin processes.
func (n *node) signal(target string, sig syscall.Signal) error {
	name := map[syscall.Signal]string{syscall.SIGSTOP: "SIGSTOP", syscall.SIGCONT: "SIGCONT"}[sig]
	if target == "broker" {
		n.mu.Lock()
		cmd := n.cmd
		n.mu.Unlock()
		if cmd == nil {
			return errors.New("the node is not running")
		}
		fmt.Fprintf(n.logf, "--- ferry verify: %s to the node and its plugins at %s\n", name, time.Now().Format(time.RFC3339Nano))
		return syscall.Kill(-cmd.Process.Pid, sig)
	}
	pid, err := n.plugin(target)
	if err != nil {
		return err
	}
	fmt.Fprintf(n.logf, "--- ferry verify: %s to the %s plugin (pid %d) at %s\n", name, target, pid, time.Now().Format(time.RFC3339Nano))
	return syscall.Kill(pid, sig)
}

// logTail returns the last lines of the log at path, indented on lines of
// their own after a colon (for an error that names the log), or "" when
// it cannot be read.
func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return ", ending:\n    " + strings.Join(l, "\n    ")
}
