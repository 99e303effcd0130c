package engine_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// children lists the child pids of pid (Linux).
func children(pid int) []int {
	// Each thread has its own list: Go starts processes from any thread.
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// When the broker process is SIGKILLed its plugins exit by themselves, and
// the next broker removes the dead one's plugin socket directory.
func TestPluginsExitWithHost(t *testing.T) {
	bin := ferrytest.Binary(t)
	dir := t.TempDir()
	yaml := filepath.Join(dir, "broker.yaml")
	addr := ferrytest.FreeAddr(t)
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: hostdeath
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: t, queues: 1}]
`, filepath.Join(dir, "data"), addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir() // the broker's TMPDIR, where plugin sockets live
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", yaml)
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	cmd := run()
	var plugins []int
	waitFor(t, 30*time.Second, "two plugin processes", func() bool {
		plugins = children(cmd.Process.Pid)
		return len(plugins) == 2
	})
	sockDir := filepath.Join(tmp, "ferry-"+strconv.Itoa(cmd.Process.Pid))
	if _, err := os.Stat(sockDir); err != nil {
		t.Fatalf("plugin socket dir: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitFor(t, 3*time.Second, "plugins to exit after their host died", func() bool {
		for _, p := range plugins {
			// A zombie (reaped by init later) counts as exited.
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && !strings.Contains(string(st), ") Z ") {
				return false
			}
		}
		return true
	})

	// The next broker cleans up the stale socket directory and stops cleanly.
	cmd2 := run()
	waitFor(t, 30*time.Second, "stale socket dir removed", func() bool {
		_, err := os.Stat(sockDir)
		return os.IsNotExist(err)
	})
	waitFor(t, 30*time.Second, "second broker's plugins", func() bool { return len(children(cmd2.Process.Pid)) == 2 })
	waitFor(t, 30*time.Second, "second broker's transport to listen", func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err := cmd2.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd2.Wait(); err != nil {
		t.Fatalf("broker exited with %v after SIGTERM, want status 0", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "ferry-"+strconv.Itoa(cmd2.Process.Pid))); !os.IsNotExist(err) {
		t.Errorf("socket dir of a cleanly stopped broker still exists: %v", err)
	}
}

// A plugin whose host died before the plugin looked at its parent (it was
// already handed to init) still exits: the host names itself in the
// plugin's environment.
func TestPluginExitsWhenHostDiedBeforeItStarted(t *testing.T) {
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ferrytest.Binary(t), "plugin", "serve", "storage/memory")
	cmd.Env = append(os.Environ(), sdk.Handshake.MagicCookieKey+"="+sdk.Handshake.MagicCookieValue,
		sdk.EnvHostPID+"="+strconv.Itoa(dead.Process.Pid), "PLUGIN_UNIX_SOCKET_DIR="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("plugin exited with %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("plugin still running 10s after its host was gone")
	}
}
