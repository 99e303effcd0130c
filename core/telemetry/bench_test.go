package telemetry

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// What tracing costs per message on a hot path. With tracing off a hop
// checks Enabled and passes the headers on: ~1 ns, no allocation.
//
//	go test -run '^$' -bench . -benchmem ./core/telemetry

func BenchmarkOffEnabledCheck(b *testing.B) {
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if Enabled() {
			n++
		}
	}
	_ = n
}

func BenchmarkOffStart(b *testing.B) {
	shutdown, err := Setup(context.Background(), Tracing{Exporter: ExporterNone})
	if err != nil {
		b.Fatal(err)
	}
	defer shutdown(context.Background())
	tracer := Tracer(ComponentBroker)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, s := tracer.Start(ctx, SpanBrokerDeliver)
		s.End()
	}
}

func BenchmarkOffInject(b *testing.B) {
	ctx := context.Background()
	h := map[string]string{"app": "x"}
	b.ReportAllocs()
	for b.Loop() {
		h = Inject(ctx, h)
	}
}

func BenchmarkOffExtract(b *testing.B) {
	ctx := context.Background()
	h := map[string]string{"app": "x"}
	b.ReportAllocs()
	for b.Loop() {
		_ = Extract(ctx, h)
	}
}

func BenchmarkOnInject(b *testing.B) {
	tracer := benchTracer(b)
	ctx, s := tracer.Start(context.Background(), SpanProducerSend)
	defer s.End()
	h := map[string]string{}
	b.ReportAllocs()
	for b.Loop() {
		h = Inject(ctx, h)
	}
}

func BenchmarkOnExtract(b *testing.B) {
	tracer := benchTracer(b)
	ctx, s := tracer.Start(context.Background(), SpanProducerSend)
	defer s.End()
	h := Inject(ctx, nil)
	b.ReportAllocs()
	for b.Loop() {
		_ = Extract(context.Background(), h)
	}
}

// BenchmarkOnSpan is one recorded span per message, attributes included,
// exported to nowhere: the floor of 100% sampling.
func BenchmarkOnSpan(b *testing.B) {
	tracer := benchTracer(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, s := tracer.Start(ctx, SpanBrokerDeliver, trace.WithAttributes(AttrTopic.String("orders"), AttrOffset.Int64(42)))
		s.End()
	}
}

// benchTracer records every span and exports it to nowhere, through the
// batch processor Setup uses.
func benchTracer(b *testing.B) trace.Tracer {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp.Tracer("bench")
}

// BenchmarkHopUnsampled is a hop of one message whose trace is not sampled
// (at 1 % sampling, nearly every message at every hop).
func BenchmarkHopUnsampled(b *testing.B) {
	rec := tracetest.NewSpanRecorder()
	defer UseSpanProcessor(rec)()
	tr := Tracer(ComponentTransport)
	msgs := []*ferryv1.Message{{Id: "m", Headers: map[string]string{HeaderTraceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}}
	b.ReportAllocs()
	for b.Loop() {
		h := StartHop(context.Background(), tr, SpanTransportReceive, msgs, Sampled(msgs))
		h.End()
	}
	if n := len(rec.Ended()); n != 0 {
		b.Fatalf("%d spans recorded for an unsampled message", n)
	}
}
