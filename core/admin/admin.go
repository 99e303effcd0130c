// Package admin is a broker node's admin listener: Prometheus metrics,
// liveness and readiness probes, and Go's profiler, on an HTTP address of
// their own (pipeline key admin.listen), apart from the transport's.
//
//	GET /metrics        Prometheus text format, from the node's Metrics
//	GET /healthz        200 while the process runs
//	GET /readyz         200 when Options.Ready returns nil, else 503 and why
//	GET /debug/pprof/…  net/http/pprof, only with Options.Pprof (admin.pprof: true)
//	    /v1/users…      live users and ACLs, with Options.Users (a node with users)
//
// With Options.TLS the listener serves HTTPS (admin.tls in the pipeline).
// With Options.Authorize (a node with users) every endpoint but those in
// Options.Open (admin.open) needs an authenticated user with the right
// (docs/security.md): HTTP Basic, or a client certificate under mutual TLS.
//
// The metrics a node exports are defined in metrics.go, each with the
// function its producer calls.
package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferrymq/ferry/core/sdk"
)

// Timeouts of the admin server. Profiles and traces stream for as long as
// asked (?seconds=N), so writes are not bounded.
const (
	readHeaderTimeout = 5 * time.Second
	idleTimeout       = 60 * time.Second
	shutdownTimeout   = 5 * time.Second
	readyTimeout      = 2 * time.Second // a Ready check taking longer is not ready
)

// Options configure the admin handler.
type Options struct {
	// Metrics served on /metrics; nil serves none (the handler answers 404).
	Metrics *Metrics
	// Ready reports whether the node serves: nil when it does, else why not
	// (e.g. "storage plugin restarting"). Called on every /readyz request,
	// from the server's goroutines, with a context that ends after 2 s.
	// Nil means always ready.
	Ready func(ctx context.Context) error
	// Pprof serves Go's profiler on /debug/pprof/. Off by default: a
	// profile shows the process's internals and costs CPU while it runs.
	Pprof bool
	// TLS, when not nil, makes Serve speak HTTPS with it (built by
	// security.TLS.ServerConfig, so that certificates reload).
	TLS *tls.Config
	// Authorize, when not nil, is asked before every request to an
	// endpoint not in Open: nil lets it through; an error wrapping
	// sdk.ErrUnauthenticated answers 401, sdk.ErrPermissionDenied 403.
	// Called from the server's goroutines.
	Authorize func(r *http.Request, e Endpoint) error
	// Open are the endpoints served without Authorize (admin.open).
	Open []Endpoint
	// Users, when not nil, serves /v1/users… (live user and ACL
	// administration, security.Auth.UsersHandler), which authenticates
	// and authorizes each request itself; never open.
	Users http.Handler
}

// Endpoint is one of the admin listener's endpoints, as admin.open names
// it.
type Endpoint string

// The endpoints.
const (
	EndpointMetrics Endpoint = "metrics"
	EndpointHealthz Endpoint = "healthz"
	EndpointReadyz  Endpoint = "readyz"
	EndpointPprof   Endpoint = "pprof"
)

// Endpoints lists them all, in the order admin.open's problems name them.
var Endpoints = []Endpoint{EndpointMetrics, EndpointHealthz, EndpointReadyz, EndpointPprof}

// guarded wraps h in the Authorize check of e.
func guarded(opts Options, e Endpoint, h http.Handler) http.Handler {
	if opts.Authorize == nil || slices.Contains(opts.Open, e) {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := opts.Authorize(r, e); err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			code := http.StatusForbidden
			if errors.Is(err, sdk.ErrUnauthenticated) {
				code = http.StatusUnauthorized
				w.Header().Set("WWW-Authenticate", `Basic realm="ferry admin", charset="UTF-8"`)
			}
			w.WriteHeader(code)
			fmt.Fprintln(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Handler returns the admin endpoints. Serve uses it; tests may serve it
// with httptest.
func Handler(opts Options) http.Handler {
	mux := http.NewServeMux()
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", guarded(opts, EndpointMetrics, promhttp.HandlerFor(opts.Metrics.reg, promhttp.HandlerOpts{
			Registry:          opts.Metrics.reg, // counts its own errors
			EnableOpenMetrics: true,
		})))
	}
	mux.Handle("GET /healthz", guarded(opts, EndpointHealthz, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})))
	mux.Handle("GET /readyz", guarded(opts, EndpointReadyz, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			if err := opts.Ready(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})))
	if opts.Users != nil {
		mux.Handle("/v1/users", opts.Users)
		mux.Handle("/v1/users/", opts.Users)
	}
	// Registered on this mux only: nothing in Ferry serves
	// http.DefaultServeMux, where importing net/http/pprof also puts them.
	if opts.Pprof {
		pp := func(path string, h http.HandlerFunc) { mux.Handle(path, guarded(opts, EndpointPprof, h)) }
		pp("/debug/pprof/", pprof.Index)
		pp("/debug/pprof/cmdline", pprof.Cmdline)
		pp("/debug/pprof/profile", pprof.Profile)
		pp("/debug/pprof/symbol", pprof.Symbol)
		pp("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Server is a running admin listener.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	err  error
}

// Serve binds addr ("127.0.0.1:9090"; port 0 picks a free one) and serves
// the admin endpoints in the background until ctx ends or Close is called.
// A bind error is returned at once, so that a node fails at start-up, not
// later. Called once by the engine when the pipeline sets admin.listen.
func Serve(ctx context.Context, addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	s := &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           Handler(opts),
			ReadHeaderTimeout: readHeaderTimeout,
			IdleTimeout:       idleTimeout,
			TLSConfig:         opts.TLS,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		var err error
		if opts.TLS != nil {
			err = s.srv.ServeTLS(ln, "", "") // certificates from TLSConfig
		} else {
			err = s.srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.done:
		}
	}()
	return s, nil
}

// Addr is the address the server listens on, with the port it got.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server: it stops accepting, lets requests in flight end
// (up to 5 s; a running profile is cut), and returns the error that ended
// serving, if any. Safe to call more than once.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return s.err
}
