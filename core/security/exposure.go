package security

import (
	"fmt"
	"net"
	"strings"
)

// Listener describes one listener of a node for the exposure rule: a
// listener outside loopback must speak TLS and authenticate its callers
// unless the pipeline says security.allow_plaintext: true.
type Listener struct {
	// Key is the config key of its address ("admin.listen").
	Key string
	// Addr is the address it binds (host:port).
	Addr string
	// TLS and Authenticated say whether it speaks TLS and whether its
	// callers must prove who they are (users, a client certificate of a
	// configured CA, or the cluster secret).
	TLS, Authenticated bool
	// Fix names the keys that secure it, for the error.
	Fix string
}

// Loopback reports whether a listen address (host:port) binds loopback
// only: "127.0.0.1:7070", "[::1]:7070", "localhost:7070". An empty host, a
// wildcard or any other host is beyond loopback.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Exposed is a listener the exposure rule refuses or, with
// allow_plaintext, warns about.
type Exposed struct {
	Listener
	// Why says what it lacks ("TLS", "authentication", "TLS and
	// authentication").
	Why string
}

// Message is the problem or warning for the listener.
func (e Exposed) Message(allowed bool) string {
	if allowed {
		return fmt.Sprintf("listens on %s, beyond loopback, without %s (security.allow_plaintext: true): anybody on the network path can read or forge its traffic", e.Addr, e.Why)
	}
	return fmt.Sprintf("listens on %s, beyond loopback, without %s: set %s, or security.allow_plaintext: true to run it so anyway (docs/security.md)", e.Addr, e.Why, e.Fix)
}

// Exposure returns the listeners that break the rule.
func Exposure(ls []Listener) []Exposed {
	var out []Exposed
	for _, l := range ls {
		if _, _, err := net.SplitHostPort(l.Addr); err != nil || Loopback(l.Addr) || (l.TLS && l.Authenticated) {
			continue // a malformed address is its key's own problem
		}
		why := "TLS and authentication"
		switch {
		case l.TLS:
			why = "authentication"
		case l.Authenticated:
			why = "TLS"
		}
		out = append(out, Exposed{Listener: l, Why: why})
	}
	return out
}
