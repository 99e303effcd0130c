package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
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
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// Ferry's OTLP/gRPC span exporter.
//
// The stock exporter (otlptracegrpc) turns every span into the OTLP
// protobuf types first (a Span, a KeyValue and an AnyValue per attribute,
// slices for the ids, …) and then marshals them: with Ferry's own spans
// (span.go) that transformation was four fifths of what a span cost its
// process at 100 % sampling. otlpExporter writes the
// ExportTraceServiceRequest straight from the spans, in one pass into one
// buffer, with the bytes the stock exporter's request marshals to
// (TestOTLPExporterSendsWhatTheStockOneSends compares them through a real
// gRPC server), and sends it on a gRPC connection of its own. An export
// that fails with a retryable status (the collector unavailable, out of
// resources, aborted) is retried with backoff until its context ends, as
// the stock exporter does; the batch processor gives each export
// exportTimeout.

// otlpExport is the TraceService's Export method.
const otlpExport = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

type otlpExporter struct {
	conn *grpc.ClientConn
	mu   sync.Mutex // one export at a time (the batch processor's), and Shutdown
	buf  []byte     // the last request's
	done bool
}

func newOTLPGRPCExporter(endpoint string) (*otlpExporter, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2("proto")})))
	if err != nil {
		return nil, fmt.Errorf("tracing endpoint %q: %w", endpoint, err)
	}
	return &otlpExporter{conn: conn}, nil
}

// otlpEncoded counts the requests otlpExporter encoded (for tests).
var otlpEncoded atomic.Uint64

