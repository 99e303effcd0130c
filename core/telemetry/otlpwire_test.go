package telemetry

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// collector is an OTLP/gRPC trace collector that keeps what it is sent.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*coltracepb.ExportTraceServiceRequest
}

func (c *collector) Export(_ context.Context, r *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, r)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestOTLPExporterSendsWhatTheStockOneSends: Ferry's OTLP/gRPC exporter
// (newOTLPExporter: otlpExporter) and the stock otlptracegrpc exporter,
// given the same spans (attributes of every kind, events, links, an error
// status, a parent, two scopes, a resource), deliver equal requests to a
// real gRPC collector, byte for byte what proto.Marshal writes of the
// stock one's; so do Ferry's own spans (a batch hop's, with keys set twice,
// and a root span with an event and an error status). The control: spans
// that differ in one attribute arrive as a different request.
func TestOTLPExporterSendsWhatTheStockOneSends(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	col := &collector{}
	coltracepb.RegisterTraceServiceServer(srv, col)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ts, _ := trace.ParseTraceState("k=v")
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, TraceState: ts})
	res := resource.NewSchemaless(attribute.String("service.name", "ferry-test"), attribute.Int("process.pid", 42))
	spans := func(offset int64) []sdktrace.ReadOnlySpan {
		return tracetest.SpanStubs{{
			Name: SpanBrokerAppend, SpanContext: parent.WithSpanID(trace.SpanID{3}), Parent: parent, SpanKind: trace.SpanKindServer,
			StartTime: time.Unix(1, 2), EndTime: time.Unix(3, 4),
			Attributes: []attribute.KeyValue{AttrSystem.String(SystemFerry), AttrOffset.Int64(offset), attribute.Bool("ok", true),
				attribute.Float64("f", 0.5), attribute.StringSlice("ss", []string{"a", "b"}), attribute.Int64Slice("is", []int64{1, -2})},
			Events: []sdktrace.Event{{Name: EventRetry, Time: time.Unix(2, 0), Attributes: []attribute.KeyValue{AttrAttempt.Int(2)}}},
			Links:  []sdktrace.Link{{SpanContext: parent.WithSpanID(trace.SpanID{9}), Attributes: []attribute.KeyValue{attribute.String("l", "x")}}},
			Status: sdktrace.Status{Code: codes.Error, Description: "poison"}, DroppedAttributes: 1,
			Resource: res, InstrumentationScope: instrumentation.Scope{Name: "ferry/broker", Version: "v1"},
		}, {
			Name: SpanStorageFlush, SpanContext: parent.WithSpanID(trace.SpanID{4}), Resource: res,
			InstrumentationScope: instrumentation.Scope{Name: "ferry/storage"},
		}}.Snapshots()
	}
	send := func(exp sdktrace.SpanExporter, offset int64) *coltracepb.ExportTraceServiceRequest {
		t.Helper()
		before := len(col.reqs)
		if err := exp.ExportSpans(ctx, spans(offset)); err != nil {
			t.Fatal(err)
		}
		col.mu.Lock()
		defer col.mu.Unlock()
		if len(col.reqs) != before+1 {
			t.Fatalf("the collector got %d requests, want 1", len(col.reqs)-before)
		}
		return col.reqs[before]
	}
	ours, err := newOTLPExporter(ctx, lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ours.Shutdown(context.Background()) }()
	stock, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(lis.Addr().String()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stock.Shutdown(context.Background()) }()
	encoded := otlpEncoded.Load()
	got := send(ours, 7)
	if otlpEncoded.Load() != encoded+1 {
		t.Fatal("Ferry's exporter did not encode its request itself")
	}
	want := send(stock, 7)
	if !proto.Equal(got, want) {
		t.Fatalf("the collector got from Ferry's exporter:\n%v\nfrom the stock one:\n%v", got, want)
	}
	if n := len(got.ResourceSpans); n != 1 || len(got.ResourceSpans[0].ScopeSpans) != 2 {
		t.Fatalf("the request holds %d resources (want 1, with 2 scopes): %v", n, got)
	}
	if other := send(ours, 8); proto.Equal(other, want) {
		t.Fatal("control: spans with another offset arrived as the same request")
	}
	// Byte for byte what proto.Marshal writes of the stock exporter's
	// request (fields in number order).
	marshalled, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if raw := appendSpansRequest(nil, spans(7)); !bytes.Equal(raw, marshalled) {
		t.Errorf("appendSpansRequest wrote %d bytes, proto.Marshal of the stock request %d; they differ", len(raw), len(marshalled))
	}

	// Ferry's own spans (a batch hop's, with their shared attributes and
	// link, a root span, an event and an error) arrive as the stock
	// exporter's request of the same spans.
	rec := &collectProc{}
	defer UseSpanProcessor(rec)()
	msgs, _ := batchOf(3)
	for i := range msgs {
		msgs[i].Headers[HeaderTraceparent] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333" + string(rune('1'+i)) + "-01"
	}
	hop := StartHop(context.Background(), Tracer(ComponentStorage), SpanStorageAppend, msgs, Sampled(msgs), trace.WithSpanKind(trace.SpanKindServer))
	hop.SetOffsets([]int64{4, 5, 6})
	hop.SetAttributes(AttrTopic.String("a"), AttrQueue.Int(1))
	hop.ForMessages(func(i int, s trace.Span) { s.SetAttributes(AttrTopic.String("b"), AttrOffset.Int64(int64(i))) }) // again: the last wins
	hop.End()
	_, root := Tracer(ComponentProducer).Start(context.Background(), SpanProducerSend)
	root.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(1)))
	root.SetStatus(codes.Error, "no")
	root.End()
	if len(rec.spans) != 5 {
		t.Fatalf("%d spans recorded, want 5 (a batch span, 3 messages' and a root)", len(rec.spans))
	}
	sendSpans := func(exp sdktrace.SpanExporter) *coltracepb.ExportTraceServiceRequest {
		t.Helper()
		before := len(col.reqs)
		if err := exp.ExportSpans(ctx, rec.spans); err != nil {
			t.Fatal(err)
		}
		col.mu.Lock()
		defer col.mu.Unlock()
		return col.reqs[before]
	}
	if got, want := sendSpans(ours), sendSpans(stock); !proto.Equal(got, want) {
		t.Fatalf("Ferry's spans: the collector got from Ferry's exporter:\n%v\nfrom the stock one:\n%v", got, want)
	}
}

// collectProc keeps the spans it is given.
type collectProc struct {
	countingProcessor
	spans []sdktrace.ReadOnlySpan
}

func (c *collectProc) OnEnd(s sdktrace.ReadOnlySpan) { c.spans = append(c.spans, s) }
