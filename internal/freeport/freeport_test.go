package freeport

import (
	"net"
	"strconv"
	"testing"
)

// The addresses handed out are loopback, of ports below the ephemeral range
// (where no outgoing connection takes one), free, and never handed out
// twice.
func TestAddrs(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		addrs, err := Addrs(9)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 9 {
			t.Fatalf("Addrs(9) = %v", addrs)
		}
		for _, a := range addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil || host != "127.0.0.1" {
				t.Fatalf("address %q: not 127.0.0.1:port (%v)", a, err)
			}
			if p, _ := strconv.Atoi(port); p >= EphemeralLow() || p < 1024 {
				t.Fatalf("address %s: port outside 1024..%d", a, EphemeralLow())
			}
			if seen[a] {
				t.Fatalf("address %s handed out twice", a)
			}
			seen[a] = true
			l, err := net.Listen("tcp", a)
			if err != nil {
				t.Fatalf("address %s is not free: %v", a, err)
			}
			l.Close()
		}
	}
}
