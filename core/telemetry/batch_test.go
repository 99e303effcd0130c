package telemetry

import (
	"context"
	"fmt"
	"math"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// batchRecorder installs a recording provider with Setup's sampler at
// ratio, as this process's tracing, until the test ends.
func batchRecorder(t *testing.T, ratio float64) (trace.Tracer, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
		sdktrace.WithSampler(batchSampler{sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))}))
	install(tp, tp, stateOn, &spanSink{proc: rec, res: resource.Default()})
	t.Cleanup(func() {
		install(noop.NewTracerProvider(), nil, stateOff, nil)
		_ = tp.Shutdown(context.Background())
	})
	return Tracer(ComponentTransport), rec
}

// batchOf makes n messages, those at the indexes in sampled with a sampled
// producer span's trace context (from another process: not recorded
// here), the others with an unsampled one.
func batchOf(n int, sampled ...int) ([]*ferryv1.Message, map[int]trace.SpanContext) {
	tr := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())).Tracer("producer")
	msgs := make([]*ferryv1.Message, n)
	senders := map[int]trace.SpanContext{}
	for i := range msgs {
		msgs[i] = &ferryv1.Message{Id: fmt.Sprintf("m-%d", i), Headers: map[string]string{}}
		msgs[i].Headers[HeaderTraceparent] = fmt.Sprintf("00-%032x-%016x-00", i+1, i+1)
	}
	for _, i := range sampled {
		ctx, s := tr.Start(context.Background(), SpanProducerSend, trace.WithNewRoot())
		senders[i] = s.SpanContext()
		s.End()
		msgs[i].Headers = map[string]string{}
		propagation.TraceContext{}.Inject(ctx, propagation.MapCarrier(msgs[i].Headers))
	}
	return msgs, senders
}

