package grpctransport

import (
	"fmt"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// Defaults of the transport's config section.
const (
	DefaultListen               = "127.0.0.1:7070"
	DefaultMaxMessageBytes      = 4 << 20
	DefaultMaxInflightPerStream = 1024
	DefaultShutdownTimeout      = 2 * time.Second

	// maxMaxMessageBytes bounds max_message_bytes so that a batch of them
	// still fits a gRPC message (whose size is an int32).
	maxMaxMessageBytes = 64 << 20
	// minRequestBytes is the smallest limit on one gRPC message (one
	// ProduceRequest, a batch) the server accepts: at least what the Go
	// client sends by default (client.DefaultMaxRequestBytes).
	minRequestBytes = 64 << 20
	// requestOverhead covers the framing of a batch beyond its messages.
	requestOverhead = 1 << 20
)

// Config is the grpc transport's config section.
//
//	transport:
//	  type: grpc
//	  config:
//	    listen: 0.0.0.0:7070
//	    max_message_bytes: 4MiB
type Config struct {
	// Listen is the host:port the Broker service is served on. Port 0
	// picks a free port (tests).
	Listen string `json:"listen"`
	// MaxMessageBytes is the largest single message (body plus header keys
	// and values) a client may send; a larger one is refused with
	// INVALID_ARGUMENT naming this limit.
	MaxMessageBytes sdk.Bytes `json:"max_message_bytes"`
	// MaxInflightPerStream bounds the Produce requests of one client
	// stream that are at the broker at once; past it the transport stops
	// reading the stream, and HTTP/2 flow control slows the client down.
	MaxInflightPerStream int `json:"max_inflight_per_stream"`
	// MaxConcurrentStreams bounds the gRPC streams (calls) per client
	// connection; 0 leaves gRPC's default (no limit).
	MaxConcurrentStreams uint32 `json:"max_concurrent_streams"`
	// ShutdownTimeout is how long Serve waits, once asked to stop, for
	// in-flight requests to finish before it cuts the connections.
	ShutdownTimeout sdk.Duration `json:"shutdown_timeout"`
	// TLS serves the listener over TLS (see security.TLS); empty:
	// plaintext.
	TLS security.TLS `json:"tls"`
}

// NewDefaultConfig returns the config an empty section means.
func NewDefaultConfig() Config {
	return Config{
		Listen:               DefaultListen,
		MaxMessageBytes:      DefaultMaxMessageBytes,
		MaxInflightPerStream: DefaultMaxInflightPerStream,
		ShutdownTimeout:      sdk.Duration(DefaultShutdownTimeout),
	}
}

// Validate reports every problem of c, each with its key.
func (c Config) Validate() sdk.Problems {
	var ps sdk.Problems
	if err := sdk.CheckHostPort(c.Listen, DefaultListen); err != nil {
		ps = append(ps, sdk.Problem{Path: "listen", Message: err.Error()})
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes > maxMaxMessageBytes {
		ps = append(ps, sdk.Problem{Path: "max_message_bytes",
			Message: fmt.Sprintf("must be between 1 and %d (64MiB), got %d", maxMaxMessageBytes, c.MaxMessageBytes)})
	}
	if c.MaxInflightPerStream < 1 || c.MaxInflightPerStream > 1<<16 {
		ps = append(ps, sdk.Problem{Path: "max_inflight_per_stream",
			Message: fmt.Sprintf("must be between 1 and 65536, got %d", c.MaxInflightPerStream)})
	}
	if c.ShutdownTimeout < 0 {
		ps = append(ps, sdk.Problem{Path: "shutdown_timeout",
			Message: fmt.Sprintf("must not be negative, got %s", time.Duration(c.ShutdownTimeout))})
	}
	ps = append(ps, c.TLS.Validate("tls")...)
	return ps
}

// maxRequestBytes is the gRPC receive limit: one ProduceRequest may carry a
// batch of many messages of up to MaxMessageBytes each.
func (c Config) maxRequestBytes() int {
	return max(minRequestBytes, 16*int(c.MaxMessageBytes)) + requestOverhead
}

// decodeConfig decodes and validates a config section over the defaults.
func decodeConfig(section []byte) (Config, sdk.Problems) {
	cfg := NewDefaultConfig()
	if ps := sdk.DecodeConfig(section, &cfg); len(ps) > 0 {
		return cfg, ps
	}
	return cfg, cfg.Validate()
}
