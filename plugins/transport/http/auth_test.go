package httptransport_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// secureNode starts a node with the http transport (extra: more keys of
// its config) and the users given (YAML list items).
func secureNode(t *testing.T, extra, users string) *engine.Engine {
	t.Helper()
	cfg, err := config.LoadBytes("http-auth.yaml", []byte(fmt.Sprintf(`name: http-auth
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: http, config: {listen: %q, shutdown_timeout: 500ms%s}}
topics: [{name: orders, queues: 2}, {name: logs, queues: 1}]
security:
  users:%s`, t.TempDir(), ferrytest.FreeAddr(t), extra, users)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Start(context.Background(), cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: io.Discard}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Close(ctx)
	})
	return e
}

// On a node with users the HTTP API takes Authorization: Basic: none or a
// wrong password is 401 with a WWW-Authenticate challenge, a topic the
// user may not use is 403 naming user, action and resource, and the right
// user gets through.
func TestHTTPBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("app-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e := secureNode(t, "", fmt.Sprintf(`
    - name: app
      password_hash: %q
      policies: [{resources: ["Topic:orders", "Group:g"], actions: [Pub, Sub]}]
`, hash))
	base := "http://" + e.Address()
	call := func(method, path, user, password, body string) (int, http.Header, string) {
		t.Helper()
		c := &http.Client{Timeout: 30 * time.Second}
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, err := http.NewRequest(method, base+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if user != "" {
				req.SetBasicAuth(user, password)
			}
			resp, err := c.Do(req)
			if err != nil {
				if time.Now().After(deadline) {
					t.Fatalf("%s %s: %v", method, path, err)
				}
				time.Sleep(50 * time.Millisecond) // until the transport serves
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, resp.Header, string(b)
		}
	}
	msg := `{"messages":[{"body":"hi"}]}`

	code, hdr, body := call("POST", "/v1/topics/orders/messages", "", "", msg)
	if code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") || !strings.Contains(body, "UNAUTHENTICATED") {
		t.Fatalf("produce without credentials: %d %v %s; want 401 with a Basic challenge", code, hdr, body)
	}
	if code, _, body := call("POST", "/v1/topics/orders/messages", "app", "wrong", msg); code != http.StatusUnauthorized || !strings.Contains(body, "unknown user or wrong password") {
		t.Fatalf("produce with a wrong password: %d %s; want 401", code, body)
	}
	if code, _, body := call("POST", "/v1/topics/orders/messages", "app", "app-pw", msg); code != http.StatusOK {
		t.Fatalf("produce as app: %d %s; want 200", code, body)
	}
	if code, _, body := call("POST", "/v1/topics/logs/messages", "app", "app-pw", msg); code != http.StatusForbidden || !strings.Contains(body, `user \"app\" may not`) || !strings.Contains(body, "Topic:logs") {
		t.Fatalf("produce as app to logs: %d %s; want 403 naming user and resource", code, body)
	}
	if code, _, body := call("GET", "/v1/topics/orders/messages?group=g&max=10&wait=1s", "app", "app-pw", ""); code != http.StatusOK || !strings.Contains(body, "hi") {
		t.Fatalf("pull as app: %d %s; want 200 with the message", code, body)
	}
	if code, _, body := call("GET", "/v1/topics/orders/messages?group=h&max=10&wait=1s", "app", "app-pw", ""); code != http.StatusForbidden || !strings.Contains(body, "Group:h") {
		t.Fatalf("pull as app in group h: %d %s; want 403 on Group:h", code, body)
	}
	// The transport's own /metrics is authenticated like the rest.
	if code, hdr, body := call("GET", "/metrics", "", "", ""); code != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") || strings.Contains(body, "ferry_http_") {
		t.Fatalf("/metrics without credentials: %d %s; want 401 and no metrics", code, body)
	}
	if code, _, body := call("GET", "/metrics", "app", "wrong", ""); code != http.StatusUnauthorized || strings.Contains(body, "ferry_http_") {
		t.Fatalf("/metrics with a wrong password: %d %s; want 401 and no metrics", code, body)
	}
	if code, _, body := call("GET", "/metrics", "app", "app-pw", ""); code != http.StatusOK || !strings.Contains(body, "ferry_http_connections") {
		t.Fatalf("/metrics as app: %d %s; want 200 with the transport's metrics", code, body)
	}
}

// Over mutual TLS the client certificate authenticates a user with
// certificate: true; another certificate from the same CA is 401.
func TestHTTPClientCertificateAuth(t *testing.T) {
	ca := securitytest.NewCA(t, "http-auth")
	srv := ca.Issue("broker", securitytest.Options{})
	app := ca.Issue("app", securitytest.Options{Client: true})
	other := ca.Issue("other", securitytest.Options{Client: true})
	e := secureNode(t, fmt.Sprintf(", tls: {cert_file: %q, key_file: %q, client_ca_file: %q}", srv.CertFile, srv.KeyFile, ca.CertFile), `
    - {name: app, certificate: true, policies: [{resources: ["Topic:orders"], actions: [Pub]}]}
`)
	url := "https://" + e.Address() + "/v1/topics/orders/messages"
	msg := `{"messages":[{"body":"hi"}]}`
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := do(t, httpsClient(t, ca, app), "POST", url, msg)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("produce with app's certificate: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := do(t, httpsClient(t, ca, other), "POST", url, msg); code != http.StatusUnauthorized || !strings.Contains(body, "names no user") {
		t.Fatalf("produce with another certificate: %d %s; want 401", code, body)
	}
}
