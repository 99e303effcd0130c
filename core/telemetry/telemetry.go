// Package telemetry sets up Ferry's tracing: one OpenTelemetry tracer
// provider per process (the broker node and each plugin process), the W3C
// trace context that travels in message headers, and the names of spans and
// attributes, so that every hop of a message shows in one trace.
//
// A broker node calls Setup once at start-up with the pipeline's tracing
// section; it passes the same settings to its plugin processes with EnvFor,
// and a plugin process calls SetupFromEnv before it serves (sdk.Serve does).
// Components keep a tracer in a package variable:
//
//	var tracer = telemetry.Tracer(telemetry.ComponentBroker)
//
// and carry context across messages with Inject and Extract.
//
// With exporter "none" (the default) Setup installs a no-op provider and
// Enabled reports false: hot paths check Enabled before they build span
// attributes, and Inject and Extract cost a map lookup or less. A message
// that arrives with a trace context keeps its headers untouched, so a node
// with tracing off passes its producer's trace on.
package telemetry

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// Exporters, as named in the pipeline's tracing.exporter key.
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout"
	ExporterOTLP   = "otlp"
)

// Batching of exported spans. A span waits at most exportInterval before it
// is sent, so that traces show in Jaeger within a second; the queue bounds
// memory when the collector is slow (spans beyond it are dropped, never
// waited for).
const (
	exportInterval = 500 * time.Millisecond
	exportQueue    = 16384
	exportBatch    = 1024
	exportTimeout  = 30 * time.Second
)

// Tracing configures tracing for one process. Its fields are those of
// core/config.Tracing, so that a pipeline's section converts directly:
// telemetry.Tracing(pipeline.Tracing).
type Tracing struct {
	// Exporter is ExporterNone (or ""), ExporterStdout or ExporterOTLP.
	Exporter string
	// Endpoint of the OTLP collector: "host:port" for OTLP over gRPC
	// without TLS (Jaeger's 4317), or a URL for OTLP over HTTP:
	// "http://host:4318" (path default /v1/traces) or "https://…".
	Endpoint string
	// SampleRatio is the share of new traces recorded, 0..1. A message
	// whose producer sampled it is traced at every hop whatever the ratio
	// (parent-based sampling).
	SampleRatio float64
	// ServiceName names the process's service in Jaeger; a node and its
	// plugin processes share it.
	ServiceName string
	// DebugPlumbing gives spans also to the plugin plumbing's gRPC calls
	// (see TracedRPC).
	DebugPlumbing bool
}

// State of this process's tracing, as the last Setup left it.
const (
	stateUnset = iota // Setup not called: spans go to otel's global provider (an application's)
	stateOff          // exporter none, or shut down: Start returns at once
	stateOn           // an SDK provider records and exports
)

var (
	state      atomic.Int32
	generation atomic.Uint64 // bumped by every Setup; tracers re-resolve on change
	current    atomic.Pointer[sdktrace.TracerProvider]
	// debugPlumbing is the last Setup's Tracing.DebugPlumbing.
	debugPlumbing atomic.Bool
)

// Enabled reports whether this process records spans (Setup ran with an
// exporter other than none). Hot paths check it before they build span
// options, so that tracing off costs one atomic load.
func Enabled() bool { return state.Load() == stateOn }

