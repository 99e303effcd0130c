package telemetry

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// spanLife is one span's life, played on a tracer: what the exporters see
// of it must not depend on whose span it is.
func spanLife(tr trace.Tracer, parent trace.SpanContext, at time.Time) {
	link := trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{9}, SpanID: trace.SpanID{9}, TraceFlags: trace.FlagsSampled}),
		Attributes: []attribute.KeyValue{attribute.Int("l", 1)}}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	_, s := tr.Start(ctx, "hop", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(at),
		trace.WithLinks(link), trace.WithAttributes(AttrTopic.String("orders"), AttrQueue.Int(1)))
	s.SetAttributes(AttrOffset.Int64(7), AttrQueue.Int(2)) // queue again: the last value wins
	s.SetName("hop.renamed")
	s.AddEvent(EventRetry, trace.WithTimestamp(at.Add(time.Millisecond)), trace.WithAttributes(AttrAttempt.Int(1), AttrAttempt.Int(2)))
	s.RecordError(errors.New("boom"), trace.WithTimestamp(at.Add(2*time.Millisecond)))
	s.SetStatus(codes.Error, "failed")
	s.SetStatus(codes.Unset, "ignored") // lower than Error: kept
	s.End(trace.WithTimestamp(at.Add(3 * time.Millisecond)))
	s.SetAttributes(attribute.String("after", "end")) // after End: nothing
	s.End()                                           // twice: nothing
}

// comparable is what an exporter reads of a span, without its own span id
// (drawn at random) and the fields only the SDK keeps (its child count,
// its resource and scope's version).
func comparable(s sdktrace.ReadOnlySpan) tracetest.SpanStub {
	st := tracetest.SpanStubFromReadOnlySpan(s)
	st.SpanContext = st.SpanContext.WithSpanID(trace.SpanID{})
	st.ChildSpanCount, st.Resource = 0, nil
	st.InstrumentationLibrary = st.InstrumentationScope
	return st
}

// spanDiff says how two spans differ for an exporter, "" when they do not.
func spanDiff(a, b sdktrace.ReadOnlySpan) string {
	ca, cb := comparable(a), comparable(b)
	if reflect.DeepEqual(ca, cb) {
		return ""
	}
	return fmt.Sprintf("\nSDK:   %+v\nFerry: %+v", ca, cb)
}

// TestFerrySpanMatchesSDK: a span of Ferry's tracers is recorded as
// Ferry's own span, and what the span processor gets of it (name, ids and
// parent, kind, times, attributes de-duplicated, links, events, status,
// scope) is what the SDK's span of the same life gives. The control: the
// comparison fails for a span whose life differs by one attribute.
func TestFerrySpanMatchesSDK(t *testing.T) {
	sdkRec := tracetest.NewSpanRecorder()
	sdkTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdkRec), sdktrace.WithSpanProcessor(systemProcessor{}))
	defer sdkTP.Shutdown(context.Background())
	rec := tracetest.NewSpanRecorder()
	defer UseSpanProcessor(rec)()

	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
		TraceFlags: trace.FlagsSampled, Remote: true})
	at := time.Unix(1700000000, 0)
	spanLife(sdkTP.Tracer(scope+"test"), parent, at)
	spanLife(Tracer("test"), parent, at)
	if len(sdkRec.Ended()) != 1 || len(rec.Ended()) != 1 {
		t.Fatalf("%d SDK spans, %d Ferry spans, want 1 each", len(sdkRec.Ended()), len(rec.Ended()))
	}
	theirs, ours := sdkRec.Ended()[0], rec.Ended()[0]
	if _, ok := ours.(*span); !ok {
		t.Fatalf("Ferry's tracer recorded a %T, want Ferry's own span", ours)
	}
	if d := spanDiff(theirs, ours); d != "" {
		t.Errorf("Ferry's span differs from the SDK's:%s", d)
	}
	if ours.SpanContext().SpanID() == theirs.SpanContext().SpanID() || !ours.SpanContext().IsSampled() {
		t.Errorf("span context %v: want a sampled span with a span id of its own", ours.SpanContext())
	}

	// The control: one attribute more, and the comparison says so.
	_, other := Tracer("test").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "hop.renamed")
	other.End()
	if d := spanDiff(theirs, rec.Ended()[1]); d == "" {
		t.Error("control: a span of another life compares equal")
	}
}

// TestHopSpansCheap: a batch hop's spans for its sampled messages are
// Ferry's own, a few allocations per message; the control, the SDK's
// spans for the same hop (a tracer that is not Ferry's), takes several
// times as many.
func TestHopSpansCheap(t *testing.T) {
	rec := &countingProcessor{}
	defer UseSpanProcessor(rec)()
	msgs := make([]*ferryv1.Message, 64)
	for i := range msgs {
		msgs[i] = &ferryv1.Message{Id: fmt.Sprintf("m%d", i), Headers: map[string]string{
			HeaderTraceparent: fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e%04x-00f067aa0ba902b7-01", i+1)}}
	}
	in := Sampled(msgs)
	hop := func(tr trace.Tracer) float64 {
		return testing.AllocsPerRun(20, func() {
			h := StartHop(context.Background(), tr, SpanStorageAppend, msgs, in, trace.WithAttributes(AttrTopic.String("orders")))
			h.SetOffsets(make([]int64, len(msgs)))
			h.End()
		}) / float64(len(msgs))
	}
	ours := hop(Tracer(ComponentStorage))
	sdkTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer sdkTP.Shutdown(context.Background())
	theirs := hop(sdkTP.Tracer("sdk"))
	t.Logf("allocations per message: Ferry's spans %.1f, the SDK's %.1f", ours, theirs)
	if ours > 4 {
		t.Errorf("a hop allocates %.1f times per sampled message, want at most 4", ours)
	}
	if theirs < 2*ours {
		t.Errorf("control: the SDK's spans allocate %.1f times per message, not more than Ferry's %.1f: the check cannot tell them apart", theirs, ours)
	}
	if rec.ended == 0 {
		t.Fatal("no span reached the span processor")
	}
}

// countingProcessor counts the spans it is given and keeps none.
type countingProcessor struct{ ended int }

func (*countingProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (c *countingProcessor) OnEnd(sdktrace.ReadOnlySpan)                   { c.ended++ }
func (*countingProcessor) Shutdown(context.Context) error                  { return nil }
func (*countingProcessor) ForceFlush(context.Context) error                { return nil }

// TestFerrySpanResource: a span carries the resource of the provider Setup
// installed, as the SDK's did (the exporters group spans by it).
func TestFerrySpanResource(t *testing.T) {
	res := resource.NewSchemaless(attribute.String("service.name", "svc"))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res))
	install(tp, tp, stateOn, &spanSink{proc: rec, res: res})
	sampleRatio.Store(0x3ff0000000000000) // 1
	defer func() { install(tp, nil, stateOff, nil); _ = tp.Shutdown(context.Background()) }()
	_, s := Tracer("test").Start(context.Background(), "root")
	s.End()
	if got := rec.Ended(); len(got) != 1 || got[0].Resource() != res || got[0].Parent().IsValid() {
		t.Fatalf("spans %v: want one root span with the provider's resource", got)
	}
}
