package telemetry

import (
	"bytes"
	"context"
	"net"
	"strings"
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
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func str(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// fullRequest sets every field of every message an export request holds,
// some to their zero value inside a oneof (which is still written), with
// lengths of one, two and three varint bytes.
func fullRequest() *coltracepb.ExportTraceServiceRequest {
	long := strings.Repeat("x", 200)
	huge := strings.Repeat("y", 20000)
	values := []*commonpb.KeyValue{
		str("s", "v"), str("empty", ""), str("long", long), str("huge", huge),
		{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
		{Key: "b0", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{}}},
		{Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -7}}},
		{Key: "i0", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{}}},
		{Key: "d", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 2.5}}},
		{Key: "d0", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{}}},
		{Key: "bytes", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0, 1}}}},
		{Key: "strindex", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValueStrindex{StringValueStrindex: -3}}},
		{Key: "array", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{
			{Value: &commonpb.AnyValue_StringValue{StringValue: "a"}}, {Value: &commonpb.AnyValue_IntValue{IntValue: 1}}, {}}}}}},
		{Key: "emptyarray", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{}}}},
		{Key: "kvlist", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{str("k", "v")}}}}},
		{Key: "novalue"},
		{Key: "emptyvalue", Value: &commonpb.AnyValue{}},
		{KeyStrindex: 4, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "by index"}}},
	}
	span := func(name string) *tracepb.Span {
		return &tracepb.Span{
			TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8), TraceState: "a=b",
			ParentSpanId: bytes.Repeat([]byte{3}, 8), Flags: 0x301, Name: name, Kind: tracepb.Span_SPAN_KIND_CONSUMER,
			StartTimeUnixNano: 1, EndTimeUnixNano: 1 << 62, Attributes: values, DroppedAttributesCount: 5,
			Events:             []*tracepb.Span_Event{{TimeUnixNano: 9, Name: "retry", Attributes: values[:3], DroppedAttributesCount: 1}, {}},
			DroppedEventsCount: 6,
			Links: []*tracepb.Span_Link{{TraceId: bytes.Repeat([]byte{4}, 16), SpanId: bytes.Repeat([]byte{5}, 8), TraceState: "c=d",
				Attributes: values[4:6], DroppedAttributesCount: 2, Flags: 1}, {}},
			DroppedLinksCount: 7,
			Status:            &tracepb.Status{Message: "poison", Code: tracepb.Status_STATUS_CODE_ERROR},
		}
	}
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: values[:2], DroppedAttributesCount: 3,
			EntityRefs: []*commonpb.EntityRef{{SchemaUrl: "u", Type: "service", IdKeys: []string{"a", ""}, DescriptionKeys: []string{"b"}}, {}}},
		ScopeSpans: []*tracepb.ScopeSpans{
			{Scope: &commonpb.InstrumentationScope{Name: "ferry/broker", Version: "1", Attributes: values[:1], DroppedAttributesCount: 8},
				Spans: []*tracepb.Span{span("broker.append"), span(long), {}}, SchemaUrl: "s1"},
			{Scope: &commonpb.InstrumentationScope{}},
			{},
		},
		SchemaUrl: "r1",
	}, {}}}
}

// TestOTLPWireMatchesProto: appendExportRequest writes what proto.Marshal
// writes, byte for byte, for a request that sets every field, and it
// decodes to an equal request. Its negative control: the same check finds
// a request that differs in one span attribute's value.
func TestOTLPWireMatchesProto(t *testing.T) {
	req := fullRequest()
	got := appendExportRequest(nil, req)
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("appendExportRequest wrote %d bytes, proto.Marshal %d; they differ", len(got), len(want))
	}
	back := new(coltracepb.ExportTraceServiceRequest)
	if err := proto.Unmarshal(got, back); err != nil {
		t.Fatalf("what appendExportRequest wrote does not decode: %v", err)
	}
	if !proto.Equal(back, req) {
		t.Fatal("what appendExportRequest wrote decodes to another request")
	}
	other := fullRequest()
	other.ResourceSpans[0].ScopeSpans[0].Spans[1].Attributes[0] = str("s", "w")
	if bytes.Equal(appendExportRequest(nil, other), want) || proto.Equal(other, req) {
		t.Fatal("control: a request with another attribute value encodes the same")
	}
	buf := make([]byte, 0, len(want))
	if a := testing.AllocsPerRun(20, func() { appendExportRequest(buf[:0], req) }); a != 0 {
		t.Errorf("%v allocations to encode into a buffer large enough, want 0", a)
	}
}

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
// (newOTLPExporter, with otlpCodec) and the stock otlptracegrpc exporter,
// given the same spans (attributes of every kind, events, links, an error
// status, a parent, two scopes, a resource), deliver equal requests to a
// real gRPC collector. The control: spans that differ in one attribute
// arrive as a different request.
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
		t.Fatal("Ferry's exporter did not encode its request with otlpCodec")
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
}