func ended(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// Two hops of a batch of five of which two are sampled: each sampled
// message gets a span at each hop in its own trace, a child of its span of
// the hop before, with the batch's timing, its id, the batch's size and a
// link to the batch span; the batch span is the root of a trace of its own
// and the next hop's batch span its child. The unsampled messages get none.
func TestStartHopBatch(t *testing.T) {
	tr, rec := batchRecorder(t, 0) // a ratio of 0: only the producers' decisions count
	msgs, senders := batchOf(5, 1, 3)
	in := Sampled(msgs)
	if in.Len() != 2 || in.Index[0] != 1 || in.Index[1] != 3 {
		t.Fatalf("Sampled = %+v, want messages 1 and 3", in)
	}
	recv := StartHop(context.Background(), tr, SpanTransportReceive, msgs, in)
	recv.End()
	// The next process gets the batch's trace context and the Traced.
	next := trace.ContextWithRemoteSpanContext(context.Background(), trace.SpanContextFromContext(recv.Ctx))
	app := StartHop(next, tr, SpanBrokerAppend, msgs, recv.Traced())
	app.SetOffsets([]int64{10, 11, 12, 13, 14})
	app.End()

	for _, hop := range []struct {
		name   string
		parent func(i int) trace.SpanID
	}{
		{SpanTransportReceive, func(i int) trace.SpanID { return senders[i].SpanID() }},
		{SpanBrokerAppend, func(i int) trace.SpanID {
			for _, s := range ended(rec, SpanTransportReceive) {
				if s.SpanContext().TraceID() == senders[i].TraceID() {
					return s.SpanContext().SpanID()
				}
			}
			return trace.SpanID{}
		}},
	} {
		spans := ended(rec, hop.name)
		if len(spans) != 3 {
			t.Fatalf("%s: %d spans, want the batch's and 2 messages'", hop.name, len(spans))
		}
		var batch sdktrace.ReadOnlySpan
		for _, s := range spans {
			if attr(s, string(AttrMessageID)) == "" {
				batch = s
			}
		}
		if batch == nil || attr(batch, string(AttrMessages)) != "5" {
			t.Fatalf("%s: no batch span with messaging.batch.message_count=5", hop.name)
		}
		for _, i := range []int{1, 3} {
			var m sdktrace.ReadOnlySpan
			for _, s := range spans {
				if attr(s, string(AttrMessageID)) == msgs[i].Id {
					m = s
				}
			}
			switch {
			case m == nil:
				t.Fatalf("%s: no span of message %d", hop.name, i)
			case m.SpanContext().TraceID() != senders[i].TraceID():
				t.Errorf("%s of message %d in trace %s, want its own %s", hop.name, i, m.SpanContext().TraceID(), senders[i].TraceID())
			case m.Parent().SpanID() != hop.parent(i):
				t.Errorf("%s of message %d: parent %s, want %s", hop.name, i, m.Parent().SpanID(), hop.parent(i))
			case len(m.Links()) != 1 || m.Links()[0].SpanContext.SpanID() != batch.SpanContext().SpanID():
				t.Errorf("%s of message %d: links %v, want the batch span", hop.name, i, m.Links())
			case !m.StartTime().Equal(batch.StartTime()) || !m.EndTime().Equal(batch.EndTime()):
				t.Errorf("%s of message %d: %v..%v, want the batch's %v..%v", hop.name, i, m.StartTime(), m.EndTime(), batch.StartTime(), batch.EndTime())
			case attr(m, string(AttrMessages)) != "5":
				t.Errorf("%s of message %d: no batch size", hop.name, i)
			}
			if hop.name == SpanBrokerAppend && attr(m, string(AttrOffset)) != fmt.Sprint(10+i) {
				t.Errorf("broker.append of message %d: offset %q, want %d", i, attr(m, string(AttrOffset)), 10+i)
			}
		}
		if hop.name == SpanTransportReceive && batch.Parent().IsValid() {
			t.Errorf("the first hop's batch span has parent %v, want the root of the batch's trace", batch.Parent())
		}
		if hop.name == SpanBrokerAppend {
			first := ended(rec, SpanTransportReceive)
			for _, s := range first {
				if attr(s, string(AttrMessageID)) == "" && batch.Parent().SpanID() != s.SpanContext().SpanID() {
					t.Errorf("broker.append's batch span: parent %s, want the transport's batch span %s", batch.Parent().SpanID(), s.SpanContext().SpanID())
				}
			}
		}
	}
}

// A batch with no sampled message records nothing and costs no
// per-message work: Sampled allocates nothing, and a hop under an
// unsampled batch context allocates the same for 10 messages as for 1000.
func TestStartHopUnsampledCostsNoPerMessageWork(t *testing.T) {
	tr, rec := batchRecorder(t, 0)
	small, _ := batchOf(10)
	large, _ := batchOf(1000)
	if a := testing.AllocsPerRun(100, func() { Sampled(large) }); a != 0 {
		t.Errorf("Sampled of 1000 unsampled messages: %v allocations, want 0", a)
	}
	recv := StartHop(context.Background(), tr, SpanTransportReceive, large, Sampled(large))
	recv.End()
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans recorded for a batch without a sampled message", n)
	}
	if tt := recv.Traced(); tt.Len() != 0 {
		t.Fatalf("Traced of an unsampled batch: %+v", tt)
	}
	parent := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, Remote: true}))
	hop := func(msgs []*ferryv1.Message) func() {
		return func() {
			h := StartHop(parent, tr, SpanBrokerAppend, msgs, Traced{})
			h.SetOffsets(make([]int64, len(msgs)))
			h.End()
		}
	}
	if a, b := testing.AllocsPerRun(100, hop(small)), testing.AllocsPerRun(100, hop(large)); a != b {
		t.Errorf("a hop under an unsampled parent: %v allocations for 10 messages, %v for 1000: want no per-message work", a, b)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans recorded under an unsampled parent", n)
	}
}

