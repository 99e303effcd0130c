package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// recorder returns a tracer that records every span in memory.
func recorder(t *testing.T) (trace.Tracer, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer("test"), rec
}

// A span started from a message's extracted headers is a child of the span
// that sent the message, in the same trace; so are spans of later hops.
func TestInjectExtractParenting(t *testing.T) {
	tracer, rec := recorder(t)
	ctx, send := tracer.Start(context.Background(), SpanProducerSend)
	m := &ferryv1.Message{Id: "m-1", Topic: "orders"}
	m.Headers = Inject(ctx, m.Headers)
	send.End()
	if _, ok := m.Headers[HeaderTraceparent]; !ok {
		t.Fatalf("Inject wrote no %s: headers %v", HeaderTraceparent, m.Headers)
	}

	// The broker, in another process: only the headers cross.
	wire := map[string]string{}
	for k, v := range m.Headers {
		wire[k] = v
	}
	bctx := Extract(context.Background(), wire)
	bctx, deliver := tracer.Start(bctx, SpanBrokerDeliver)
	wire = Inject(bctx, wire) // the next hop continues from deliver
	deliver.End()
	_, process := tracer.Start(Extract(context.Background(), wire), SpanConsumerProcess)
	process.End()

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	sendSC := spans[SpanProducerSend].SpanContext()
	for _, c := range []struct{ child, parent string }{
		{SpanBrokerDeliver, SpanProducerSend},
		{SpanConsumerProcess, SpanBrokerDeliver},
	} {
		child, parent := spans[c.child], spans[c.parent]
		if child.SpanContext().TraceID() != sendSC.TraceID() {
			t.Errorf("%s: trace %s, want the producer's %s", c.child, child.SpanContext().TraceID(), sendSC.TraceID())
		}
		if child.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s: parent %s, want %s (%s)", c.child, child.Parent().SpanID(), parent.SpanContext().SpanID(), c.parent)
		}
		if !child.Parent().IsRemote() {
			t.Errorf("%s: parent not marked remote", c.child)
		}
	}
}

// A message without a span in its context gets no headers, and Inject and
// Extract allocate nothing then: tracing off costs nothing per message.
func TestNoTraceNoHeadersNoAllocs(t *testing.T) {
	ctx := context.Background()
	if h := Inject(ctx, nil); h != nil {
		t.Fatalf("Inject without a span made headers %v", h)
	}
	h := map[string]string{"app": "x"}
	if Inject(ctx, h); len(h) != 1 {
		t.Fatalf("Inject without a span changed headers: %v", h)
	}
	if got := Extract(ctx, h); got != ctx {
		t.Fatal("Extract without a traceparent returned a new context")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		h = Inject(ctx, h)
		_ = Extract(ctx, h)
	})
	if allocs != 0 {
		t.Fatalf("Inject+Extract without a trace: %v allocs per message, want 0", allocs)
	}
}

// Malformed trace context in headers is ignored, not an error.
func TestExtractMalformed(t *testing.T) {
	for _, tp := range []string{"", "garbage", "00-00000000000000000000000000000000-0000000000000000-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"} {
		ctx := Extract(context.Background(), map[string]string{HeaderTraceparent: tp})
		if trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("traceparent %q gave a valid span context", tp)
		}
	}
}

// A batch span links to each sampled message it carries.
func TestLinks(t *testing.T) {
	tracer, rec := recorder(t)
	var batch []*ferryv1.Message
	var want []trace.SpanID
	for range 3 {
		ctx, s := tracer.Start(context.Background(), SpanProducerSend)
		batch = append(batch, &ferryv1.Message{Headers: Inject(ctx, nil)})
		want = append(want, s.SpanContext().SpanID())
		s.End()
	}
	batch = append(batch, &ferryv1.Message{}) // untraced: no link
	_, s := tracer.Start(context.Background(), SpanStorageAppend, trace.WithLinks(Links(batch)...))
	s.End()
	var got []trace.SpanID
	for _, sp := range rec.Ended() {
		if sp.Name() == SpanStorageAppend {
			for _, l := range sp.Links() {
				got = append(got, l.SpanContext.SpanID())
			}
		}
	}
	if len(got) != len(want) {
		t.Fatalf("links %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("links %v, want %v", got, want)
		}
	}
	many := make([]*ferryv1.Message, maxLinks+10)
	for i := range many {
		many[i] = batch[0]
	}
	if n := len(Links(many)); n != maxLinks {
		t.Fatalf("%d messages: %d links, want %d", len(many), n, maxLinks)
	}
}

func TestSetupRejectsBadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Tracing
		want string
	}{
		{Tracing{Exporter: "jaeger"}, `exporter "jaeger"`},
		{Tracing{Exporter: ExporterOTLP}, "endpoint is required"},
		{Tracing{Exporter: ExporterOTLP, Endpoint: "ftp://x:1"}, "must be host:port"},
		{Tracing{Exporter: ExporterOTLP, Endpoint: "127.0.0.1:4317", SampleRatio: 1.5}, "between 0 and 1"},
	} {
		_, err := Setup(context.Background(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Setup(%+v): error %v, want one containing %q", c.cfg, err, c.want)
		}
	}
	if Enabled() {
		t.Fatal("a failed Setup left tracing enabled")
	}
}

// Exporter none installs a provider that records nothing and keeps
// Enabled false; the gRPC options are empty.
func TestSetupNone(t *testing.T) {
	shutdown, err := Setup(context.Background(), Tracing{Exporter: ExporterNone, SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if Enabled() {
		t.Fatal("Enabled with exporter none")
	}
	_, s := Tracer(ComponentBroker).Start(context.Background(), SpanBrokerAppend)
	if s.IsRecording() || s.SpanContext().IsValid() {
		t.Fatal("exporter none: a root span records or has a trace id")
	}
	if len(GRPCServerOptions()) != 0 || len(GRPCDialOptions()) != 0 {
		t.Fatal("exporter none: gRPC tracing options are not empty")
	}
}

// The stdout exporter writes one JSON span a line, with the service name
// and resource attributes, and the sampler is parent-based: with ratio 0 a
// new trace is not recorded but a sampled incoming one is.
func TestSetupStdoutAndSampler(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = saved }()
	out := make(chan []byte)
	go func() { b, _ := io.ReadAll(r); out <- b }()

	shutdown, err := Setup(context.Background(), Tracing{Exporter: ExporterStdout, SampleRatio: 0, ServiceName: "ferry-test"}, AttrPlugin.String("storage/memory"))
	if err != nil {
		t.Fatal(err)
	}
	if !Enabled() || len(GRPCServerOptions()) != 1 || len(GRPCDialOptions()) != 1 {
		t.Fatal("stdout exporter: not enabled or no gRPC tracing options")
	}
	tracer := Tracer(ComponentStorage)
	_, root := tracer.Start(context.Background(), "root.unsampled")
	root.End()
	if root.IsRecording() {
		t.Fatal("ratio 0: a new root span records")
	}
	incoming := map[string]string{HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	_, child := tracer.Start(Extract(context.Background(), incoming), SpanStorageAppend, trace.WithAttributes(AttrTopic.String("orders")))
	child.End()
	if err := Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if Enabled() {
		t.Fatal("Enabled after shutdown")
	}
	os.Stdout = saved
	w.Close()
	lines := bytes.Split(bytes.TrimSpace(<-out), []byte("\n"))
	if len(lines) != 1 {
		t.Fatalf("want 1 span line, got %d:\n%s", len(lines), bytes.Join(lines, []byte("\n")))
	}
	var span struct {
		Name        string
		SpanContext struct{ TraceID string }
		Parent      struct{ SpanID string }
		Attributes  []struct{ Key string }
		Resource    []struct {
			Key   string
			Value struct{ Value any }
		}
	}
	if err := json.Unmarshal(lines[0], &span); err != nil {
		t.Fatalf("span line is not JSON: %v\n%s", err, lines[0])
	}
	if span.Name != SpanStorageAppend || span.SpanContext.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" || span.Parent.SpanID != "00f067aa0ba902b7" {
		t.Fatalf("exported span %+v, want %s in the incoming trace", span, SpanStorageAppend)
	}
	res := map[string]any{}
	for _, kv := range span.Resource {
		res[kv.Key] = kv.Value.Value
	}
	if res["service.name"] != "ferry-test" || res["ferry.plugin"] != "storage/memory" || res["process.pid"] == nil {
		t.Fatalf("resource %v: want service.name ferry-test, plugin storage/memory, process.pid", res)
	}
}

// The settings a host passes to its plugins come back whole in the plugin.
func TestEnvRoundTrip(t *testing.T) {
	cfg := Tracing{Exporter: ExporterOTLP, Endpoint: "127.0.0.1:4317", SampleRatio: 0.01, ServiceName: "ferry-node-1"}
	for _, kv := range EnvFor(cfg, "storage/file") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	got, plugin, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if got != cfg || plugin != "storage/file" {
		t.Fatalf("FromEnv = %+v, %q; want %+v, storage/file", got, plugin, cfg)
	}
	t.Setenv(EnvSampleRatio, "lots")
	if _, _, err := FromEnv(); err == nil {
		t.Fatal("a bad sample ratio was accepted")
	}
}

// A process that was given no tracing settings does not trace.
func TestSetupFromEnvUnset(t *testing.T) {
	for _, k := range []string{EnvExporter, EnvEndpoint, EnvSampleRatio, EnvServiceName, EnvPlugin} {
		t.Setenv(k, "")
	}
	shutdown, err := SetupFromEnv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(context.Background())
	if Enabled() {
		t.Fatal("tracing enabled without settings")
	}
	if _, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		t.Fatal("an SDK provider was installed without settings")
	}
}

