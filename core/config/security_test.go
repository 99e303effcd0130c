package config

import (
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