// Setup installs the global tracer provider and the W3C trace-context
// propagator for this process, from cfg, with attrs added to the process's
// resource (service.name is set from cfg.ServiceName). It returns a shutdown
// function that exports what is buffered and stops the provider; call it
// once when the process stops. Called once per process, before any span is
// started (a later call replaces the provider: tests do); tracers obtained
// earlier (Tracer in a package variable) follow the provider installed.
//
// Setup does not connect to the collector: a collector that is down makes
// exports fail later (reported through otel's error handler), never the
// process.
func Setup(ctx context.Context, cfg Tracing, attrs ...attribute.KeyValue) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagator)
	debugPlumbing.Store(cfg.DebugPlumbing)
	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if exp == nil {
		install(noop.NewTracerProvider(), nil, stateOff, nil)
		return func(context.Context) error { return nil }, nil
	}
	if cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing sample ratio %v: must be between 0 and 1", cfg.SampleRatio)
	}
	res, err := newResource(cfg.ServiceName, attrs)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	sampleRatio.Store(math.Float64bits(cfg.SampleRatio))
	bsp := sdktrace.NewBatchSpanProcessor(lossCounter{exp},
		sdktrace.WithBatchTimeout(exportInterval),
		sdktrace.WithMaxQueueSize(exportQueue),
		sdktrace.WithMaxExportBatchSize(exportBatch),
		sdktrace.WithExportTimeout(exportTimeout),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(batchSampler{sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))}),
		sdktrace.WithSpanProcessor(systemProcessor{}),
		sdktrace.WithSpanProcessor(bsp),
	)
	install(tp, tp, stateOn, &spanSink{proc: bsp, res: res})
	lost0, _ := Lost()
	return func(ctx context.Context) error {
		if current.CompareAndSwap(tp, nil) {
			state.Store(stateOff)
		}
		err := tp.Shutdown(ctx)
		if err != nil {
			err = fmt.Errorf("tracing: exporting the last spans: %w", err)
		}
		if n, last := Lost(); n > lost0 {
			err = errors.Join(err, fmt.Errorf("tracing: %d spans could not be exported (last: %v)", n-lost0, last))
		}
		return err
	}, nil
}

// lossCounter counts the spans of the exports that failed: the batch
// processor drops them (the exporter retried what it could).
type lossCounter struct{ sdktrace.SpanExporter }

var (
	lostSpans atomic.Uint64
	lastLoss  atomic.Pointer[error]
)

func (e lossCounter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err != nil {
		lastLoss.Store(&err)
		lostSpans.Add(uint64(len(spans)))
	}
	return err
}

// Lost reports how many spans this process's exporters could not deliver
// (their exports failed, after the exporter's retries), and the last
// export's error.
func Lost() (uint64, error) {
	var err error
	if p := lastLoss.Load(); p != nil {
		err = *p
	}
	return lostSpans.Load(), err
}

// systemProcessor sets messaging.system on every recorded span of Ferry's
// tracers (not on otelgrpc's). The SDK calls it only for spans it records,
// so unsampled spans pay nothing for the attribute.
type systemProcessor struct{}

var systemAttr = AttrSystem.String(SystemFerry)

func (systemProcessor) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) {
	if strings.HasPrefix(s.InstrumentationScope().Name, scope) {
		s.SetAttributes(systemAttr)
	}
}
func (systemProcessor) OnEnd(sdktrace.ReadOnlySpan)      {}
func (systemProcessor) Shutdown(context.Context) error   { return nil }
func (systemProcessor) ForceFlush(context.Context) error { return nil }

// install makes tp the global provider and the one Ferry's tracers use.
// UseSpanProcessor makes this process record every span it starts (all
// sampled, as Setup's sampler at ratio 1) into sp, in place of what Setup
// installed: for tests of the packages that start spans. The returned
// function turns tracing off again.
func UseSpanProcessor(sp sdktrace.SpanProcessor) (restore func()) {
	otel.SetTextMapPropagator(propagator)
	sampleRatio.Store(math.Float64bits(1))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sp),
		sdktrace.WithSampler(batchSampler{sdktrace.ParentBased(sdktrace.AlwaysSample())}))
	install(tp, tp, stateOn, &spanSink{proc: sp, res: resource.Default()})
	return func() {
		install(noop.NewTracerProvider(), nil, stateOff, nil)
		_ = tp.Shutdown(context.Background())
	}
}

func install(tp trace.TracerProvider, sdk *sdktrace.TracerProvider, st int32, rec *spanSink) {
	otel.SetTracerProvider(tp)
	current.Store(sdk)
	active.Store(rec)
	state.Store(st)
	generation.Add(1)
}

