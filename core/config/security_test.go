package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
