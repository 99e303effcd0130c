package engine_test

import (
	"bytes"
	"context"
	"errors"
	"net"
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

// A node without users whose transport listens beyond loopback says so at
// start; one on loopback does not.
func TestOpenNodeBeyondLoopbackWarns(t *testing.T) {
	for _, tc := range []struct {
		host string
		warn bool
	}{{"0.0.0.0", true}, {"127.0.0.1", false}} {
		cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
		_, port, _ := net.SplitHostPort(ferrytest.FreeAddr(t))
		cfg.Plugins.Transport.Config = map[string]any{"listen": net.JoinHostPort(tc.host, port)}
		var logs bytes.Buffer
		var mu sync.Mutex
		e, err := engine.Start(context.Background(), cfg, engine.Options{
			Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
			Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: lockedWriter{&mu, &logs}}),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = e.Close(ctx)
		cancel()
		mu.Lock()
		got := strings.Contains(logs.String(), "listens beyond loopback with no security section")
		mu.Unlock()
		if got != tc.warn {
			t.Errorf("listen %s: warning logged = %v, want %v\n%s", tc.host, got, tc.warn, logs.String())
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