// A tracer kept in a package variable follows every Setup, also one made
// after the tracer was obtained, and with tracing off starts nothing,
// allocates nothing, and leaves the incoming trace context in place.
func TestTracerFollowsSetup(t *testing.T) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	saved := os.Stdout
	os.Stdout = devnull
	defer func() { os.Stdout = saved }()

	tracer := Tracer(ComponentBroker) // before any Setup
	ctx := context.Background()
	for _, c := range []struct {
		exporter  string
		recording bool
	}{{ExporterNone, false}, {ExporterStdout, true}, {ExporterNone, false}, {ExporterStdout, true}} {
		shutdown, err := Setup(ctx, Tracing{Exporter: c.exporter, SampleRatio: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, s := tracer.Start(ctx, SpanBrokerAppend)
		if s.IsRecording() != c.recording {
			t.Errorf("after Setup(%s): span recording %v, want %v", c.exporter, s.IsRecording(), c.recording)
		}
		s.End()
		if err := shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Off: the context passes through untouched, with the incoming trace.
	if _, err := Setup(ctx, Tracing{Exporter: ExporterNone}); err != nil {
		t.Fatal(err)
	}
	in := Extract(ctx, map[string]string{HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	out, s := tracer.Start(in, SpanBrokerDeliver)
	s.End()
	if out != in {
		t.Fatal("tracing off: Start returned a new context")
	}
	if h := Inject(out, nil); h[HeaderTraceparent] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("tracing off: the incoming trace context is not passed on: %v", h)
	}
	if allocs := testing.AllocsPerRun(1000, func() {
		_, s := tracer.Start(in, SpanBrokerDeliver)
		s.End()
	}); allocs != 0 {
		t.Fatalf("tracing off: Start+End allocates %v times", allocs)
	}
}

// TestUnsampledSpansSkipTheSDK: at a ratio of 0.25 a quarter of new traces
// is recorded (drawn once: the SDK's own ratio sampler does not draw a
// second time, which would record a sixteenth), a span under an unsampled
// parent is not, and yet carries a valid span context of the parent's
// trace with a span id of its own; under a sampled one it is recorded.
func TestUnsampledSpansSkipTheSDK(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer UseSpanProcessor(rec)()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithSampler(batchSampler{sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.25))}))
	install(tp, tp, stateOn, &spanSink{proc: rec, res: resource.Default()})
	sampleRatio.Store(math.Float64bits(0.25))
	tr := Tracer("test")
	const n = 20000
	var children int
	for range n {
		ctx, root := tr.Start(context.Background(), "root")
		cctx, child := tr.Start(ctx, "child")
		if !child.SpanContext().IsValid() || child.SpanContext().TraceID() != root.SpanContext().TraceID() ||
			child.SpanContext().SpanID() == root.SpanContext().SpanID() || child.SpanContext().IsSampled() != root.SpanContext().IsSampled() {
			t.Fatalf("child %v of root %v", child.SpanContext(), root.SpanContext())
		}
		if !trace.SpanContextFromContext(cctx).Equal(child.SpanContext()) {
			t.Fatal("the child's context does not carry it")
		}
		if child.IsRecording() {
			children++
		}
		child.End()
		root.End()
	}
	roots := 0
	for _, s := range rec.Ended() {
		if s.Name() == "root" {
			roots++
		}
	}
	if roots < 4600 || roots > 5400 || children != roots {
		t.Fatalf("%d roots and %d children recorded of %d, want about %d each (a ratio of 0.25, drawn once)", roots, children, n, n/4)
	}
}

