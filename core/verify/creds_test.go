package verify

import (
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/security/securitytest"
)

// brokerTLS refuses a run whose files and flags do not fit, saying what to
// give, and builds credentials from real certificates when they do.
func TestBrokerTLS(t *testing.T) {
	ca := securitytest.NewCA(t, "ca")
	app := ca.Issue("app", securitytest.Options{Client: true})
	node := func(tls map[string]any) *prepared {
		cfg := map[string]any{"listen": "127.0.0.1:1"}
		if tls != nil {
			cfg["tls"] = tls
		}
		p := &config.Pipeline{}
		p.Plugins.Transport.Config = cfg
		return &prepared{pipeline: p}
	}
	plain := node(nil)
	secure := node(map[string]any{"cert_file": "s.pem", "key_file": "s-key.pem"})
	mutual := node(map[string]any{"cert_file": "s.pem", "key_file": "s-key.pem", "client_ca_file": "ca.pem"})
	for _, c := range []struct {
		tls   ClientTLS
		nodes []*prepared
		want  string // "" = credentials
	}{
		{ClientTLS{}, []*prepared{plain, plain}, "plaintext"},
		{ClientTLS{CA: ca.CertFile}, []*prepared{plain}, "no pipeline file's plugins.transport.config.tls serves TLS"},
		{ClientTLS{CA: ca.CertFile}, []*prepared{secure, plain}, "1 of the 2 pipeline files serve TLS"},
		{ClientTLS{}, []*prepared{secure}, "give --tls-ca"},
		{ClientTLS{CA: ca.CertFile}, []*prepared{mutual}, "give --tls-cert and --tls-key"},
		{ClientTLS{CA: ca.CertFile + ".missing"}, []*prepared{secure}, ".missing"},
		{ClientTLS{CA: ca.CertFile}, []*prepared{secure, secure}, ""},
		{ClientTLS{CA: ca.CertFile, Cert: app.CertFile, Key: app.KeyFile}, []*prepared{mutual}, ""},
	} {
		creds, err := brokerTLS(c.tls, c.nodes)
		switch {
		case c.want == "plaintext":
			if creds != nil || err != nil {
				t.Errorf("%+v: %v, %v; want plaintext", c.tls, creds, err)
			}
		case c.want == "":
			if creds == nil || err != nil {
				t.Errorf("%+v: %v, %v; want credentials", c.tls, creds, err)
			}
		case err == nil || !strings.Contains(err.Error(), c.want):
			t.Errorf("%+v: %v; want an error with %q", c.tls, err, c.want)
		}
	}
}
