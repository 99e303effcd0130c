// Package ferrytest has what Ferry's own tests share: the ferry binary built
// once per test process (built-in plugins run by re-executing it) and free
// loopback ports.
//
// A package whose tests call Binary runs them through Main, which removes
// the builds when they end:
//
//	func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m)) }
package ferrytest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildMu sync.Mutex
	builds  = map[string]*build{}
)

type build struct {
	path string
	err  error
}

// Binary builds cmd/ferry once per test process and returns its path. The
// binary is built without the race detector: it runs plugin processes, and
// the code under test is the test process itself.
func Binary(tb testing.TB) string {
	tb.Helper()
	return BinaryWithTags(tb, "")
}

// BinaryWithTags is Binary built with build tags, e.g. "ferry_faults" for the
// fault-injection hooks that release builds do not have.
func BinaryWithTags(tb testing.TB, tags string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	b := builds[tags]
	if b == nil {
		b = &build{}
		builds[tags] = b
		sweepBuilds()
		dir, err := os.MkdirTemp("", buildDirPattern)
		if err == nil {
			buildDirs = append(buildDirs, dir)
			err = os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
		}
		if err != nil {
			b.err = err
		} else {
			b.path = filepath.Join(dir, "ferry")
			args := []string{"build", "-o", b.path}
			if tags != "" {
				args = append(args, "-tags", tags)
			}
			out, err := exec.Command("go", append(args, "github.com/ferrymq/ferry/cmd/ferry")...).CombinedOutput()
			if err != nil {
				b.err = fmt.Errorf("go build ./cmd/ferry (tags %q): %v\n%s", tags, err, out)
			}
		}
	}
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// buildDirPattern names the temporary directories Binary builds into;
// ownerFile in each holds the pid of the test process that made it.
const (
	buildDirPattern = "ferrytest-bin"
	ownerFile       = "owner.pid"
)

// buildDirs are this process's build directories, removed by RemoveBuilds.
var buildDirs []string

// Main runs a package's tests (m.Run) and then removes the ferry binaries
// Binary built for them; TestMain calls it. Its result is the exit code.
func Main(m *testing.M) int {
	code := m.Run()
	RemoveBuilds()
	return code
}

// RemoveBuilds removes the ferry binaries this process built (Main calls it
// after the tests); a later Binary builds afresh.
func RemoveBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	for _, d := range buildDirs {
		os.RemoveAll(d)
	}
	buildDirs = nil
	clear(builds)
}

// sweepBuilds removes the build directories that test processes which are
// gone left behind (killed, timed out, or run without Main): those whose
// owner pid no longer runs, and, from before owners were recorded, those
// without one that are over an hour old.
func sweepBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPattern+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(d)
			}
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && !processAlive(pid) {
			os.RemoveAll(d)
		}
	}
}

// processAlive says whether a process with this pid exists (signal 0).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// FreeAddr returns a loopback host:port that was free a moment ago, that no
// other call in this process or (for 15 minutes) in another test process
// returned, and that lies below the kernel's ephemeral port range. A port the kernel picks (127.0.0.1:0) comes from that
// range, which is also where every outgoing connection's local port comes
// from: in a busy test run another connection can take such a port between
// this check and the node's own bind (seen as "address already in use", or
// gRPC bytes arriving at a raft port).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	hi := ephemeralLow()
	lo := max(hi-20000, 1024)
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		if portsGiven[port] || !reservePort(port) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		return l.Addr().String()
	}
	tb.Fatalf("no free loopback port in %d..%d", lo, hi)
	return ""
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// portLease is how long a port handed out stays reserved for its test
// process (test packages run in parallel, each its own process).
const portLease = 15 * time.Minute

// reservePort reserves port among test processes with a file in
// $TMPDIR/ferrytest-ports (created exclusively; a reservation older than
// portLease is taken over).
func reservePort(port int) bool {
	dir := filepath.Join(os.TempDir(), "ferrytest-ports")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return true // no registry: rely on the bind check alone
	}
	path := filepath.Join(dir, strconv.Itoa(port))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err == nil {
		f.Close()
		return true
	}
	if fi, err := os.Stat(path); err == nil && time.Since(fi.ModTime()) > portLease {
		now := time.Now()
		return os.Chtimes(path, now, now) == nil
	}
	return false
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux:
// /proc/sys/net/ipv4/ip_local_port_range; 32768 elsewhere or if unreadable).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				return n
			}
		}
	}
	return 32768
}
