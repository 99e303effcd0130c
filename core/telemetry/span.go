package telemetry

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Ferry's own recorded spans.
//
// At 100 % sampling a message makes a span at every hop of every process,
// and the OpenTelemetry SDK's span (its recordingSpan: a span context and
// ids from a locked generator, the sampler and every processor's OnStart,
// attributes normalised and de-duplicated on every call, a snapshot copied
// at End) was most of what tracing cost: about a quarter of the storage
// plugin's CPU. A span of Ferry's tracers that the sampler records is
// instead a *span: one allocation, ids from the runtime's per-thread
// generator, the attributes the hop shares with its other messages' spans
// referenced rather than copied, and itself handed at End to the span
// processor Setup installed (the SDK's batch processor and exporter, as
// before), as the sdktrace.ReadOnlySpan the exporters read. What the
// exporters see is what the SDK's span would have given them (the
// attributes de-duplicated, the last value of a key kept; events, links
// and status as the SDK records them), except ChildSpanCount, which is 0:
// no exporter of Ferry's sends it. Spans of other tracers (otelgrpc's, an
// application's) stay the SDK's.

// spanSink is where this process's spans go at End: the span processor
// Setup (or UseSpanProcessor) installed, and the resource of its provider.
type spanSink struct {
	proc sdktrace.SpanProcessor
	res  *resource.Resource
}

// active is the sink of the provider installed last; nil when Ferry's
// tracers use the SDK (tracing off, or an application's provider).
var active atomic.Pointer[spanSink]

// span is a recorded span of Ferry's tracers. Safe for concurrent use.
type span struct {
	embedded.Span
	// sdktrace.ReadOnlySpan's unexported method; never called.
	sdktrace.ReadOnlySpan

	rec    *spanSink
	scope  string // the tracer's instrumentation scope
	sc     trace.SpanContext
	parent trace.SpanContext
	kind   trace.SpanKind
	start  time.Time
	// base are attributes shared with other spans (a hop's, read only);
	// own are this span's, set at start and by SetAttributes.
	base []attribute.KeyValue
	// links may be shared too: AddLink copies before it appends.
	links []trace.Link

	mu     sync.Mutex
	name   string
	own    []attribute.KeyValue
	events []sdktrace.Event
	status sdktrace.Status
	end    time.Time
	ended  bool
}

var (
	_ trace.Span            = (*span)(nil)
	_ sdktrace.ReadOnlySpan = (*span)(nil)
)

// newSpanID is a random span id, never zero, from the runtime's
// per-thread generator (no lock).
func newSpanID() trace.SpanID {
	var sid trace.SpanID
	for sid == (trace.SpanID{}) {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}

// startSpan starts a recorded span of the tracer of scope under parent (a
// new trace when parent is invalid), with the SDK's meaning of cfg.
func (r *spanSink) startSpan(ctx context.Context, scope, name string, parent trace.SpanContext, cfg *trace.SpanConfig) (context.Context, trace.Span) {
	if cfg.NewRoot() {
		parent = trace.SpanContext{}
	}
	s := r.newSpan(scope, name, parent, trace.ValidateSpanKind(cfg.SpanKind()), cfg.Timestamp(), nil)
	s.own = append(cfg.Attributes(), systemAttr) // the config's own slice; the system where the SDK's processor put it
	s.links = cfg.Links()
	return trace.ContextWithSpan(ctx, s), s
}

// newSpan is a span of scope's tracer in parent's trace (or a new one),
// sampled as its parent (Ferry's tracers record only sampled spans), with
// base as its shared attributes.
func (r *spanSink) newSpan(scope, name string, parent trace.SpanContext, kind trace.SpanKind, start time.Time, base []attribute.KeyValue) *span {
	s := new(span)
	r.initSpan(s, scope, name, parent, kind, start, base)
	return s
}

// initSpan makes the zero *s newSpan's span.
func (r *spanSink) initSpan(s *span, scope, name string, parent trace.SpanContext, kind trace.SpanKind, start time.Time, base []attribute.KeyValue) {
	tid := parent.TraceID()
	if !parent.IsValid() {
		tid = newTraceID()
	}
	if start.IsZero() {
		start = time.Now()
	}
	s.rec, s.scope, s.name, s.parent, s.kind, s.start, s.base = r, scope, name, parent, kind, start, base
	s.sc = trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: newSpanID(), TraceFlags: trace.FlagsSampled, TraceState: parent.TraceState(),
	})
}

