// Package httptransport is Ferry's http transport plugin: a JSON-over-HTTP API
// to produce, pull-consume and commit offsets, for applications in any
// language (curl is enough). It forwards every request to the broker core.
//
// Endpoints (all answers are JSON; errors are 4xx/5xx with
// {"error":{"code":"NOT_FOUND","message":"..."}}):
//
//	POST /v1/topics/{topic}/messages   produce: JSON {"messages":[...]} or a raw body
//	GET  /v1/topics/{topic}/messages   pull: ?group=G [&queue=Q&offset=O] [&max=N] [&wait=1s]
//	POST /v1/groups/{group}/offsets    commit (ack): {"offsets":[{"topic","queue","offset"}],"generation"}
//	GET  /v1/groups/{group}/offsets    ?topic=T: committed offsets and queue ranges
//	GET  /v1/metadata                  topics, queues, brokers
//
// Config section (all keys optional):
//
//	listen: 127.0.0.1:7080      # host:port
//	max_message_bytes: 4MiB     # largest body+headers of one message (413 past it)
//	max_request_bytes: 16MiB    # largest HTTP request body (413 past it)
//	request_timeout: 10s        # produce/commit/metadata bound at the broker
//	max_wait: 30s               # longest long poll
//	shutdown_timeout: 2s        # drain bound when the broker stops
//	body_timeout: 30s           # time to receive a request body (408 past it)
//	max_connections: 1024       # open connections (503 past it)
//	max_inflight_bytes: 128MiB  # request bodies held at once (429 past it)
//
// GET /metrics on the same address serves the transport's own metrics
// (ferry_http_refused_total{reason}, ferry_http_connections,
// ferry_http_inflight_bytes); on a node with users it needs credentials
// like every other endpoint (401 without them).
package httptransport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Type is the plugin's type name in pipeline YAML.
const Type = "http"

// Transport is the http transport. Its methods follow sdk.Transport: the host
// calls Validate (any time), Configure once, Serve once, then Close.
type Transport struct {
	lis *sdk.Listener
	mu  sync.Mutex
	cfg Config
	tls *tls.Config // nil: plain HTTP
}

var _ sdk.Transport = (*Transport)(nil)

// New returns an unconfigured transport.
func New() *Transport { return &Transport{lis: sdk.NewListener("http transport")} }

// Validate checks a config section without binding anything.
func (t *Transport) Validate(config []byte) sdk.Problems {
	_, ps := decodeConfig(config)
	return ps
}

// Configure applies the config section and binds the listener, so that an
// address already in use is reported here rather than when Serve starts.
func (t *Transport) Configure(_ context.Context, config []byte, _ *sdk.Environment) error {
	cfg, ps := decodeConfig(config)
	if len(ps) > 0 {
		return ps
	}
	var tlsConf *tls.Config
	if cfg.TLS.Enabled() {
		c, err := cfg.TLS.ServerConfig(slog.Default().With("listener", "http transport"))
		if err != nil {
			return err
		}
		tlsConf = c
	}
	if err := t.lis.Bind(cfg.Listen); err != nil {
		return err
	}
	t.mu.Lock()
	t.cfg = cfg
	t.tls = tlsConf
	t.mu.Unlock()
	return nil
}

// Addr is the address the transport listens on (port resolved), or "" before
// Configure.
func (t *Transport) Addr() string { return t.lis.Addr() }

// Serve serves the HTTP API, forwarding every request to core, until ctx
// ends. Then it stops taking requests, ends long polls (empty answers), lets
// other requests finish for up to shutdown_timeout, closes what is left and
// returns. It returns early only when the listener fails. If the host calls
// it again after it returned, it binds the same address anew.
func (t *Transport) Serve(ctx context.Context, core sdk.Core) error {
	t.mu.Lock()
	cfg, tlsConf := t.cfg, t.tls
	t.mu.Unlock()
	draining, drain := context.WithCancel(context.Background())
	defer drain()
	api := newAPI(core, cfg, draining)
	srv := &http.Server{
		Handler:           api.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ConnState:         api.lim.connState,
		TLSConfig:         tlsConf,
	}
	lis, err := t.lis.Take(func() { _ = srv.Close() })
	if err != nil {
		return err
	}
	defer t.lis.Done()

	served := make(chan error, 1)
	go func() {
		if tlsConf != nil {
			served <- srv.ServeTLS(lis, "", "") // certificates from TLSConfig
			return
		}
		served <- srv.Serve(lis)
	}()
	select {
	case err := <-served:
		if err == nil || errors.Is(err, http.ErrServerClosed) {
			return nil // Close stopped us
		}
		return fmt.Errorf("http transport: serving on %s: %w", t.lis.Addr(), err)
	case <-ctx.Done():
	}
	drain()
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.ShutdownTimeout))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-served
	return nil
}

// Close releases the listener if Serve never ran, or stops a running Serve at
// once. Safe to call more than once.
func (t *Transport) Close() error { return t.lis.Close() }

// idPrefix is a random prefix for the ids the transport gives messages that
// come without one.
func idPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "h" + hex.EncodeToString(b[:])
}