// TestInjectAsThePropagator: Inject writes the traceparent the W3C
// propagator writes, sampled or not, and defers to it with a tracestate.
func TestInjectAsThePropagator(t *testing.T) {
	ts, err := trace.ParseTraceState("k=v")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range []trace.SpanContext{
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: newTraceID(), SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}}),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: newTraceID(), SpanID: trace.SpanID{0xff, 0, 0, 0, 0, 0, 0, 0xab}, TraceFlags: trace.FlagsSampled}),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: newTraceID(), SpanID: trace.SpanID{9}, TraceFlags: trace.FlagsSampled, TraceState: ts}),
	} {
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		want := map[string]string{}
		propagator.Inject(ctx, propagation.MapCarrier(want))
		got := Inject(ctx, nil)
		if len(got) != len(want) || got[HeaderTraceparent] != want[HeaderTraceparent] || got["tracestate"] != want["tracestate"] {
			t.Fatalf("Inject %v, the propagator %v", got, want)
		}
	}
}

// TestStartMessage: at a ratio of 0.25 about a quarter of messages sent
// without a parent get a recorded span (drawn once: a second draw would
// record a sixteenth) whose trace context their headers carry, each a
// trace of its own; the others get no span and no header at all (the
// caller's map, unchanged), which no hop traces; under an unsampled parent
// a message stays in the parent's trace, unsampled, with a span id of its
// own; under a sampled one it is recorded. The caller's headers are never
// written; with tracing off and no parent nothing is added. The control:
// tr.Start with Inject, what the client did before, gives the same
// decisions, and carries the unsampled ones' traceparents.
func TestStartMessage(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer UseSpanProcessor(rec)()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithSampler(batchSampler{sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.25))}))
	install(tp, tp, stateOn, &spanSink{proc: rec, res: resource.Default()})
	sampleRatio.Store(math.Float64bits(0.25))
	tr := Tracer("test")
	opts := func() []trace.SpanStartOption {
		return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	}
	mine := map[string]string{"app": "x"}
	const n = 20000
	for _, via := range []string{"StartMessage", "Start+Inject"} {
		before := len(rec.Ended())
		sampled, traces := 0, map[string]bool{}
		for range n {
			var span trace.Span
			var h map[string]string
			if via == "StartMessage" {
				span, h = StartMessage(context.Background(), tr, "send", opts, mine)
			} else {
				var sctx context.Context
				sctx, span = tr.Start(context.Background(), "send", opts()...)
				h = Inject(sctx, maps.Clone(mine))
			}
			sc := SpanContext(h)
			if h["app"] != "x" || len(mine) != 1 {
				t.Fatalf("%s: headers %v (caller's %v)", via, h, mine)
			}
			if sc.IsSampled() != span.IsRecording() || (span.IsRecording() && !sameSpan(sc, span.SpanContext())) {
				t.Fatalf("%s: headers %v for span %v (recording %v)", via, h, span.SpanContext(), span.IsRecording())
			}
			if sc.IsSampled() {
				sampled++
				traces[sc.TraceID().String()] = true
			} else if via == "StartMessage" && (len(h) != 1 || sc.IsValid()) {
				t.Fatalf("unsampled: headers %v, want the caller's %v alone", h, mine)
			} else if via != "StartMessage" && !sc.IsValid() {
				t.Fatalf("control: unsampled headers %v carry no traceparent", h)
			}
			span.End()
		}
		if got := len(rec.Ended()) - before; got != sampled || sampled < 4600 || sampled > 5400 || len(traces) != sampled {
			t.Fatalf("%s: %d of %d recorded (%d sampled, %d traces), want about %d, each a trace of its own (a ratio of 0.25, drawn once)", via, got, n, sampled, len(traces), n/4)
		}
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}})
	span, h := StartMessage(trace.ContextWithRemoteSpanContext(context.Background(), parent), tr, "send", opts, nil)
	if sc := SpanContext(h); span.IsRecording() || sc.TraceID() != parent.TraceID() || sc.SpanID() == parent.SpanID() || !sc.SpanID().IsValid() || sc.IsSampled() {
		t.Fatalf("under an unsampled parent: headers %v, recording %v", h, span.IsRecording())
	}
	sampledParent := parent.WithTraceFlags(trace.FlagsSampled)
	span, h = StartMessage(trace.ContextWithRemoteSpanContext(context.Background(), sampledParent), tr, "send", opts, nil)
	if sc := SpanContext(h); !span.IsRecording() || sc.TraceID() != parent.TraceID() || !sc.IsSampled() || !sameSpan(sc, span.SpanContext()) {
		t.Fatalf("under a sampled parent: headers %v, recording %v", h, span.IsRecording())
	}
	span.End()
	state.Store(stateOff)
	defer state.Store(stateOn)
	if span, h := StartMessage(context.Background(), tr, "send", opts, mine); span.IsRecording() || len(h) != 1 {
		t.Fatalf("tracing off: headers %v", h)
	}
}

