package telemetry

import (
	"math"
	"sync/atomic"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The OTLP/gRPC exporter's request, encoded without reflection.
//
// Profiles of a node at 100 % sampling put a tenth of each process's CPU
// in proto.Marshal of the exporter's ExportTraceServiceRequest (protobuf's
// reflection-driven size and marshal passes over every span, attribute and
// value). otlpCodec encodes that one message type by hand, field by field
// in field-number order as proto.Marshal does, in one pass; every other
// message (the collector's answer, and any request type it does not know)
// goes through gRPC's own proto codec. The encoding must hold every field
// of the OTLP types this module builds against (go.opentelemetry.io/proto/otlp):
// TestOTLPWireMatchesProto decodes what it writes and compares it with the
// original, field for field, and an exporter's request through a real gRPC
// server with the stock exporter's.

// otlpCallOption makes a gRPC client encode export requests with otlpCodec.
func otlpCallOption() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.ForceCodecV2(otlpCodec{encoding.GetCodecV2("proto")}))
}

// otlpCodec is gRPC's proto codec, with ExportTraceServiceRequest encoded
// by appendExportRequest. Safe for concurrent use.
type otlpCodec struct{ encoding.CodecV2 }

func (c otlpCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*coltracepb.ExportTraceServiceRequest); ok {
		otlpEncoded.Add(1)
		// A buffer from gRPC's pool, as large as the last request plus an
		// eighth: gRPC gives it back to the pool once the request is sent.
		pool := mem.DefaultBufferPool()
		hint := otlpSizeHint.Load()
		buf := pool.Get(int(hint + hint/8))
		*buf = appendExportRequest((*buf)[:0], r)
		otlpSizeHint.Store(int64(len(*buf)))
		return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// otlpSizeHint is the size of the last request otlpCodec encoded.
var otlpSizeHint atomic.Int64

// otlpEncoded counts the requests otlpCodec encoded (for tests: that the
// exporter uses it).
var otlpEncoded atomic.Uint64

// Name is the proto codec's: the content-subtype stays application/grpc+proto.
func (otlpCodec) Name() string { return "proto" }

// begin starts a length-delimited field num in b; end closes it. The
// length is written in one byte ahead of the field's bytes, which end moves
// when the length needs more.
func begin(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

func end(b []byte, start int) []byte {
	n := len(b) - start
	if n < 0x80 {
		b[start-1] = byte(n)
		return b
	}
	k := protowire.SizeVarint(uint64(n))
	for range k - 1 {
		b = append(b, 0)
	}
	copy(b[start-1+k:], b[start:start+n])
	protowire.AppendVarint(b[:start-1], uint64(n))
	return b
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), v)
}

func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendFixed32(protowire.AppendTag(b, num, protowire.Fixed32Type), v)
}

// appendInt32 is an int32 field: negative values take ten bytes, as in
// proto.Marshal.
func appendInt32(b []byte, num protowire.Number, v int32) []byte {
	return appendVarint(b, num, uint64(int64(v)))
}

func appendExportRequest(b []byte, r *coltracepb.ExportTraceServiceRequest) []byte {
	for _, rs := range r.GetResourceSpans() {
		var s int
		b, s = begin(b, 1)
		b = appendResourceSpans(b, rs)
		b = end(b, s)
	}
	return b
}

func appendResourceSpans(b []byte, rs *tracepb.ResourceSpans) []byte {
	if rs == nil {
		return b
	}
	if rs.Resource != nil {
		var s int
		b, s = begin(b, 1)
		b = appendResource(b, rs.Resource)
		b = end(b, s)
	}
	for _, ss := range rs.ScopeSpans {
		var s int
		b, s = begin(b, 2)
		b = appendScopeSpans(b, ss)
		b = end(b, s)
	}
	return appendString(b, 3, rs.SchemaUrl)
}

func appendResource(b []byte, r *resourcepb.Resource) []byte {
	b = appendKeyValues(b, 1, r.Attributes)
	b = appendVarint(b, 2, uint64(r.DroppedAttributesCount))
	for _, e := range r.EntityRefs {
		var s int
		b, s = begin(b, 3)
		b = appendEntityRef(b, e)
		b = end(b, s)
	}
	return b
}

func appendEntityRef(b []byte, e *commonpb.EntityRef) []byte {
	if e == nil {
		return b
	}
	b = appendString(b, 1, e.SchemaUrl)
	b = appendString(b, 2, e.Type)
	for _, k := range e.IdKeys {
		b = protowire.AppendString(protowire.AppendTag(b, 3, protowire.BytesType), k)
	}
	for _, k := range e.DescriptionKeys {
		b = protowire.AppendString(protowire.AppendTag(b, 4, protowire.BytesType), k)
	}
	return b
}

