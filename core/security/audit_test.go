package security

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// kvLog records every line, Info and Warn, as "msg: key=value ...".
type kvLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *kvLog) Info(msg string, args ...any) { l.Warn(msg, args...) }
func (l *kvLog) Warn(msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(msg + ":")
	for i := 0; i+1 < len(args); i += 2 {
		fmt.Fprintf(&l.b, " %v=%v", args[i], args[i+1])
	}
	l.b.WriteString("\n")
}

func (l *kvLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

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

// TestAuditAdminRequests: allowed reads of the admin listener are logged,
// the first of each user, source and endpoint, then not again within a
// minute (the repeats are counted); another endpoint (the control) is
// logged on its own; every pprof request is logged.
func TestAuditAdminRequests(t *testing.T) {
	log := &kvLog{}
	a, err := NewAuth(Config{Users: []User{{Name: "root", PasswordHash: hashOf(t, "pw"), Super: true}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	req := func(path string) *http.Request {
		r := httptest.NewRequest("GET", path, nil)
		r.SetBasicAuth("root", "pw")
		return r
	}
	for range 5 {
		if err := a.AuthorizeAdmin(req("/metrics"), "metrics", false); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(log.text(), "endpoint=metrics"); n != 1 {
		t.Fatalf("%d lines for 5 metrics reads within a minute, want 1:\n%s", n, log.text())
	}
	if err := a.AuthorizeAdmin(req("/readyz"), "readyz", false); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := a.AuthorizeAdmin(req("/debug/pprof/heap"), "pprof", true); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(log.text(), "endpoint=readyz") || strings.Count(log.text(), "endpoint=pprof") != 3 {
		t.Fatalf("readyz once and pprof three times, want logged:\n%s", log.text())
	}
}
