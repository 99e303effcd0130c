package config

import (
	"github.com/ferrymq/ferry/core/security"
)

// Listeners are the node's listeners as the exposure rule sees them
// (security.Exposure): the admin listener, the transport's and the
// replication plugin's, read from the keys the built-in plugins use
// (listen and tls; the raft plugin's admin; secret_file). A plugin of
// another shape is judged by the same keys where it has them.
func (p *Pipeline) Listeners() []security.Listener {
	users := p.Security.Enabled()
	var ls []security.Listener
	if a := p.Admin.Listen; a != "" {
		ls = append(ls, security.Listener{Key: "admin.listen", Addr: a, TLS: p.Admin.TLS.Enabled(),
			Authenticated: users || p.Admin.TLS.Mutual(), Fix: "admin.tls and security.users (or admin.tls.client_ca_file)"})
	}
	t := p.Plugins.Transport
	addr, _ := t.Config["listen"].(string)
	if addr == "" {
		switch t.Type {
		case "grpc", "":
			addr = "127.0.0.1:7070"
		case "http":
			addr = "127.0.0.1:7080"
		}
	}
	tls, _ := t.Config["tls"].(map[string]any)
	ls = append(ls, security.Listener{Key: "plugins.transport.config.listen", Addr: addr, TLS: str(tls, "cert_file") != "",
		Authenticated: users || str(tls, "client_ca_file") != "", Fix: "plugins.transport.config.tls and security.users (or tls.client_ca_file)"})
	if r := p.Plugins.Replication; r.Type != "" && r.Type != "none" {
		tls, _ := r.Config["tls"].(map[string]any)
		secure := str(tls, "cert_file") != ""
		auth := str(tls, "ca_file") != "" || str(r.Config, "secret_file") != ""
		fix := "plugins.replication.config.tls (cert_file, key_file, ca_file: mutual TLS between the nodes)"
		for _, key := range []string{"listen", "admin"} {
			if a := str(r.Config, key); a != "" {
				ls = append(ls, security.Listener{Key: "plugins.replication.config." + key, Addr: a, TLS: secure, Authenticated: auth, Fix: fix})
			}
		}
	}
	return ls
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// exposure applies the exposure rule: without security.allow_plaintext, a
// listener beyond loopback without TLS and authentication is a problem at
// its key.
func (c *checker) exposure(p *Pipeline) {
	if p.Security.AllowPlaintext {
		return
	}
	for _, e := range security.Exposure(p.Listeners()) {
		c.add(e.Key, "%s", e.Message(false))
	}
}
