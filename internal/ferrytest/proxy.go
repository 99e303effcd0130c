package ferrytest

import (
	"testing"

	"github.com/ferrymq/ferry/internal/netfault"
)

// Proxy is a TCP proxy to one target that a test can cut, black-hole, heal
// and delay (netfault.Proxy).
type Proxy = netfault.Proxy

// NewProxy starts a proxy to target; it stops when the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := netfault.New(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}
