package engine_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// A pipeline whose node has users still runs its own generators and
// flows (as the node's internal super user), while a client without
// credentials is refused.
func TestQuickstartWithUsers(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 500)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Security = security.Config{Users: []security.User{{Name: "ops", PasswordHash: string(hash), Super: true}}}
	e := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, e.Address()); !errors.Is(err, sdk.ErrUnauthenticated) {
		if err == nil {
			c.Close()
		}
		t.Fatalf("dial without credentials: %v; want ErrUnauthenticated", err)
	}
	checkAllDelivered(t, runPipeline(t, e, 60*time.Second), 500)
}

// A node whose transport listens beyond loopback without TLS and
// authentication is refused at start, the error naming the listener and
// the key to set; with security.allow_plaintext it starts and warns. One on
// loopback starts without a word.
func TestPlaintextBeyondLoopbackRefused(t *testing.T) {
	for _, tc := range []struct {
		host    string
		allow   bool
		refused bool
		warn    bool
	}{{"0.0.0.0", false, true, false}, {"0.0.0.0", true, false, true}, {"127.0.0.1", false, false, false}} {
		cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
		_, port, _ := net.SplitHostPort(ferrytest.FreeAddr(t))
		cfg.Plugins.Transport.Config = map[string]any{"listen": net.JoinHostPort(tc.host, port)}
		cfg.Security.AllowPlaintext = tc.allow
		var logs bytes.Buffer
		var mu sync.Mutex
		e, err := engine.Start(context.Background(), cfg, engine.Options{
			Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
			Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: lockedWriter{&mu, &logs}}),
		})
		if tc.refused {
			if err == nil || !strings.Contains(err.Error(), "plugins.transport.config.listen: listens on 0.0.0.0:"+port+", beyond loopback, without TLS and authentication") ||
				!strings.Contains(err.Error(), "security.allow_plaintext: true") {
				t.Errorf("listen %s: start error %v; want the listener refused, naming its key and allow_plaintext", tc.host, err)
			}
			if e != nil {
				t.Error("a refused node was started")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = e.Close(ctx)
		cancel()
		mu.Lock()
		got := strings.Contains(logs.String(), "insecure listener") && strings.Contains(logs.String(), "plugins.transport.config.listen")
		mu.Unlock()
		if got != tc.warn {
			t.Errorf("listen %s (allow_plaintext %v): warning logged = %v, want %v\n%s", tc.host, tc.allow, got, tc.warn, logs.String())
		}
	}
}

// On a node with users the admin listener answers only authenticated
// users with the right: an unauthenticated scrape of /metrics is 401, a
// user without Get on Cluster 403, and pprof is for super users; the
// endpoints admin.open names stay open.
func TestAdminListenerRequiresAuthentication(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeInProcess, 1)
	cfg.Generators, cfg.Flows, cfg.KeepRunning = nil, nil, true
	cfg.Admin.Listen = ferrytest.FreeAddr(t)
	cfg.Admin.Pprof = true
	cfg.Admin.Open = []string{"healthz"}
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	cfg.Security = security.Config{FailedAuth: security.FailedAuth{Burst: 100}, Users: []security.User{
		{Name: "ops", PasswordHash: hash("ops-pw"), Super: true},
		{Name: "prom", PasswordHash: hash("prom-pw"), Policies: []security.Policy{{Resources: []string{"Cluster"}, Actions: []string{"Get"}}}},
		{Name: "app", PasswordHash: hash("app-pw"), Policies: []security.Policy{{Resources: []string{"Topic:*"}, Actions: []string{"Pub"}}}},
	}}
	start(t, cfg)
	get := func(path, user, pw string) int {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+cfg.Admin.Listen+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s: 401 without WWW-Authenticate", path)
		}
		if resp.StatusCode == http.StatusOK && path == "/metrics" && !strings.Contains(string(body), "ferry_append_seconds") {
			t.Errorf("GET /metrics as %s: no ferry metrics in\n%.300s", user, body)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, user, pw string
		want           int
	}{
		{"/metrics", "", "", http.StatusUnauthorized},
		{"/readyz", "", "", http.StatusUnauthorized},
		{"/debug/pprof/", "", "", http.StatusUnauthorized},
		{"/metrics", "prom", "wrong", http.StatusUnauthorized},
		{"/metrics", "nobody", "x", http.StatusUnauthorized},
		{"/metrics", "app", "app-pw", http.StatusForbidden},
		{"/metrics", "prom", "prom-pw", http.StatusOK},
		{"/readyz", "prom", "prom-pw", http.StatusOK},
		{"/debug/pprof/", "prom", "prom-pw", http.StatusForbidden},
		{"/debug/pprof/", "ops", "ops-pw", http.StatusOK},
		{"/metrics", "ops", "ops-pw", http.StatusOK},
		{"/healthz", "", "", http.StatusOK}, // admin.open
	} {
		if got := get(tc.path, tc.user, tc.pw); got != tc.want {
			t.Errorf("GET %s as %q: %d, want %d", tc.path, tc.user, got, tc.want)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
