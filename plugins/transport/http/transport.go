// Package httptransport is Ferry's http transport plugin: a JSON-over-HTTP API
// to produce, pull-consume and commit offsets, for applications in any
// language (curl is enough). It forwards every request to the broker core.
//
// Endpoints (all answers are JSON; errors are 4xx/5xx with
// {"error":{"code":"NOT_FOUND","message":"..."}}):
//
//	POST /v1/topics/{topic}/messages   produce: JSON {"messages":[...]} or a raw body
//	GET  /v1/topics/{topic}/messages   pull: ?group=G [&queue=Q&offset=O] [&max=N] [&wait=1s]
//	POST /v1/groups/{group}/offsets    commit (ack): {"offsets":[{"topic","queue","offset"}]}
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
package httptransport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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
	mu      sync.Mutex
	cfg     Config
	lis     net.Listener // bound by Configure, consumed by Serve
	addr    string
	srv     *http.Server // while Serve runs
	serving bool
	closed  bool
}

var _ sdk.Transport = (*Transport)(nil)

// New returns an unconfigured transport.
func New() *Transport { return &Transport{} }

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
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("http transport: %w", sdk.ErrClosed)
	}
	if t.lis != nil || t.addr != "" {
		return fmt.Errorf("http transport: %w: Configure called twice", sdk.ErrInvalidArgument)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("http transport: cannot listen on %s (config key listen): %w", cfg.Listen, err)
	}
	t.cfg, t.lis, t.addr = cfg, lis, lis.Addr().String()
	return nil
}

// Addr is the address the transport listens on (port resolved), or "" before
// Configure.
func (t *Transport) Addr() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addr
}

// Serve serves the HTTP API, forwarding every request to core, until ctx
// ends. Then it stops taking requests, ends long polls (empty answers), lets
// other requests finish for up to shutdown_timeout, closes what is left and
// returns. It returns early only when the listener fails. If the host calls
// it again after it returned, it binds the same address anew.
func (t *Transport) Serve(ctx context.Context, core sdk.Core) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("http transport: %w", sdk.ErrClosed)
	}
	if t.addr == "" {
		t.mu.Unlock()
		return fmt.Errorf("http transport: %w", sdk.ErrNotConfigured)
	}
	if t.serving {
		t.mu.Unlock()
		return fmt.Errorf("http transport: %w: Serve is already running", sdk.ErrInvalidArgument)
	}
	lis := t.lis
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", t.addr); err != nil {
			t.mu.Unlock()
			return fmt.Errorf("http transport: cannot listen on %s again: %w", t.addr, err)
		}
	}
	draining, drain := context.WithCancel(context.Background())
	defer drain()
	api := newAPI(core, t.cfg, draining)
	srv := &http.Server{
		Handler:           api.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
	}
	cfg := t.cfg
	t.lis, t.srv, t.serving = nil, srv, true
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.srv, t.serving = nil, false
		t.mu.Unlock()
	}()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		if err == nil || errors.Is(err, http.ErrServerClosed) {
			return nil // Close stopped us
		}
		return fmt.Errorf("http transport: serving on %s: %w", t.addr, err)
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
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.srv != nil {
		t.srv.Close()
	}
	if t.lis != nil {
		err := t.lis.Close()
		t.lis = nil
		return err
	}
	return nil
}

// idPrefix is a random prefix for the ids the transport gives messages that
// come without one.
func idPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "h" + hex.EncodeToString(b[:])
}
