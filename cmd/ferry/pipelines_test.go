package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// shippedBrokers are the broker pipelines a user starts as they are: each
// serves /metrics and /healthz on its own loopback admin port.
var shippedBrokers = []string{
	"../../pipelines/broker.yaml",
	"../../pipelines/cluster/master.yaml",
	"../../pipelines/cluster/slave.yaml",
	"../../pipelines/cluster/raft-1.yaml",
	"../../pipelines/cluster/raft-2.yaml",
	"../../pipelines/cluster/raft-3.yaml",
	"../../pipelines/cluster/raft-4.yaml",
}

// Every shipped broker pipeline has an admin listener on 127.0.0.1, each on
// a port of its own (the cluster pipelines run side by side on one machine).
func TestShippedBrokersHaveAdmin(t *testing.T) {
	seen := map[string]string{}
	for _, f := range shippedBrokers {
		cfg, err := config.Load(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		host, _, err := net.SplitHostPort(cfg.Admin.Listen)
		if err != nil || host != "127.0.0.1" {
			t.Errorf("%s: admin.listen %q, want an address on 127.0.0.1", f, cfg.Admin.Listen)
			continue
		}
		if other, ok := seen[cfg.Admin.Listen]; ok {
			t.Errorf("%s and %s both use admin.listen %s", other, f, cfg.Admin.Listen)
		}
		seen[cfg.Admin.Listen] = f
	}
}

// pipelines/broker.yaml run as shipped (only its ports and data dir moved by
// FERRY_ variables) answers /healthz and /metrics on its admin listener.
func TestBrokerPipelineServesMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	admin := ferrytest.FreeAddr(t)
	cmd := exec.Command(ferryBin, "run", "--log-level", "warn", "../../pipelines/broker.yaml")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "FERRY_NODE__DATA_DIR="+t.TempDir(), "FERRY_PLUGINS__TRANSPORT__CONFIG__LISTEN="+ferrytest.FreeAddr(t), "FERRY_ADMIN__LISTEN="+admin)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	get := func(path string) (int, string) {
		r, err := http.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	waitUntil(t, 60*time.Second, "/healthz answers 200", func() bool { code, _ := get("/healthz"); return code == http.StatusOK })
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, `ferry_flush_seconds_bucket{node="node-1",pipeline="broker"`) {
		t.Errorf("/metrics: %d\n%.2000s", code, body)
	}
}
