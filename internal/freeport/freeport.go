// Package freeport hands out free loopback ports to tests and to `ferry
// plugin test`'s harnesses (core/sdk/sdktest, internal/ferrytest), never the
// same one twice to cooperating processes.
//
// A port the kernel picks (127.0.0.1:0) comes from the ephemeral range,
// which is also where every outgoing connection's local port comes from: in
// a busy test run another connection can take such a port between the pick
// and the plugin's or node's own bind (seen as "address already in use", or
// gRPC bytes arriving at a raft port; raft members that dial a stopped peer
// make many). So ports come from below that range, at random, each reserved
// among processes with a file in $TMPDIR/ferrytest-ports: test packages run
// side by side, each its own process, and so do runs of `ferry plugin test`.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Addrs returns n loopback host:port addresses that were free a moment ago,
// that no other call in this process or (for Lease) in another process
// returned, and that lie below the kernel's ephemeral port range.
func Addrs(n int) ([]string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	hi := EphemeralLow()
	lo := max(hi-20000, 1024)
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries == 1000*n {
			return nil, fmt.Errorf("no free loopback port in %d..%d", lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if portsGiven[port] || !reserve(port) {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[port] = true
		out = append(out, l.Addr().String())
	}
	return out, nil
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// Lease is how long a port handed out stays reserved for its process.
const Lease = 15 * time.Minute

// reserve reserves port among processes with a file in
// $TMPDIR/ferrytest-ports (created exclusively; a reservation older than
// Lease is taken over).
func reserve(port int) bool {
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
	if fi, err := os.Stat(path); err == nil && time.Since(fi.ModTime()) > Lease {
		now := time.Now()
		return os.Chtimes(path, now, now) == nil
	}
	return false
}

// EphemeralLow is the first port of the kernel's ephemeral range (Linux:
// /proc/sys/net/ipv4/ip_local_port_range; 32768 elsewhere or if unreadable).
func EphemeralLow() int {
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
