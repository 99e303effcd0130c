package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/security"
)

func TestAdminTLSIsValidated(t *testing.T) {
	_, err := LoadBytes("p.yaml", []byte(`name: p
topics: [{name: t}]
admin:
  listen: 127.0.0.1:0
  tls: {cert_file: /nonexistent/cert.pem}
`))
	if err == nil || !strings.Contains(err.Error(), "admin.tls.key_file") || !strings.Contains(err.Error(), "is required when cert_file is set") {
		t.Fatalf("admin.tls without key_file: %v", err)
	}
	_, err = LoadBytes("p.yaml", []byte(`name: p
topics: [{name: t}]
admin:
  listen: 127.0.0.1:0
  tls: {cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem}
`))
	if err == nil || !strings.Contains(err.Error(), "admin.tls.cert_file") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("admin.tls with missing files: %v", err)
	}
}

func TestSecuritySection(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(users, []byte(`users:
  - name: ops
    certificate: true
    super: true
  - name: app
    password_hash: not-a-hash
    policies:
      - {resources: [Topic:orders], actions: [Pub]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	pipeline := filepath.Join(dir, "p.yaml")
	_, err := LoadBytes(pipeline, []byte(`name: p
topics: [{name: t}]
security:
  users_file: users.yaml
  failed_auth: {burst: -1}
  users:
    - name: ops
      certificate: true
    - name: "bad name"
      certificate: true
`))
	if err == nil {
		t.Fatal("no problems")
	}
	for _, want := range []string{
		pipeline + `:5: security.failed_auth.burst: must be between 1 and 1000`,
		pipeline + `:9: security.users[1].name: user name "bad name" contains ' '`,
		users + `:2: users[0].name: user "ops" is also defined in the pipeline's security.users`,
		users + `:6: users[1].password_hash: is not a bcrypt hash`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in\n%v", want, err)
		}
	}
	if err := os.WriteFile(users, []byte("users:\n  - name: app\n    certificate: true\n    policies: [{resources: [Topic:orders], actions: [Pub], colour: red}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadBytes(pipeline, []byte("name: p\ntopics: [{name: t}]\nsecurity: {users_file: users.yaml}\n"))
	if want := users + ":4: users[0].policies[0].colour: unknown key; known keys here: resources, actions, decision, source_ips"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("unknown key in the users file: %v; want %q", err, want)
	}

	// A good file: its users join the pipeline's.
	if err := os.WriteFile(users, []byte("users: [{name: ops, certificate: true, super: true}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadBytes(pipeline, []byte("name: p\ntopics: [{name: t}]\nsecurity:\n  users_file: users.yaml\n  users: [{name: app, certificate: true}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Security.Enabled() || len(p.Security.Users) != 2 || p.Security.Users[1].Name != "ops" || !p.Security.Users[1].Super {
		t.Fatalf("users = %+v", p.Security.Users)
	}
	_, err = LoadBytes(pipeline, []byte("name: p\ntopics: [{name: t}]\nsecurity: {users_file: missing.yaml}\n"))
	if err == nil || !strings.Contains(err.Error(), "security.users_file") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing users file: %v", err)
	}
	// No section: an open node.
	p, err = LoadBytes(pipeline, []byte("name: p\ntopics: [{name: t}]\n"))
	if err != nil || p.Security.Enabled() {
		t.Fatalf("no section: %v, enabled %v", err, p.Security.Enabled())
	}
}

// A listener beyond loopback without TLS and authentication is refused,
// naming its key and the keys that secure it; security.allow_plaintext lets
// it through, and listeners on loopback, or secured, pass without it.
func TestPlaintextBeyondLoopbackRefused(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // "" : no problem
	}{
		{"transport on all interfaces", `plugins: {transport: {config: {listen: "0.0.0.0:7070"}}}`,
			[]string{"plugins.transport.config.listen", "beyond loopback, without TLS and authentication", "security.allow_plaintext: true"}},
		{"transport with an empty host", `plugins: {transport: {config: {listen: ":7070"}}}`,
			[]string{"plugins.transport.config.listen", "beyond loopback"}},
		{"admin on a LAN address", `admin: {listen: "10.1.2.3:9090"}`,
			[]string{"admin.listen", "admin.tls and security.users"}},
		{"replication listen and raft admin", `plugins: {replication: {type: raft, config: {listen: "10.0.0.1:7381", admin: "10.0.0.1:7481"}}}`,
			[]string{"plugins.replication.config.listen", "plugins.replication.config.admin", "plugins.replication.config.tls"}},
		{"replication with only a secret is still plaintext", `plugins: {replication: {type: sync, config: {listen: "0.0.0.0:7271", secret_file: s}}}`,
			[]string{"plugins.replication.config.listen", "without TLS:"}},
		{"allowed", "security: {allow_plaintext: true}\nplugins: {transport: {config: {listen: \"0.0.0.0:7070\"}}}\nadmin: {listen: \":9090\"}", nil},
		{"loopback", "plugins: {transport: {config: {listen: \"127.0.0.1:7070\"}}}\nadmin: {listen: \"localhost:9090\"}", nil},
		{"ipv6 loopback", `admin: {listen: "[::1]:9090"}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := LoadBytes("p.yaml", []byte("name: p\ntopics: [{name: t}]\n"+tc.yaml+"\n"))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\nwant %q in it", err, w)
				}
			}
			_ = p
		})
	}
}

// A node with users whose transport speaks TLS beyond loopback passes; so
// does mutual TLS without users.
func TestSecuredListenersBeyondLoopbackPass(t *testing.T) {
	p := &Pipeline{}
	p.Security.Users = []security.User{{Name: "u", Certificate: true}}
	p.Plugins.Transport = PluginRef{Type: "grpc", Config: map[string]any{"listen": "0.0.0.0:7070", "tls": map[string]any{"cert_file": "c", "key_file": "k"}}}
	p.Admin = Admin{Listen: "0.0.0.0:9090", TLS: security.TLS{CertFile: "c", KeyFile: "k"}}
	p.Plugins.Replication = PluginRef{Type: "raft", Config: map[string]any{"listen": "0.0.0.0:7381", "admin": "0.0.0.0:7481",
		"tls": map[string]any{"cert_file": "c", "key_file": "k", "ca_file": "ca"}}}
	if x := security.Exposure(p.Listeners()); len(x) != 0 {
		t.Fatalf("secured listeners refused: %+v", x)
	}
	p.Security.Users = nil
	x := security.Exposure(p.Listeners())
	if len(x) != 2 || x[0].Key != "admin.listen" || x[1].Key != "plugins.transport.config.listen" || x[0].Why != "authentication" {
		t.Fatalf("TLS without users or client CAs: %+v; want the admin and transport listeners, lacking authentication", x)
	}
	p.Plugins.Transport.Config["tls"].(map[string]any)["client_ca_file"] = "ca"
	p.Admin.TLS.ClientCAFile = "ca"
	if x := security.Exposure(p.Listeners()); len(x) != 0 {
		t.Fatalf("mutual TLS refused: %+v", x)
	}
}

func TestAdminOpenIsValidated(t *testing.T) {
	_, err := LoadBytes("p.yaml", []byte("name: p\ntopics: [{name: t}]\nadmin: {listen: \"127.0.0.1:0\", open: [metrics, pprof, nope]}\n"))
	if err == nil || !strings.Contains(err.Error(), "admin.open[1]: pprof cannot be open") || !strings.Contains(err.Error(), "admin.open[2]: must be one of metrics, healthz, readyz") {
		t.Fatalf("admin.open: %v", err)
	}
}
