package ferrytest

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddr hands out distinct, bindable loopback ports below the ephemeral
// range, where no outgoing connection can take them.
func TestFreeAddr(t *testing.T) {
	seen := map[string]bool{}
	low := ephemeralLow()
	for range 200 {
		a := FreeAddr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		if port, _ := strconv.Atoi(p); port >= low || port < 1024 {
			t.Fatalf("%s: port outside 1024..%d", a, low)
		}
	}
	l, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatalf("a free address cannot be bound: %v", err)
	}
	l.Close()
}
