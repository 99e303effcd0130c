// Package grpctransport is Ferry's grpc transport plugin: it serves the Broker
// service of core/proto (ferry.v1.Broker) to producers and consumers over
// gRPC on one TCP listener and forwards every call to the broker core. The Go
// client library (core/client) speaks to it.
//
// Config section (all keys optional):
//
//	listen: 127.0.0.1:7070         # host:port
//	max_message_bytes: 4MiB        # largest body+headers of one message
//	max_inflight_per_stream: 1024  # Produce requests at the core per stream
//	max_concurrent_streams: 0      # gRPC streams per connection; 0 = no limit
//	shutdown_timeout: 2s           # drain bound when the broker stops
//	tls:                           # see security.TLS; empty = plaintext
//	  cert_file: broker.pem
//	  key_file: broker-key.pem
//	  client_ca_file: ca.pem       # mutual TLS
package grpctransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/tlsbatch"
)

// Type is the plugin's type name in pipeline YAML.
const Type = "grpc"

// Transport is the grpc transport. Its methods follow sdk.Transport: the host
// calls Validate (any time), Configure once, Serve once, then Close.
type Transport struct {
	lis *sdk.Listener
	mu  sync.Mutex
	cfg Config
	tls *tls.Config // nil: plaintext
}

var _ sdk.Transport = (*Transport)(nil)

// New returns an unconfigured transport.
func New() *Transport { return &Transport{lis: sdk.NewListener("grpc transport")} }

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
		c, err := cfg.TLS.ServerConfig(slog.Default().With("listener", "grpc transport"))
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

// Addr is the address the transport listens on (with the port resolved when
// listen named port 0), or "" before Configure.
func (t *Transport) Addr() string { return t.lis.Addr() }

// Serve serves the Broker service, forwarding every call to core, until ctx
// ends. Then it stops taking requests, lets in-flight ones finish and answer
// for up to shutdown_timeout, cuts the connections that are left (clients
// retry elsewhere or later) and returns. It returns early only when the
// listener fails.
//
// Serve is meant to be called once; if the host calls it again after it
// returned, it binds the same address anew.
func (t *Transport) Serve(ctx context.Context, core sdk.Core) error {
	t.mu.Lock()
	cfg, tlsConf := t.cfg, t.tls
	t.mu.Unlock()
	b := newBrokerServer(core, cfg)
	opts := serverOptions(cfg, sdk.EncodesRequests(core))
	if tlsConf != nil {
		// One socket write per flush, as in plaintext (internal/tlsbatch).
		opts = append(opts, grpc.Creds(tlsbatch.Credentials(credentials.NewTLS(tlsConf))))
	}
	srv := grpc.NewServer(opts...)
	ferryv1.RegisterBrokerServer(srv, b)
	lis, err := t.lis.Take(srv.Stop)
	if err != nil {
		return err
	}
	defer t.lis.Done()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		srv.Stop()
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			return nil // Close stopped us
		}
		return fmt.Errorf("grpc transport: serving on %s: %w", t.lis.Addr(), err)
	case <-ctx.Done():
	}

	b.drain()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(time.Duration(cfg.ShutdownTimeout))
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		srv.Stop()
		<-stopped
	}
	<-served
	return nil
}

// Close releases the listener if Serve never ran, or stops a running Serve at
// once. Called once, after Serve returned; safe to call more than once.
func (t *Transport) Close() error { return t.lis.Close() }

// serverOptions size the server for throughput: large flow-control windows
// and buffers so that a stream carries hundreds of KiB per batch without
// stalling, a receive limit that fits a batch of maximal messages, and
// keepalives that notice dead clients.
func serverOptions(cfg Config, encodeProduce bool) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.maxRequestBytes()),
		grpc.InitialWindowSize(4 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	opts = append(opts, sdk.GRPCBufferServerOptions()...) // buffers not zeroed: batches cost less CPU
	// Strings that are not UTF-8 are answered InvalidArgument (see utf8Codec).
	opts = append(opts, grpc.ForceServerCodecV2(utf8Codec{CodecV2: sdk.GRPCCodec(), encodeProduce: encodeProduce, maxMessageBytes: int64(cfg.MaxMessageBytes)}), grpc.ChainUnaryInterceptor(refuseInvalidUTF8, unaryCredentials),
		grpc.ChainStreamInterceptor(streamCredentials))
	if cfg.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams))
	}
	return opts
}
