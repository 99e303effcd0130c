package engine_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The admin listener serves the node's metrics and health: appends and
// deliveries are counted, a restarted plugin is counted, /readyz answers.
func TestAdminMetrics(t *testing.T) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
	cfg.Generators, cfg.Flows = nil, nil
	cfg.Admin.Listen = ferrytest.FreeAddr(t)
	e := start(t, cfg)
	base := "http://" + cfg.Admin.Listen

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, e.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p := cl.NewProducer(client.ProducerOptions{})
	for i := 0; i < 25; i++ {
		if _, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	metric := func(body, name, label string) string {
		re := regexp.MustCompile(`(?m)^` + name + `\{[^}]*` + regexp.QuoteMeta(label) + `[^}]*\} (\S+)$`)
		if m := re.FindStringSubmatch(body); m != nil {
			return m[1]
		}
		return ""
	}
	_, body := get(t, base+"/metrics")
	if v := metric(body, "ferry_append_messages_total", `topic="orders"`); v != "25" {
		t.Errorf("ferry_append_messages_total{topic=orders} = %q, want 25", v)
	}
	if !strings.Contains(body, "ferry_flush_seconds_count") {
		t.Error("no ferry_flush_seconds histogram")
	}

	// A killed plugin is restarted and counted.
	pid := e.Storage().Pid()
	_, gen, _ := e.Storage().Current()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Storage().Next(ctx, gen); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, base+"/metrics")
	if v := metric(body, "ferry_plugin_restarts_total", `kind="storage"`); v != "1" {
		t.Errorf("ferry_plugin_restarts_total{kind=storage} = %q, want 1", v)
	}
}