// newExporter returns cfg's span exporter, nil for none.
func newExporter(ctx context.Context, cfg Tracing) (sdktrace.SpanExporter, error) {
	switch cfg.Exporter {
	case "", ExporterNone:
		return nil, nil
	case ExporterStdout:
		// One JSON object per span and line; written to the current
		// os.Stdout, which a plugin process forwards to its host.
		return stdouttrace.New(stdouttrace.WithWriter(stdout{}))
	case ExporterOTLP:
		return newOTLPExporter(ctx, cfg.Endpoint)
	}
	return nil, fmt.Errorf("tracing exporter %q: must be %s, %s or %s", cfg.Exporter, ExporterNone, ExporterStdout, ExporterOTLP)
}

// newOTLPExporter returns an OTLP exporter over gRPC for "host:port" and over
// HTTP for an http(s) URL.
func newOTLPExporter(ctx context.Context, endpoint string) (sdktrace.SpanExporter, error) {
	if endpoint == "" {
		return nil, errors.New("tracing exporter otlp: an endpoint is required (host:port for gRPC, http://host:port for HTTP)")
	}
	if !strings.Contains(endpoint, "://") {
		// Its requests written straight from the spans (otlpspans.go).
		return newOTLPGRPCExporter(endpoint)
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("tracing endpoint %q: must be host:port (OTLP/gRPC) or an http:// or https:// URL (OTLP/HTTP)", endpoint)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host)}
	if u.Scheme == "http" {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if u.Path != "" && u.Path != "/" {
		opts = append(opts, otlptracehttp.WithURLPath(u.Path))
	}
	return otlptracehttp.New(ctx, opts...)
}

func newResource(service string, attrs []attribute.KeyValue) (*resource.Resource, error) {
	if service == "" {
		service = "ferry"
	}
	kvs := append([]attribute.KeyValue{
		attribute.String("service.name", service),
		attribute.Int("process.pid", os.Getpid()),
	}, attrs...)
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(kvs...))
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	return res, nil
}

// stdout writes to whatever os.Stdout is at the time of the write.
type stdout struct{}

var _ io.Writer = stdout{}

func (stdout) Write(p []byte) (int, error) { return os.Stdout.Write(p) }

// Flush exports the spans this process has buffered, for tests and for a
// process about to be killed. A no-op when tracing is off.
func Flush(ctx context.Context) error {
	if tp := current.Load(); tp != nil {
		return tp.ForceFlush(ctx)
	}
	return nil
}

// scope prefixes the instrumentation scope of every Ferry tracer.
const scope = "github.com/ferrymq/ferry/"

// Tracer returns the tracer of a component (ComponentBroker, …). Keep it in
// a package variable: it follows whatever provider the latest Setup
// installed, also when obtained before Setup, and otel's global provider
// (an application's own) when Setup was never called, as in the client
// library. With tracing off its Start returns ctx itself and a no-op span
// without allocating.
func Tracer(component string) trace.Tracer {
	return &tracer{name: scope + component}
}

type tracer struct {
	embedded.Tracer
	name     string
	resolved atomic.Pointer[resolvedTracer]
}

type resolvedTracer struct {
	gen uint64
	trace.Tracer
	// rec records the spans this tracer's sampler records (Ferry's own
	// span, span.go); nil: the SDK's tracer starts them.
	rec *spanSink
}

var noopSpan = trace.SpanFromContext(context.Background())

