// Package ferrytest has what Ferry's own tests share: the ferry binary built
// once per test process (built-in plugins run by re-executing it) and free
// loopback ports.
package ferrytest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
		dir, err := os.MkdirTemp("", "ferrytest-bin")
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