func sameSpan(a, b trace.SpanContext) bool {
	return a.TraceID() == b.TraceID() && a.SpanID() == b.SpanID() && a.TraceFlags() == b.TraceFlags()
}

// TestStartMessageUnsampledAllocations: an unsampled message's send
// allocates nothing: no headers map, traceparent, context, span or span
// options. The control: tr.Start with Inject, what the client did before,
// allocates.
func TestStartMessageUnsampledAllocations(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer UseSpanProcessor(rec)()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithSampler(batchSampler{sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0))}))
	install(tp, tp, stateOn, &spanSink{proc: rec, res: resource.Default()})
	sampleRatio.Store(math.Float64bits(0))
	tr := Tracer("test")
	topic := "orders"
	opts := func() []trace.SpanStartOption {
		return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(AttrTopic.String(topic))}
	}
	got := testing.AllocsPerRun(1000, func() {
		span, _ := StartMessage(context.Background(), tr, "send", opts, nil)
		span.End()
	})
	control := testing.AllocsPerRun(1000, func() {
		sctx, span := tr.Start(context.Background(), "send", opts()...)
		_ = Inject(sctx, nil)
		span.End()
	})
	if got != 0 || control <= got {
		t.Fatalf("%v allocations per unsampled send, want none (the control, Start and Inject: %v)", got, control)
	}
	if len(rec.Ended()) != 0 {
		t.Fatalf("%d spans recorded at a ratio of 0", len(rec.Ended()))
	}
}

// TestShutdownReportsLostSpans: when spans cannot be exported (a collector
// that is not there), the shutdown says so rather than dropping them
// silently. The control: the same spans to an
// exporter that delivers (stdout) report no loss.
func TestShutdownReportsLostSpans(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := l.Addr().String()
	_ = l.Close()
	run := func(cfg Tracing) error {
		stop, err := Setup(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			_, s := Tracer("test").Start(context.Background(), "lost")
			s.End()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return stop(ctx)
	}
	err = run(Tracing{Exporter: ExporterOTLP, Endpoint: nowhere, SampleRatio: 1})
	// The export is still retrying when the shutdown's time is up, or it
	// failed: either way the shutdown says so.
	if err == nil || !strings.Contains(err.Error(), "tracing: ") {
		t.Fatalf("shutdown after exports to %s that failed: %v, want an error", nowhere, err)
	}
	if n, _ := Lost(); n != 0 {
		t.Logf("%d spans counted lost", n)
	}
	stdout := os.Stdout
	os.Stdout, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	defer func() { os.Stdout = stdout }()
	if err := run(Tracing{Exporter: ExporterStdout, SampleRatio: 1}); err != nil {
		t.Fatalf("control: shutdown after exports that succeeded: %v", err)
	}
}

// TestLossCounter: the spans of a failed export are counted lost, with
// the error; those of a delivered export are not (the control).
func TestLossCounter(t *testing.T) {
	spans := []sdktrace.ReadOnlySpan{tracetest.SpanStub{Name: "a"}.Snapshot(), tracetest.SpanStub{Name: "b"}.Snapshot()}
	n0, _ := Lost()
	if err := (lossCounter{tracetest.NewNoopExporter()}).ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	if n, _ := Lost(); n != n0 {
		t.Fatalf("control: a delivered export counted %d spans lost", n-n0)
	}
	failing := lossCounter{failExporter{}}
	if err := failing.ExportSpans(context.Background(), spans); err == nil {
		t.Fatal("the failing exporter did not fail")
	}
	if n, last := Lost(); n < n0+2 || last == nil || !strings.Contains(last.Error(), "collector down") {
		t.Fatalf("after a failed export of 2 spans: %d lost (was %d), last error %v", n, n0, last)
	}
}

type failExporter struct{}

func (failExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("collector down")
}
func (failExporter) Shutdown(context.Context) error { return nil }
