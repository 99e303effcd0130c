// Package sink holds the ends of flows that a pipeline configures in YAML,
// so that a flow needs no code: count, discard, stdout, file, exec and
// webhook. A sink's outcome for a message is an error, as for any handler of
// the stage chain: nil acknowledges it, an error fails the attempt (retried),
// a client.Permanent error sends it to the dead-letter queue at once, and a
// client.RetryAfter error asks for a later retry.
package sink

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
)

// Sink is the end of a flow.
type Sink interface {
	// Deliver hands one message to the sink, from many goroutines at once
	// (the flow's concurrency). ctx ends when the attempt is abandoned
	// (a timeout stage, the flow stopping).
	Deliver(ctx context.Context, d *client.Delivery) error
	// Close releases the sink's resources once no Deliver is running.
	Close() error
}

// Options are what a sink needs besides its config section.
type Options struct {
	// Flow names the flow in output lines and in the environment of exec.
	Flow string
	// Out is where stdout writes and count prints its progress.
	Out io.Writer
	// DataDir is the node's data directory, given to exec commands as
	// FERRY_DATA_DIR.
	DataDir string
}

// New builds the sink a flow's config describes. The config is assumed
// checked by config.Load; New still fails on what only running can tell (a
// command that is not there, a file that cannot be opened).
func New(cfg config.Sink, o Options) (Sink, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	switch cfg.Type {
	case "count":
		return &countSink{every: int64(cfg.Every), flow: o.Flow, out: o.Out}, nil
	case "discard":
		return discardSink{}, nil
	case "stdout":
		return newWriterSink(o.Out, nil, formatOr(cfg.Format, "line"), o.Flow), nil
	case "file":
		return newFileSink(cfg, o)
	case "exec":
		return newExecSink(cfg, o)
	case "webhook":
		return newWebhookSink(cfg, o)
	}
	return nil, fmt.Errorf("unknown sink type %q", cfg.Type)
}

func formatOr(f, def string) string {
	if f == "" {
		return def
	}
	return f
}

type discardSink struct{}

func (discardSink) Deliver(context.Context, *client.Delivery) error { return nil }
func (discardSink) Close() error                                    { return nil }

// countSink counts messages and prints progress every N.
type countSink struct {
	every int64
	flow  string
	out   io.Writer
	n     atomic.Int64
	mu    sync.Mutex
}

func (s *countSink) Deliver(context.Context, *client.Delivery) error {
	n := s.n.Add(1)
	if s.every > 0 && n%s.every == 0 {
		s.mu.Lock()
		fmt.Fprintf(s.out, "%s: %d messages\n", s.flow, n)
		s.mu.Unlock()
	}
	return nil
}

func (s *countSink) Close() error { return nil }

// writerSink writes each message to w in a format, one write per message.
type writerSink struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	format string
	flow   string
}

func newWriterSink(w io.Writer, c io.Closer, format, flow string) *writerSink {
	return &writerSink{w: w, closer: c, format: format, flow: flow}
}

func (s *writerSink) Deliver(_ context.Context, d *client.Delivery) error {
	b := Format(d, s.format, s.flow)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("writing message %s: %w", d.ID, err)
	}
	return nil
}

func (s *writerSink) Close() error {
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// Record is a message as the json format writes it.
type Record struct {
	Flow    string            `json:"flow,omitempty"`
	ID      string            `json:"id"`
	Topic   string            `json:"topic"`
	Queue   int32             `json:"queue"`
	Offset  int64             `json:"offset"`
	Attempt int               `json:"attempt"`
	Key     string            `json:"key,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the body when it is UTF-8 text; otherwise BodyBase64 holds
	// it in standard base64.
	Body       string `json:"body,omitempty"`
	BodyBase64 string `json:"body_base64,omitempty"`
}

// Format renders d as one line (ending in a newline) in format: "line"
// (flow, where the message was first stored, id, attempt and size), "json"
// (a Record) or "body" (the body as is).
func Format(d *client.Delivery, format, flow string) []byte {
	m := d.Message
	switch format {
	case "json":
		r := Record{Flow: flow, ID: d.ID, Topic: d.Topic, Queue: d.Queue, Offset: d.Offset, Attempt: d.Attempt, Key: m.Key, Headers: m.Headers}
		if utf8.Valid(m.Body) {
			r.Body = string(m.Body)
		} else {
			r.BodyBase64 = base64.StdEncoding.EncodeToString(m.Body)
		}
		b, _ := json.Marshal(r) // strings and numbers only: cannot fail
		return append(b, '\n')
	case "body":
		return append(append(make([]byte, 0, len(m.Body)+1), m.Body...), '\n')
	}
	return fmt.Appendf(nil, "%s %s/%d@%d %s attempt=%d %dB\n", flow, d.Topic, d.Queue, d.Offset, d.ID, d.Attempt, len(m.Body))
}
