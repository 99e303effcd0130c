package sdktest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// FreeLoopbackAddrs returns n loopback addresses ("127.0.0.1:port") whose
// ports were free a moment ago, for the plugins a harness starts to listen
// on. The ports are picked at random below the kernel's ephemeral range, and
// never twice in one process: a port of that range (what a listen on port 0
// gives) can be taken by any outgoing connection between the pick and the
// plugin's bind, and the members of a consensus group that dial a stopped
// peer make many.
func FreeLoopbackAddrs(n int) ([]string, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	hi := ephemeralLow()
	lo := max(hi-20000, 1024)
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries == 1000*n {
			return nil, fmt.Errorf("no free loopback port in %d..%d", lo, hi)
		}
		port := lo + rand.IntN(hi-lo)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		out = append(out, l.Addr().String())
		l.Close()
		portsGiven[port] = true
	}
	return out, nil
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

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