// Start starts a span; see trace.Tracer. Safe for concurrent use.
func (t *tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if state.Load() == stateOff {
		return ctx, noopSpan
	}
	gen := generation.Load()
	r := t.resolved.Load()
	if r == nil || r.gen != gen {
		r = &resolvedTracer{gen: gen, Tracer: otel.GetTracerProvider().Tracer(t.name)}
		if state.Load() == stateOn {
			r.rec = active.Load()
		}
		t.resolved.Store(r)
	}
	// A span the sampler would not record is not started through the SDK:
	// its non-recording span, start options and ids cost more than the
	// rest of an unsampled message's hop (at 1 %, nearly every message).
	// The span context it would have had (new ids; the parent's trace, or
	// a new one) carries the decision on. The decision is the SDK's sampler
	// (batchSampler over ParentBased(TraceIDRatioBased)): under a parent,
	// the parent's flag; for a new trace, the ratio, drawn here, and a
	// trace drawn to be sampled is force-sampled through the SDK so that its
	// own ratio does not draw again. A span meant to start a new trace
	// under an unsampled parent (trace.WithNewRoot) must be force-sampled
	// by its caller, as StartHop does.
	if forced, _ := ctx.Value(forceSample{}).(bool); !forced {
		parent := trace.SpanContextFromContext(ctx)
		switch {
		case parent.IsValid() && !parent.IsSampled():
			return unsampled(ctx, parent.TraceID(), parent.TraceState())
		case !parent.IsValid():
			if rand.Float64() >= ratio() {
				return unsampled(ctx, newTraceID(), trace.TraceState{})
			}
			if r.rec != nil {
				return t.record(r.rec, ctx, name, parent, opts)
			}
			sctx, span := r.Start(context.WithValue(ctx, forceSample{}, true), name, opts...)
			return context.WithValue(sctx, forceSample{}, nil), span
		}
	}
	if r.rec != nil {
		// Every span that gets here is sampled: under a sampled parent, or
		// forced (a trace drawn to be sampled, a batch's own trace).
		return t.record(r.rec, ctx, name, trace.SpanContextFromContext(ctx), opts)
	}
	return r.Start(ctx, name, opts...)
}

// record starts Ferry's own recorded span (span.go) under parent.
func (t *tracer) record(rec *spanSink, ctx context.Context, name string, parent trace.SpanContext, opts []trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	ctx, s := rec.startSpan(ctx, t.name, name, parent, &cfg)
	if ctx.Value(forceSample{}) != nil {
		ctx = context.WithValue(ctx, forceSample{}, nil)
	}
	return ctx, s
}

// sampleRatio is the ratio of new traces Setup's sampler records (as
// math.Float64bits; UseSpanProcessor: 1).
var sampleRatio atomic.Uint64

func ratio() float64 { return math.Float64frombits(sampleRatio.Load()) }

// unsampled is ctx with a span context of a new span id in trace tid, not
// sampled, and the span that carries it (records nothing, ends as a no-op).
func unsampled(ctx context.Context, tid trace.TraceID, ts trace.TraceState) (context.Context, trace.Span) {
	var sid trace.SpanID
	for sid == (trace.SpanID{}) {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceState: ts})
	ctx = trace.ContextWithSpanContext(ctx, sc)
	return ctx, trace.SpanFromContext(ctx)
}

// newTraceID is a random trace id, never zero.
func newTraceID() trace.TraceID {
	var tid trace.TraceID
	for tid == (trace.TraceID{}) {
		binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
		binary.BigEndian.PutUint64(tid[8:], rand.Uint64())
	}
	return tid
}

// propagator is the one propagator of Ferry: W3C trace context.
var propagator propagation.TraceContext

// Inject writes ctx's span context into a message's headers ("traceparent",
// and "tracestate" when there is one) and returns the headers, allocated
// when headers is nil and there is something to write:
//
//	m.Headers = telemetry.Inject(ctx, m.Headers)
//
// Without a span in ctx (tracing off and no incoming trace) it writes
// nothing, does not allocate, and returns headers as given.
func Inject(ctx context.Context, headers map[string]string) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return headers
	}
	if headers == nil {
		headers = make(map[string]string, 2)
	}
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceState().Len() == 0 {
		headers[HeaderTraceparent] = traceparent(sc) // what the propagator writes, without its formatting
		return headers
	}
	propagator.Inject(ctx, propagation.MapCarrier(headers))
	return headers
}

// traceparent is sc as a W3C traceparent of version 00.
func traceparent(sc trace.SpanContext) string {
	var b [55]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	flags := [1]byte{byte(sc.TraceFlags())}
	hex.Encode(b[53:55], flags[:])
	return string(b[:])
}

// Extract returns ctx with the remote span context found in a message's
// headers, so that spans started from it are children of the span that
// sent the message. Headers without a trace context give ctx back.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	if _, ok := headers[HeaderTraceparent]; !ok {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier(headers))
}

