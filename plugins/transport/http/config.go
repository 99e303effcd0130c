package httptransport

import (
	"fmt"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// Defaults and limits of the transport's config section.
const (
	DefaultListen          = "127.0.0.1:7080"
	DefaultMaxMessageBytes = 4 << 20
	DefaultMaxRequestBytes = 16 << 20
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxWait         = 30 * time.Second
	DefaultShutdownTimeout = 2 * time.Second
	DefaultBodyTimeout     = 30 * time.Second
	DefaultMaxConnections  = 1024
	DefaultMaxInflight     = 128 << 20

	maxMaxMessageBytes = 64 << 20
	maxMaxRequestBytes = 256 << 20
	maxMaxConnections  = 1 << 20
	maxMaxInflight     = 16 << 30
	// defaultPullMessages and maxPullMessages bound one pull.
	defaultPullMessages = 100
	maxPullMessages     = 10000
	// pullBytes bounds the bytes of one pull's messages, roughly.
	pullBytes = 16 << 20
	// topicCacheTTL is how long a topic's queue count is reused.
	topicCacheTTL = 5 * time.Second
)

// Config is the http transport's config section.
//
//	transport:
//	  type: http
//	  config:
//	    listen: 0.0.0.0:7080
//	    max_message_bytes: 4MiB
type Config struct {
	// Listen is the host:port the HTTP API is served on. Port 0 picks a
	// free port (tests).
	Listen string `json:"listen"`
	// MaxMessageBytes is the largest single message (body plus header keys
	// and values); a larger one is refused with 413.
	MaxMessageBytes sdk.Bytes `json:"max_message_bytes"`
	// MaxRequestBytes is the largest HTTP request body; a larger one is
	// refused with 413.
	MaxRequestBytes sdk.Bytes `json:"max_request_bytes"`
	// RequestTimeout bounds a produce, commit or metadata request at the
	// broker (a produce that times out has an unknown outcome: 504).
	RequestTimeout sdk.Duration `json:"request_timeout"`
	// MaxWait bounds the wait= of a pull (long poll).
	MaxWait sdk.Duration `json:"max_wait"`
	// ShutdownTimeout is how long Serve waits, once asked to stop, for
	// in-flight requests (long polls end at once, empty).
	ShutdownTimeout sdk.Duration `json:"shutdown_timeout"`
	// BodyTimeout bounds the time to receive a request's body, from the
	// end of its headers; a slower body is answered 408 and its connection
	// closed.
	BodyTimeout sdk.Duration `json:"body_timeout"`
	// MaxConnections bounds the open connections: a request on a
	// connection past it is answered 503 and the connection closed.
	MaxConnections int `json:"max_connections"`
	// MaxInflightBytes bounds the request-body bytes held at once by the
	// requests in progress (at least max_request_bytes); a request that
	// does not fit is answered 429.
	MaxInflightBytes sdk.Bytes `json:"max_inflight_bytes"`
	// TLS serves the API over HTTPS (see security.TLS); empty: plain
	// HTTP.
	TLS security.TLS `json:"tls"`
}

// NewDefaultConfig returns the config an empty section means.
func NewDefaultConfig() Config {
	return Config{
		Listen:          DefaultListen,
		MaxMessageBytes: DefaultMaxMessageBytes,
		MaxRequestBytes: DefaultMaxRequestBytes,
		RequestTimeout:  sdk.Duration(DefaultRequestTimeout),
		MaxWait:         sdk.Duration(DefaultMaxWait),
		ShutdownTimeout: sdk.Duration(DefaultShutdownTimeout),

		BodyTimeout:      sdk.Duration(DefaultBodyTimeout),
		MaxConnections:   DefaultMaxConnections,
		MaxInflightBytes: DefaultMaxInflight,
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
	if c.MaxRequestBytes <= 0 || c.MaxRequestBytes > maxMaxRequestBytes {
		ps = append(ps, sdk.Problem{Path: "max_request_bytes",
			Message: fmt.Sprintf("must be between 1 and %d (256MiB), got %d", maxMaxRequestBytes, c.MaxRequestBytes)})
	}
	for _, d := range []struct {
		key string
		v   sdk.Duration
	}{{"request_timeout", c.RequestTimeout}, {"max_wait", c.MaxWait}, {"body_timeout", c.BodyTimeout}} {
		if d.v <= 0 {
			ps = append(ps, sdk.Problem{Path: d.key, Message: fmt.Sprintf("must be positive, got %s", time.Duration(d.v))})
		}
	}
	if c.MaxConnections < 1 || c.MaxConnections > maxMaxConnections {
		ps = append(ps, sdk.Problem{Path: "max_connections",
			Message: fmt.Sprintf("must be between 1 and %d, got %d", maxMaxConnections, c.MaxConnections)})
	}
	switch {
	case c.MaxInflightBytes > maxMaxInflight:
		ps = append(ps, sdk.Problem{Path: "max_inflight_bytes",
			Message: fmt.Sprintf("must be at most %d (16GiB), got %d", int64(maxMaxInflight), c.MaxInflightBytes)})
	case c.MaxInflightBytes < c.MaxRequestBytes && c.MaxRequestBytes <= maxMaxRequestBytes:
		ps = append(ps, sdk.Problem{Path: "max_inflight_bytes",
			Message: fmt.Sprintf("must be at least max_request_bytes (%d) so that one request fits, got %d", c.MaxRequestBytes, c.MaxInflightBytes)})
	}
	if c.ShutdownTimeout < 0 {
		ps = append(ps, sdk.Problem{Path: "shutdown_timeout",
			Message: fmt.Sprintf("must not be negative, got %s", time.Duration(c.ShutdownTimeout))})
	}
	ps = append(ps, c.TLS.Validate("tls")...)
	return ps
}

// decodeConfig decodes and validates a config section over the defaults.
func decodeConfig(section []byte) (Config, sdk.Problems) {
	cfg := NewDefaultConfig()
	if ps := sdk.DecodeConfig(section, &cfg); len(ps) > 0 {
		return cfg, ps
	}
	return cfg, cfg.Validate()
}