func (s *span) SpanContext() trace.SpanContext { return s.sc }

func (s *span) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended
}

func (s *span) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.status.Code > code {
		return
	}
	st := sdktrace.Status{Code: code}
	if code == codes.Error {
		st.Description = description
	}
	s.status = st
}

func (s *span) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.own = append(s.own, kv...)
	}
}

func (s *span) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.name = name
	}
}

func (s *span) AddLink(l trace.Link) {
	if !l.SpanContext.IsValid() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.links = append(s.links[:len(s.links):len(s.links)], l)
	}
}

func (s *span) AddEvent(name string, opts ...trace.EventOption) {
	c := trace.NewEventConfig(opts...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.events = append(s.events, sdktrace.Event{Name: name, Attributes: c.Attributes(), Time: c.Timestamp()})
	}
}

// RecordError adds an "exception" event, as the SDK does (without its
// optional stack trace).
func (s *span) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	opts = append(opts, trace.WithAttributes(
		attribute.String("exception.type", errorType(err)),
		attribute.String("exception.message", err.Error()),
	))
	s.AddEvent("exception", opts...)
}

// errorType names err's type as the SDK does.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String()
	}
	return fmt.Sprintf("%s.%s", t.PkgPath(), t.Name())
}

// End ends the span and hands it to its sink's span processor.
func (s *span) End(opts ...trace.SpanEndOption) {
	at := time.Now()
	if len(opts) > 0 {
		if c := trace.NewSpanEndConfig(opts...); !c.Timestamp().IsZero() {
			ts := c.Timestamp()
			at = ts
		}
	}
	s.endAt(at)
}

func (s *span) endAt(at time.Time) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended, s.end = true, at
	s.mu.Unlock()
	s.rec.proc.OnEnd(s)
}

func (s *span) TracerProvider() trace.TracerProvider { return otel.GetTracerProvider() }

// The sdktrace.ReadOnlySpan the exporters read, after End.

func (s *span) Name() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name
}
func (s *span) Parent() trace.SpanContext { return s.parent }
func (s *span) SpanKind() trace.SpanKind  { return s.kind }
func (s *span) StartTime() time.Time      { return s.start }
func (s *span) EndTime() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.end
}

// Attributes are the span's attributes, each key once with its last value,
// in the order of each key's first setting.
func (s *span) Attributes() []attribute.KeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return dedupe(s.base, s.own)
}

func (s *span) Links() []sdktrace.Link {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.links) == 0 {
		return nil
	}
	out := make([]sdktrace.Link, len(s.links))
	for i, l := range s.links {
		out[i] = sdktrace.Link{SpanContext: l.SpanContext, Attributes: dedupe(nil, l.Attributes)}
	}
	return out
}

func (s *span) Events() []sdktrace.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sdktrace.Event(nil), s.events...)
}

func (s *span) Status() sdktrace.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *span) InstrumentationScope() instrumentation.Scope {
	return instrumentation.Scope{Name: s.scope}
}

//nolint:staticcheck // part of sdktrace.ReadOnlySpan
func (s *span) InstrumentationLibrary() instrumentation.Library {
	return instrumentation.Library{Name: s.scope}
}

func (s *span) Resource() *resource.Resource { return s.rec.res }
func (s *span) DroppedAttributes() int       { return 0 }
func (s *span) DroppedLinks() int            { return 0 }
func (s *span) DroppedEvents() int           { return 0 }
func (s *span) ChildSpanCount() int          { return 0 }

// dedupe is a then b with each key once, its last value kept at the place
// of its first. The result is a new slice (nil for nothing).
func dedupe(a, b []attribute.KeyValue) []attribute.KeyValue {
	n := len(a) + len(b)
	if n == 0 {
		return nil
	}
	out := make([]attribute.KeyValue, 0, n)
	for _, list := range [2][]attribute.KeyValue{a, b} {
	next:
		for _, kv := range list {
			if !kv.Valid() {
				continue
			}
			for i := range out {
				if out[i].Key == kv.Key {
					out[i] = kv
					continue next
				}
			}
			out = append(out, kv)
		}
	}
	return out
}
