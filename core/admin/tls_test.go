package admin

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
)

// The admin listener serves HTTPS with the certificate of its tls section;
// plain HTTP is told to use HTTPS.
func TestServeTLS(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	p := ca.Issue("broker", securitytest.Options{})
	conf, err := security.TLS{CertFile: p.CertFile, KeyFile: p.KeyFile}.ServerConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := Serve(ctx, "127.0.0.1:0", Options{TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cc, err := security.ClientTLS{CAFile: ca.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cc}}
	resp, err := hc.Get("https://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("https /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("https /healthz: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + srv.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "HTTPS") {
		t.Fatalf("plain http on the TLS admin port: %d %q", resp.StatusCode, b)
	}
}