// ExportSpans sends spans to the collector in one request.
func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done {
		return errors.New("tracing: the OTLP exporter is shut down")
	}
	// The buffer is the exporter's, kept for the next export: gRPC is done
	// with a unary call's request when Invoke returns.
	e.buf = appendSpansRequest(e.buf[:0], spans)
	otlpEncoded.Add(1)
	req := rawRequest{mem.BufferSlice{mem.SliceBuffer(e.buf)}}
	backoff := 100 * time.Millisecond
	for {
		var resp coltracepb.ExportTraceServiceResponse
		err := e.conn.Invoke(ctx, otlpExport, req, &resp)
		if err == nil {
			if ps := resp.GetPartialSuccess(); ps.GetRejectedSpans() > 0 || ps.GetErrorMessage() != "" {
				otel.Handle(fmt.Errorf("tracing: the collector rejected %d spans: %s", ps.GetRejectedSpans(), ps.GetErrorMessage()))
			}
			return nil
		}
		switch status.Code(err) {
		case grpccodes.Unavailable, grpccodes.ResourceExhausted, grpccodes.Aborted, grpccodes.DataLoss:
		default:
			return fmt.Errorf("tracing: exporting %d spans: %w", len(spans), err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("tracing: exporting %d spans: %w (last: %v)", len(spans), ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (e *otlpExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done {
		return nil
	}
	e.done = true
	return e.conn.Close()
}

// rawRequest is an encoded ExportTraceServiceRequest.
type rawRequest struct{ data mem.BufferSlice }

// rawCodec sends a rawRequest as it is; everything else (the collector's
// answer) goes through gRPC's proto codec.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawRequest); ok {
		return r.data, nil
	}
	return c.CodecV2.Marshal(v)
}

// Name is the proto codec's: the content-subtype stays application/grpc+proto.
func (rawCodec) Name() string { return "proto" }

// appendSpansRequest appends the ExportTraceServiceRequest of spans: one
// ResourceSpans per resource, one ScopeSpans per scope in it, each in the
// order of its first span, as the stock exporter groups them.
func appendSpansRequest(b []byte, spans []sdktrace.ReadOnlySpan) []byte {
	type group struct {
		res   *resource.Resource
		scope instrumentation.Scope
		spans []sdktrace.ReadOnlySpan
	}
	var groups []*group // few: a process has one resource and a scope per component
	var resources []attribute.Distinct
	for _, s := range spans {
		if s == nil {
			continue
		}
		res, scope := s.Resource(), s.InstrumentationScope()
		key := res.Equivalent()
		var g *group
		for _, x := range groups {
			if x.scope == scope && x.res.Equivalent() == key {
				g = x
				break
			}
		}
		if g == nil {
			g = &group{res: res, scope: scope}
			groups = append(groups, g)
			found := false
			for _, r := range resources {
				found = found || r == key
			}
			if !found {
				resources = append(resources, key)
			}
		}
		g.spans = append(g.spans, s)
	}
	for _, key := range resources {
		var rs int
		b, rs = begin(b, 1) // resource_spans
		first := true
		for _, g := range groups {
			if g.res.Equivalent() != key {
				continue
			}
			if first {
				first = false
				if g.res != nil {
					var r int
					b, r = begin(b, 1) // resource
					for it := g.res.Iter(); it.Next(); {
						b = appendAttr(b, 1, it.Attribute())
					}
					b = end(b, r)
				}
			}
			var ss int
			b, ss = begin(b, 2) // scope_spans
			if g.scope != (instrumentation.Scope{}) {
				var sc int
				b, sc = begin(b, 1)
				b = appendString(b, 1, g.scope.Name)
				b = appendString(b, 2, g.scope.Version)
				for it := g.scope.Attributes.Iter(); it.Next(); {
					b = appendAttr(b, 3, it.Attribute())
				}
				b = end(b, sc)
			}
			for _, s := range g.spans {
				var sp int
				b, sp = begin(b, 2)
				b = appendROSpan(b, s)
				b = end(b, sp)
			}
			b = appendString(b, 3, g.scope.SchemaURL)
			b = end(b, ss)
		}
		for _, g := range groups {
			if g.res.Equivalent() == key {
				b = appendString(b, 3, g.res.SchemaURL())
				break
			}
		}
		b = end(b, rs)
	}
	return b
}

// appendROSpan writes a tracepb.Span's fields from s, as the stock
// exporter's transformation fills them.
func appendROSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, 1, tid[:])
	b = appendBytes(b, 2, sid[:])
	if sc.TraceState().Len() > 0 {
		b = appendString(b, 3, sc.TraceState().String())
	}
	parent := s.Parent()
	if psid := parent.SpanID(); psid.IsValid() {
		b = appendBytes(b, 4, psid[:])
	}
	b = appendString(b, 5, s.Name())
	b = appendVarint(b, 6, uint64(spanKind(s.SpanKind())))
	b = appendFixed64(b, 7, unixNano(s.StartTime()))
	b = appendFixed64(b, 8, unixNano(s.EndTime()))
	if fs, ok := s.(*span); ok {
		b = fs.appendAttrs(b, 9) // without the copy Attributes makes
	} else {
		for _, kv := range s.Attributes() {
			b = appendAttr(b, 9, kv)
		}
	}
	b = appendVarint(b, 10, uint64(clamp32(s.DroppedAttributes())))
	for _, e := range s.Events() {
		var ev int
		b, ev = begin(b, 11)
		b = appendFixed64(b, 1, unixNano(e.Time))
		b = appendString(b, 2, e.Name)
		for _, kv := range e.Attributes {
			b = appendAttr(b, 3, kv)
		}
		b = appendVarint(b, 4, uint64(clamp32(e.DroppedAttributeCount)))
		b = end(b, ev)
	}
	b = appendVarint(b, 12, uint64(clamp32(s.DroppedEvents())))
	for _, l := range s.Links() {
		var lk int
		b, lk = begin(b, 13)
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		b = appendBytes(b, 1, ltid[:])
		b = appendBytes(b, 2, lsid[:])
		for _, kv := range l.Attributes {
			b = appendAttr(b, 4, kv)
		}
		b = appendVarint(b, 5, uint64(clamp32(l.DroppedAttributeCount)))
		b = appendFixed32(b, 6, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		b = end(b, lk)
	}
	b = appendVarint(b, 14, uint64(clamp32(s.DroppedLinks())))
	var st int
	b, st = begin(b, 15) // status: always present
	status := s.Status()
	b = appendString(b, 2, status.Description)
	b = appendVarint(b, 3, uint64(statusCode(status.Code)))
	b = end(b, st)
	return appendFixed32(b, 16, spanFlags(sc.TraceFlags(), parent))
}

// OTLP's span kinds and status codes (tracepb's enums).
func spanKind(k trace.SpanKind) int32 {
	switch k {
	case trace.SpanKindInternal, trace.SpanKindServer, trace.SpanKindClient, trace.SpanKindProducer, trace.SpanKindConsumer:
		return int32(k) // the same numbers: internal 1 … consumer 5
	}
	return 0
}

func statusCode(c codes.Code) int32 {
	switch c {
	case codes.Ok:
		return 1
	case codes.Error:
		return 2
	}
	return 0
}

// spanFlags are OTLP's span flags: the trace flags, "has is-remote", and
// is-remote when parent is.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | 0x100
	if parent.IsRemote() {
		f |= 0x200
	}
	return f
}