// SpanContext returns the span context in a message's headers (invalid when
// there is none), for batch operations that link to their messages.
func SpanContext(headers map[string]string) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), headers))
}

// Links returns one link per message that carries a sampled trace
// context, for a batch operation's span (storage.append, storage.flush,
// replication.replicate):
//
//	tracer.Start(ctx, telemetry.SpanStorageAppend, trace.WithLinks(telemetry.Links(batch)...))
//
// At most maxLinks links are returned; a batch of more messages links to its
// first maxLinks.
func Links[M interface{ GetHeaders() map[string]string }](msgs []M) []trace.Link {
	var links []trace.Link
	for _, m := range msgs {
		if len(links) == maxLinks {
			break
		}
		if sc := SpanContext(m.GetHeaders()); sc.IsValid() && sc.IsSampled() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return links
}

// BatchLinks is Links for a batch span started under parent: nothing when
// the parent is a trace that was not sampled (ParentBased sampling will not
// record the span, so parsing every message's trace context would be wasted).
func BatchLinks[M interface{ GetHeaders() map[string]string }](parent context.Context, msgs []M) []trace.Link {
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() && !sc.IsSampled() {
		return nil
	}
	return Links(msgs)
}

// maxLinks bounds the links of one batch span: the SDK's default span limit
// of links is 128.
const maxLinks = 128

// StartMessage starts tr's span named name for sending one message under
// ctx (producer.send) and returns it with a copy of the message's headers
// that carries the span's trace context on (headers itself is left alone;
// nil when there is nothing to carry and headers is nil). opts is called
// only for a span that records. A message whose new trace is drawn not to
// be sampled (at 1 %, nearly every one) gets nothing: no span, context,
// options or header, and headers is returned as given. W3C trace context
// lets a decision against a trace go unpropagated, and no hop of Ferry
// starts a trace for a message that carries none (docs/tracing.md), so its
// trace stays unrecorded at every hop as a carried unsampled flag would
// keep it, without the header's bytes in every message, store and copy. A
// message under an unsampled parent (a trace of the application's) gets
// that trace's traceparent, as Inject writes it, so the application's trace
// id goes on. The decision is tr.Start's (the parent's flag, or the ratio
// drawn once for a new trace). Safe for concurrent use.
func StartMessage(ctx context.Context, tr trace.Tracer, name string, opts func() []trace.SpanStartOption, headers map[string]string) (trace.Span, map[string]string) {
	if state.Load() == stateOff && !trace.SpanContextFromContext(ctx).IsValid() {
		return noopSpan, headers // tracing off, no trace to carry on
	}
	if _, ours := tr.(*tracer); ours && state.Load() == stateOn && ctx.Value(forceSample{}) == nil {
		parent := trace.SpanContextFromContext(ctx)
		switch {
		case parent.IsValid() && !parent.IsSampled() && parent.TraceState().Len() == 0:
			return noopSpan, withTraceparent(headers, unsampledTraceparent(parent.TraceID()))
		case !parent.IsValid():
			if rand.Float64() >= ratio() {
				return noopSpan, headers // a trace decided against: nothing to carry
			}
			// Drawn to be sampled: tr.Start must not draw again.
			ctx = context.WithValue(ctx, forceSample{}, true)
		}
	}
	sctx, span := tr.Start(ctx, name, opts()...)
	if !trace.SpanContextFromContext(sctx).IsValid() {
		return span, headers
	}
	return span, Inject(sctx, maps.Clone(headers))
}

// unsampledTraceparent is the traceparent of a new span, not sampled, in
// trace tid.
func unsampledTraceparent(tid trace.TraceID) string {
	var sid trace.SpanID
	for sid == (trace.SpanID{}) {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return traceparent(trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
}

// withTraceparent is a copy of headers with tp as its traceparent.
func withTraceparent(headers map[string]string, tp string) map[string]string {
	h := make(map[string]string, len(headers)+1)
	for k, v := range headers {
		h[k] = v
	}
	h[HeaderTraceparent] = tp
	return h
}
