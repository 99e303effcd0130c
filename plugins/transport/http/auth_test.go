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
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// On a node with users the HTTP API takes Authorization: Basic: none or a
// wrong password is 401 with a WWW-Authenticate challenge, a topic the
// user may not use is 403 naming user, action and resource, and the right
// user gets through.
func TestHTTPBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("app-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	listen := ferrytest.FreeAddr(t)
	cfg, err := config.LoadBytes("http-auth.yaml", []byte(fmt.Sprintf(`name: http-auth
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: http, config: {listen: %q, shutdown_timeout: 500ms}}
topics: [{name: orders, queues: 2}, {name: logs, queues: 1}]
security:
  users:
    - name: app
      password_hash: %q
      policies: [{resources: ["Topic:orders", "Group:g"], actions: [Pub, Sub]}]
`, t.TempDir(), listen, hash)))
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
}