func unixNano(t time.Time) uint64 { return uint64(max(0, t.UnixNano())) }

func clamp32(v int) uint32 { return uint32(min(max(v, 0), math.MaxUint32)) }

// appendAttr writes kv as a KeyValue field num.
func appendAttr(b []byte, num protowire.Number, kv attribute.KeyValue) []byte {
	var s int
	b, s = begin(b, num)
	b = appendString(b, 1, string(kv.Key))
	var v int
	b, v = begin(b, 2) // the value: always present, empty for EMPTY
	b = appendAttrValue(b, kv.Value)
	b = end(b, v)
	return end(b, s)
}

// appendAttrValue writes an AnyValue's oneof member for v, as the stock
// exporter's transformation sets it.
func appendAttrValue(b []byte, v attribute.Value) []byte {
	str := func(b []byte, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), s)
	}
	array := func(b []byte, n int, elem func(b []byte, i int) []byte) []byte {
		var a int
		b, a = begin(b, 5)
		for i := range n {
			var e int
			b, e = begin(b, 1)
			b = elem(b, i)
			b = end(b, e)
		}
		return end(b, a)
	}
	switch v.Type() {
	case attribute.BOOL:
		return protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		return protowire.AppendVarint(protowire.AppendTag(b, 3, protowire.VarintType), uint64(v.AsInt64()))
	case attribute.FLOAT64:
		return protowire.AppendFixed64(protowire.AppendTag(b, 4, protowire.Fixed64Type), math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		return str(b, v.AsString())
	case attribute.BYTESLICE:
		return protowire.AppendBytes(protowire.AppendTag(b, 7, protowire.BytesType), v.AsByteSlice())
	case attribute.BOOLSLICE:
		x := v.AsBoolSlice()
		return array(b, len(x), func(b []byte, i int) []byte { return appendAttrValue(b, attribute.BoolValue(x[i])) })
	case attribute.INT64SLICE:
		x := v.AsInt64Slice()
		return array(b, len(x), func(b []byte, i int) []byte { return appendAttrValue(b, attribute.Int64Value(x[i])) })
	case attribute.FLOAT64SLICE:
		x := v.AsFloat64Slice()
		return array(b, len(x), func(b []byte, i int) []byte { return appendAttrValue(b, attribute.Float64Value(x[i])) })
	case attribute.STRINGSLICE:
		x := v.AsStringSlice()
		return array(b, len(x), func(b []byte, i int) []byte { return appendAttrValue(b, attribute.StringValue(x[i])) })
	case attribute.SLICE:
		x := v.AsSlice()
		return array(b, len(x), func(b []byte, i int) []byte { return appendAttrValue(b, x[i]) })
	case attribute.MAP:
		var m int
		b, m = begin(b, 6)
		for _, kv := range v.AsMap() {
			b = appendAttr(b, 1, kv)
		}
		return end(b, m)
	case attribute.EMPTY:
		return b
	}
	return str(b, "INVALID")
}

// appendAttrs writes what s.Attributes returns, as fields num, without
// building it: each key once, at its first place, with its last value.
func (s *span) appendAttrs(b []byte, num protowire.Number) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.base) + len(s.own)
	at := func(i int) attribute.KeyValue {
		if i < len(s.base) {
			return s.base[i]
		}
		return s.own[i-len(s.base)]
	}
next:
	for i := range n {
		kv := at(i)
		if !kv.Valid() {
			continue
		}
		for j := range i {
			if at(j).Key == kv.Key && at(j).Valid() {
				continue next // written at its first place
			}
		}
		for j := i + 1; j < n; j++ {
			if later := at(j); later.Key == kv.Key && later.Valid() {
				kv = later
			}
		}
		b = appendAttr(b, num, kv)
	}
	return b
}
