package httptransport_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
)

// httpsClient trusts ca (and presents pair when it has files).
func httpsClient(t *testing.T, ca *securitytest.CA, pair securitytest.Pair) *http.Client {
	t.Helper()
	conf, err := security.ClientTLS{CAFile: ca.CertFile, CertFile: pair.CertFile, KeyFile: pair.KeyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
}

func do(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPSWithRotation serves the API over TLS from a subprocess
// transport: a plain-HTTP request is told to use HTTPS, the certificate is
// replaced while a keep-alive client produces, new handshakes get the new
// certificate, and every acked message is pulled afterwards.
func TestHTTPSWithRotation(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	first := ca.Issue("broker", securitytest.Options{})
	_, e := nodeEngine(t, fmt.Sprintf(`, tls: {cert_file: %q, key_file: %q}`, first.CertFile, first.KeyFile))
	base := "https://" + e.Address()

	resp, err := http.Get("http://" + e.Address() + "/v1/metadata")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "HTTPS") {
		t.Fatalf("plain HTTP on the TLS port: %d %q, want 400 naming HTTPS", resp.StatusCode, b)
	}

	c := httpsClient(t, ca, securitytest.Pair{})
	acked := 0
	produce := func() {
		code, body := do(t, c, "POST", base+"/v1/topics/orders/messages", `{"messages":[{"body":"m"}]}`)
		if code != 200 || !strings.Contains(body, `"OK"`) {
			t.Fatalf("produce over HTTPS: %d %s", code, body)
		}
		acked++
	}
	for range 20 {
		produce()
	}
	second := ca.Issue("broker", securitytest.Options{})
	want := securitytest.Serial(t, second.CertFile)
	conf, err := security.ClientTLS{CAFile: ca.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.Dial("tcp", e.Address(), conf)
		if err != nil {
			t.Fatalf("handshake after rotation: %v", err)
		}
		got := conn.ConnectionState().PeerCertificates[0].SerialNumber
		conn.Close()
		if got.Cmp(want) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the transport still serves the first certificate 30s after rotation")
		}
		produce()
		time.Sleep(50 * time.Millisecond)
	}
	for range 20 {
		produce()
	}
	// A new client (new connection, new certificate) pulls everything acked.
	c2 := httpsClient(t, ca, securitytest.Pair{})
	code, body := do(t, c2, "GET", base+"/v1/topics/orders/messages?group=g&max=10000", "")
	var p pulled
	if err := json.Unmarshal([]byte(body), &p); code != 200 || err != nil {
		t.Fatalf("pull: %d %s %v", code, body, err)
	}
	if len(p.Messages) != acked {
		t.Fatalf("pulled %d messages, %d were acked", len(p.Messages), acked)
	}
}

func TestHTTPSMutualTLS(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	srv := ca.Issue("broker", securitytest.Options{})
	_, e := nodeEngine(t, fmt.Sprintf(`, tls: {cert_file: %q, key_file: %q, client_ca_file: %q}`, srv.CertFile, srv.KeyFile, ca.CertFile))
	url := "https://" + e.Address() + "/v1/metadata"
	if _, err := httpsClient(t, ca, securitytest.Pair{}).Get(url); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("no client certificate: got %v, want 'certificate required'", err)
	}
	other := securitytest.NewCA(t, "other")
	intruder := httpsClient(t, ca, other.Issue("intruder", securitytest.Options{Client: true}))
	// Present the certificate even though the broker names another CA.
	conf := intruder.Transport.(*http.Transport).TLSClientConfig
	cert := conf.Certificates[0]
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	if _, err := intruder.Get(url); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("client certificate of another CA: got %v, want 'unknown certificate authority'", err)
	}
	if code, body := do(t, httpsClient(t, ca, ca.Issue("app", securitytest.Options{Client: true})), "GET", url, ""); code != 200 {
		t.Fatalf("client certificate of the CA: %d %s", code, body)
	}
}