// TestStartHopStartsNoTrace: a trace starts only where a message is
// produced. At a sampling ratio of 1, a hop of messages that carry no trace
// context (their producer's trace was decided against and not propagated,
// or their producer traces nothing) records nothing, alone or in a batch,
// and passes no trace on; the hops after it (under its context) record
// nothing either. The control: the same hops of a batch whose message 1 is
// sampled record its spans and the batch's.
func TestStartHopStartsNoTrace(t *testing.T) {
	tr, rec := batchRecorder(t, 1)
	sampleRatio.Store(math.Float64bits(1)) // Tracer's own draw for a new trace, as Setup sets it
	t.Cleanup(func() { sampleRatio.Store(0) })
	bare := func(n int) []*ferryv1.Message {
		msgs := make([]*ferryv1.Message, n)
		for i := range msgs {
			msgs[i] = &ferryv1.Message{Id: fmt.Sprintf("m-%d", i)}
		}
		return msgs
	}
	for _, n := range []int{1, 5} {
		msgs := bare(n)
		recv := StartHop(context.Background(), tr, SpanTransportReceive, msgs, Sampled(msgs))
		next := StartHop(recv.Ctx, tr, SpanBrokerAppend, msgs, recv.Traced())
		if next.Recording() || recv.Recording() || trace.SpanContextFromContext(next.Ctx).IsValid() || next.Traced().Len() != 0 {
			t.Errorf("%d messages without a trace: recording %v, %v; context %v", n, recv.Recording(), next.Recording(), trace.SpanContextFromContext(next.Ctx))
		}
		next.End()
		recv.End()
	}
	if got := len(rec.Ended()); got != 0 {
		t.Fatalf("%d spans recorded for messages that carry no trace, want none", got)
	}
	msgs := bare(5)
	traced, _ := batchOf(2, 1)
	msgs[1] = traced[1]
	recv := StartHop(context.Background(), tr, SpanTransportReceive, msgs, Sampled(msgs))
	next := StartHop(recv.Ctx, tr, SpanBrokerAppend, msgs, recv.Traced())
	next.End()
	recv.End()
	if got := len(rec.Ended()); got != 4 {
		t.Fatalf("control: %d spans for a batch with one sampled message, want 4 (two hops: the batch's and the message's)", got)
	}
}

// With tracing off a hop returns at once and records nothing.
func TestStartHopOff(t *testing.T) {
	install(noop.NewTracerProvider(), nil, stateOff, nil)
	msgs, _ := batchOf(3)
	msgs[1].Headers[HeaderTraceparent] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if in := Sampled(msgs); in.Len() != 0 {
		t.Fatalf("Sampled with tracing off: %+v", in)
	}
	ctx := context.Background()
	h := StartHop(ctx, Tracer(ComponentBroker), SpanBrokerAppend, msgs, Traced{Index: []uint32{1}, Span: []uint64{7}})
	if h.Ctx != ctx || h.Recording() || h.Traced().Len() != 0 {
		t.Fatalf("a hop with tracing off: %+v", h)
	}
	h.End()
	var zero Hop // a hop never started (tracing off at the caller)
	zero.SetAttributes(AttrStatus.String("x"))
	zero.RecordError(nil)
	zero.End()
}

func TestSampledTraceparent(t *testing.T) {
	for tp, want := range map[string]bool{
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01": true,
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03": true,
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00": false,
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0":  false,
		"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01": false,
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x": false,
		"": false,
	} {
		if got := sampledTraceparent(tp); got != want {
			t.Errorf("sampledTraceparent(%q) = %v, want %v", tp, got, want)
		}
	}
}

func TestTracedAppendCut(t *testing.T) {
	a := Traced{Index: []uint32{0, 2}, Span: []uint64{1, 2}}
	b := Traced{Index: []uint32{1}, Span: []uint64{3}}
	got := b.Append(a, 3)
	if fmt.Sprint(got) != fmt.Sprint(Traced{Index: []uint32{0, 2, 4}, Span: []uint64{1, 2, 3}}) {
		t.Errorf("Append = %+v", got)
	}
	if c := got.Cut(3); fmt.Sprint(c) != fmt.Sprint(a) {
		t.Errorf("Cut(3) = %+v, want %+v", c, a)
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestUnsampledTraceparent: only a valid, unsampled version-00 traceparent
// counts; what the propagator would reject or take as sampled does not.
func TestUnsampledTraceparent(t *testing.T) {
	const ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	if !UnsampledTraceparent(ok) {
		t.Fatal("a valid unsampled traceparent refused")
	}
	for _, tp := range []string{
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // sampled
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
		"00-00000000000000000000000000000000-b7ad6b7169203331-00", // zero trace id
		"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-00", // zero span id
		"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-00", // uppercase
		"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", // version
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-000",
		"",
	} {
		if UnsampledTraceparent(tp) {
			t.Errorf("%q counted as unsampled", tp)
		}
	}
	// The propagator agrees on the valid one: a valid, unsampled context.
	sc := SpanContext(map[string]string{HeaderTraceparent: ok})
	if !sc.IsValid() || sc.IsSampled() {
		t.Fatalf("propagator: valid %v sampled %v", sc.IsValid(), sc.IsSampled())
	}
}