func appendScopeSpans(b []byte, ss *tracepb.ScopeSpans) []byte {
	if ss == nil {
		return b
	}
	if sc := ss.Scope; sc != nil {
		var s int
		b, s = begin(b, 1)
		b = appendString(b, 1, sc.Name)
		b = appendString(b, 2, sc.Version)
		b = appendKeyValues(b, 3, sc.Attributes)
		b = appendVarint(b, 4, uint64(sc.DroppedAttributesCount))
		b = end(b, s)
	}
	for _, sp := range ss.Spans {
		var s int
		b, s = begin(b, 2)
		b = appendSpan(b, sp)
		b = end(b, s)
	}
	return appendString(b, 3, ss.SchemaUrl)
}

func appendSpan(b []byte, sp *tracepb.Span) []byte {
	if sp == nil {
		return b
	}
	b = appendBytes(b, 1, sp.TraceId)
	b = appendBytes(b, 2, sp.SpanId)
	b = appendString(b, 3, sp.TraceState)
	b = appendBytes(b, 4, sp.ParentSpanId)
	b = appendString(b, 5, sp.Name)
	b = appendVarint(b, 6, uint64(int64(sp.Kind)))
	b = appendFixed64(b, 7, sp.StartTimeUnixNano)
	b = appendFixed64(b, 8, sp.EndTimeUnixNano)
	b = appendKeyValues(b, 9, sp.Attributes)
	b = appendVarint(b, 10, uint64(sp.DroppedAttributesCount))
	for _, e := range sp.Events {
		if e == nil {
			continue
		}
		var s int
		b, s = begin(b, 11)
		b = appendFixed64(b, 1, e.TimeUnixNano)
		b = appendString(b, 2, e.Name)
		b = appendKeyValues(b, 3, e.Attributes)
		b = appendVarint(b, 4, uint64(e.DroppedAttributesCount))
		b = end(b, s)
	}
	b = appendVarint(b, 12, uint64(sp.DroppedEventsCount))
	for _, l := range sp.Links {
		if l == nil {
			continue
		}
		var s int
		b, s = begin(b, 13)
		b = appendBytes(b, 1, l.TraceId)
		b = appendBytes(b, 2, l.SpanId)
		b = appendString(b, 3, l.TraceState)
		b = appendKeyValues(b, 4, l.Attributes)
		b = appendVarint(b, 5, uint64(l.DroppedAttributesCount))
		b = appendFixed32(b, 6, l.Flags)
		b = end(b, s)
	}
	b = appendVarint(b, 14, uint64(sp.DroppedLinksCount))
	if st := sp.Status; st != nil {
		var s int
		b, s = begin(b, 15)
		b = appendString(b, 2, st.Message)
		b = appendVarint(b, 3, uint64(int64(st.Code)))
		b = end(b, s)
	}
	return appendFixed32(b, 16, sp.Flags)
}

func appendKeyValues(b []byte, num protowire.Number, kvs []*commonpb.KeyValue) []byte {
	for _, kv := range kvs {
		var s int
		b, s = begin(b, num)
		b = appendKeyValue(b, kv)
		b = end(b, s)
	}
	return b
}

func appendKeyValue(b []byte, kv *commonpb.KeyValue) []byte {
	if kv == nil {
		return b
	}
	b = appendString(b, 1, kv.Key)
	if kv.Value != nil {
		var s int
		b, s = begin(b, 2)
		b = appendAnyValue(b, kv.Value)
		b = end(b, s)
	}
	return appendInt32(b, 3, kv.KeyStrindex)
}

// appendAnyValue writes v's oneof member, also when it holds its type's
// zero value (a oneof member set is always written).
func appendAnyValue(b []byte, v *commonpb.AnyValue) []byte {
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		b = protowire.AppendString(protowire.AppendTag(b, 1, protowire.BytesType), x.StringValue)
	case *commonpb.AnyValue_BoolValue:
		b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), protowire.EncodeBool(x.BoolValue))
	case *commonpb.AnyValue_IntValue:
		b = protowire.AppendVarint(protowire.AppendTag(b, 3, protowire.VarintType), uint64(x.IntValue))
	case *commonpb.AnyValue_DoubleValue:
		b = protowire.AppendFixed64(protowire.AppendTag(b, 4, protowire.Fixed64Type), math.Float64bits(x.DoubleValue))
	case *commonpb.AnyValue_ArrayValue:
		var s int
		b, s = begin(b, 5)
		if x.ArrayValue != nil {
			for _, e := range x.ArrayValue.Values {
				var s int
				b, s = begin(b, 1)
				if e != nil {
					b = appendAnyValue(b, e)
				}
				b = end(b, s)
			}
		}
		b = end(b, s)
	case *commonpb.AnyValue_KvlistValue:
		var s int
		b, s = begin(b, 6)
		if x.KvlistValue != nil {
			b = appendKeyValues(b, 1, x.KvlistValue.Values)
		}
		b = end(b, s)
	case *commonpb.AnyValue_BytesValue:
		b = protowire.AppendBytes(protowire.AppendTag(b, 7, protowire.BytesType), x.BytesValue)
	case *commonpb.AnyValue_StringValueStrindex:
		b = protowire.AppendVarint(protowire.AppendTag(b, 8, protowire.VarintType), uint64(int64(x.StringValueStrindex)))
	}
	return b
}
