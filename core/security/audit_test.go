package security

import (
	"net/netip"
	"strings"
	"testing"
)

// TestAuditDeniedRateLimited: a user repeating a refused call gets a burst
// of access denied lines, the last saying further ones are dropped, then
// none; another source (negative control: the limit is not global) is
// still logged.
func TestAuditDeniedRateLimited(t *testing.T) {
	log := &recLog{}
	a, err := NewAuth(Config{Users: []User{{Name: "alice", PasswordHash: "$2a$04$abcdefghijklmnopqrstuu5Zs3ZQHn5yDyN8Tl3Y6m3cC7pX9wYJG"}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	p := &Principal{User: "alice", Addr: netip.MustParseAddr("10.0.0.7")}
	for range 1000 {
		if err := a.Authorize(p, Create, Topic("orders")); err == nil {
			t.Fatal("alice may Create on Topic:orders; want denied")
		}
	}
	n := strings.Count(log.text(), "audit: access denied")
	if n < denyLogBurst || n > denyLogBurst+5 {
		t.Fatalf("%d access denied lines for 1000 refusals, want about %d:\n%s", n, denyLogBurst, log.text())
	}
	if !strings.Contains(log.text(), "further access denied lines") {
		t.Fatalf("no line says further denials are dropped:\n%s", log.text())
	}
	other := &Principal{User: "alice", Addr: netip.MustParseAddr("10.0.0.8")}
	if err := a.Authorize(other, Create, Topic("orders")); err == nil {
		t.Fatal("want denied")
	}
	if !strings.Contains(log.text(), "10.0.0.8") {
		t.Fatalf("a denial from another source was not logged:\n%s", log.text())
	}
}
