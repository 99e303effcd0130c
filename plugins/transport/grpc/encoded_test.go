package grpctransport

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
)

func produceBytes(t testing.TB, req *ferryv1.ProduceRequest) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sampleProduce() *ferryv1.ProduceRequest {
	return &ferryv1.ProduceRequest{Seq: 7, TimeoutNanos: 5e9, Messages: []*ferryv1.Message{
		{Id: "a-1", Topic: "orders", Key: "k", Headers: map[string]string{"h": "v", "x": ""}, Body: bytes.Repeat([]byte("b"), 100), BornUnixNano: 12},
		{Topic: "orders", Queue: 3, Body: []byte("second")},
		{Topic: "orders"},
	}}
}

// TestEncodedProduceForwardsTheSameRequest: a request encodedProduce keeps
// encoded reaches the core, after the SDK encodes it (vtprotobuf, unknown
// fields last), as the same request the full decode makes.
func TestEncodedProduceForwardsTheSameRequest(t *testing.T) {
	want := sampleProduce()
	b := produceBytes(t, want)
	var req ferryv1.ProduceRequest
	if !encodedProduce(b, 1<<20, false, &req) {
		t.Fatal("a plain request was not kept encoded")
	}
	if req.Seq != 7 || req.TimeoutNanos != 5e9 || len(req.Messages) != 0 {
		t.Fatalf("seq %d timeout %d messages %d, want 7, 5e9 and none decoded", req.Seq, req.TimeoutNanos, len(req.Messages))
	}
	frame := &ferryv1.TransportFrame{Id: 9, Request: &ferryv1.TransportFrame_Produce{Produce: &req}}
	wire, err := frame.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	var got ferryv1.TransportFrame
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetProduce(), want) {
		t.Fatalf("the core gets\n%v\nwant\n%v", got.GetProduce(), want)
	}
	// The negative control: without the unknown fields nothing of the
	// messages would reach the core.
	req.ProtoReflect().SetUnknown(nil)
	wire, _ = frame.MarshalVT()
	got.Reset()
	_ = proto.Unmarshal(wire, &got)
	if proto.Equal(got.GetProduce(), want) {
		t.Fatal("control: a request without its unknown fields still arrived whole")
	}
}

// TestEncodedProduceLeavesToTheDecoder: what the transport must refuse or
// look at closer is not kept encoded, so the full decode and checkSizes
// answer it as before.
func TestEncodedProduceLeavesToTheDecoder(t *testing.T) {
	bad := func(mut func(*ferryv1.ProduceRequest)) []byte {
		r := sampleProduce()
		mut(r)
		return produceBytes(t, r)
	}
	invalid := func(placeholder string, mut func(*ferryv1.ProduceRequest)) []byte {
		b := bad(mut)
		i := bytes.Index(b, []byte(placeholder))
		if i < 0 {
			t.Fatalf("no %q", placeholder)
		}
		b = bytes.Clone(b)
		copy(b[i:], bytes.Repeat([]byte{0xff}, len(placeholder)))
		return b
	}
	cases := map[string][]byte{
		"traced index":    bad(func(r *ferryv1.ProduceRequest) { r.TracedIndex = []uint32{0} }),
		"traced span":     bad(func(r *ferryv1.ProduceRequest) { r.TracedSpan = []uint64{1} }),
		"body over limit": bad(func(r *ferryv1.ProduceRequest) { r.Messages[1].Body = make([]byte, 1001) }),
		"headers over limit": bad(func(r *ferryv1.ProduceRequest) {
			r.Messages[2].Headers = map[string]string{"k": string(make([]byte, 1000))}
		}),
		"id not UTF-8":     invalid("IDID", func(r *ferryv1.ProduceRequest) { r.Messages[0].Id = "IDID" }),
		"key not UTF-8":    invalid("KEYK", func(r *ferryv1.ProduceRequest) { r.Messages[0].Key = "KEYK" }),
		"topic not UTF-8":  invalid("TOPT", func(r *ferryv1.ProduceRequest) { r.Messages[2].Topic = "TOPT" }),
		"header not UTF-8": invalid("HDRV", func(r *ferryv1.ProduceRequest) { r.Messages[0].Headers["h"] = "HDRV" }),
		"header key":       invalid("HDRK", func(r *ferryv1.ProduceRequest) { r.Messages[0].Headers["HDRK"] = "" }),
		"unknown field":    append(produceBytes(t, sampleProduce()), 0xf8, 0x01, 0x01), // field 31, varint 1
		"truncated":        produceBytes(t, sampleProduce())[:20],
	}
	for name, b := range cases {
		var req ferryv1.ProduceRequest
		if encodedProduce(b, 1000, false, &req) {
			t.Errorf("%s: kept encoded", name)
		}
		if req.Seq != 0 || len(req.ProtoReflect().GetUnknown()) != 0 {
			t.Errorf("%s: request changed although refused", name)
		}
	}
	// The control: the same limit passes the sample itself.
	var req ferryv1.ProduceRequest
	if !encodedProduce(produceBytes(t, sampleProduce()), 1000, false, &req) {
		t.Fatal("control: the sample within the limit was refused")
	}
}

// FuzzEncodedProduce: whatever encodedProduce keeps encoded, the full
// decoder reads without error and checkSizes passes, and the request the
// core gets is the one the full decode makes.
func FuzzEncodedProduce(f *testing.F) {
	f.Add(produceBytes(f, sampleProduce()))
	f.Add(produceBytes(f, &ferryv1.ProduceRequest{}))
	f.Add(produceBytes(f, &ferryv1.ProduceRequest{Messages: []*ferryv1.Message{{Headers: map[string]string{"": ""}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req ferryv1.ProduceRequest
		if !encodedProduce(b, 200, false, &req) {
			return
		}
		var full ferryv1.ProduceRequest
		if err := proto.Unmarshal(b, &full); err != nil {
			t.Fatalf("kept encoded, but the decoder refuses it: %v", err)
		}
		bs := &brokerServer{maxMessageBytes: 200}
		if err := bs.checkSizes(&full); err != nil {
			t.Fatalf("kept encoded, but checkSizes refuses it: %v", err)
		}
		if len(full.TracedIndex)+len(full.TracedSpan) > 0 || len(full.ProtoReflect().GetUnknown()) > 0 {
			t.Fatal("kept encoded with traced or unknown fields")
		}
		wire, err := req.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		var got ferryv1.ProduceRequest
		if err := proto.Unmarshal(wire, &got); err != nil || !proto.Equal(&got, &full) {
			t.Fatalf("the core would get %v (%v), want %v", &got, err, &full)
		}
	})
}

const (
	unsampledTP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	sampledTP   = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

// tracedProduce is sampleProduce with traceparents tps ("" for none).
func tracedProduce(t testing.TB, tps ...string) []byte {
	r := sampleProduce()
	r.Messages = r.Messages[:len(tps)]
	for i, m := range r.Messages {
		if m.Id == "" {
			m.Id = fmt.Sprint("m-", i)
		}
		if tps[i] == "" {
			continue
		}
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers["traceparent"] = tps[i]
	}
	return produceBytes(t, r)
}

// TestEncodedProduceWhileTracing: with tracing on, a request stays encoded
// whatever its messages' traceparents say (sampled, unsampled, none at all:
// a message without a trace is traced by no hop, so nothing reads it), and
// its sampled messages are named in TracedIndex; only a sampled message
// sent alone is decoded (its span reads it). The control: without tracing
// the sampled message alone stays encoded too.
func TestEncodedProduceWhileTracing(t *testing.T) {
	for name, c := range map[string]struct {
		b       []byte
		sampled []uint32
	}{
		"all unsampled":   {tracedProduce(t, unsampledTP, unsampledTP, unsampledTP), nil},
		"one sampled":     {tracedProduce(t, unsampledTP, sampledTP, unsampledTP), []uint32{1}},
		"two sampled":     {tracedProduce(t, sampledTP, unsampledTP, sampledTP), []uint32{0, 2}},
		"unsampled alone": {tracedProduce(t, unsampledTP), nil},
		"one without":     {tracedProduce(t, unsampledTP, sampledTP, ""), []uint32{1}},
		"one malformed":   {tracedProduce(t, unsampledTP, "00-xyz", unsampledTP), nil},
		"none at all":     {tracedProduce(t, "", "", ""), nil},
		"none alone":      {tracedProduce(t, ""), nil},
	} {
		var req ferryv1.ProduceRequest
		if !encodedProduce(c.b, 1<<20, true, &req) {
			t.Errorf("%s: decoded", name)
			continue
		}
		if len(req.Messages) != 0 || !slices.Equal(req.TracedIndex, c.sampled) {
			t.Errorf("%s: %d messages decoded, sampled %v; want none, %v", name, len(req.Messages), req.TracedIndex, c.sampled)
		}
	}
	b := tracedProduce(t, sampledTP)
	var req ferryv1.ProduceRequest
	if encodedProduce(b, 1<<20, true, &req) {
		t.Errorf("sampled alone: kept encoded while tracing")
	}
	if !encodedProduce(b, 1<<20, false, &req) {
		t.Errorf("sampled alone: refused without tracing")
	}
}

// spanCore is a broker core that keeps the produce request it got.
type spanCore struct {
	sdk.Core
	got *ferryv1.ProduceRequest
}

func (c *spanCore) Produce(_ context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	c.got = proto.Clone(req).(*ferryv1.ProduceRequest)
	return &ferryv1.ProduceResponse{}, nil
}

// TestEncodedProduceSpansItsSampledMessages: a batch kept encoded with
// sampled messages in it gets the same transport.receive spans as the same
// batch decoded (a span in each sampled message's trace, a child of its
// traceparent, and a batch span), and goes on to the core still encoded,
// naming its sampled messages and their new spans. The control: the
// decoded batch, whose spans the encoded one must match.
func TestEncodedProduceSpansItsSampledMessages(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer telemetry.UseSpanProcessor(rec)()
	const (
		tpA = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		tpB = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
	)
	b := tracedProduce(t, unsampledTP, tpA, tpB)
	type hop struct{ trace, parent, id string }
	spans := func(decode bool) (got []hop, core *ferryv1.ProduceRequest) {
		t.Helper()
		var req ferryv1.ProduceRequest
		if decode {
			if err := proto.Unmarshal(b, &req); err != nil {
				t.Fatal(err)
			}
		} else if !encodedProduce(b, 1<<20, true, &req) {
			t.Fatal("decoded")
		}
		c := &spanCore{}
		before := len(rec.Ended())
		(&brokerServer{core: c, maxMessageBytes: 1 << 20}).produce(context.Background(), &req)
		for _, s := range rec.Ended()[before:] {
			if s.Name() != telemetry.SpanTransportReceive {
				continue
			}
			h := hop{trace: "batch"} // a new trace's root, its id random
			for _, kv := range s.Attributes() {
				if kv.Key == telemetry.AttrMessageID {
					h.id = kv.Value.AsString()
				}
			}
			if h.id != "" {
				h.trace, h.parent = s.SpanContext().TraceID().String(), s.Parent().SpanID().String()
			}
			got = append(got, h)
		}
		slices.SortFunc(got, func(a, b hop) int { return strings.Compare(a.trace, b.trace) })
		return got, c.got
	}
	decoded, _ := spans(true)
	encoded, core := spans(false)
	want := []hop{
		{trace: "0af7651916cd43dd8448eb211c80319c", parent: "b7ad6b7169203331", id: "m-1"},
		{trace: "1bf7651916cd43dd8448eb211c80319c", parent: "c7ad6b7169203331", id: "m-2"},
		{trace: "batch"},
	}
	if !slices.Equal(decoded, want) {
		t.Fatalf("transport.receive spans of the decoded batch (the control) %v; want %v", decoded, want)
	}
	if !slices.Equal(encoded, want) {
		t.Fatalf("transport.receive spans of the batch kept encoded %v; want %v", encoded, want)
	}
	if len(core.Messages) != 0 || !bytes.Equal(core.ProtoReflect().GetUnknown(), b) {
		t.Fatalf("the core got %d decoded messages, unknown fields equal to the client's: %v; want the request still encoded", len(core.Messages), bytes.Equal(core.ProtoReflect().GetUnknown(), b))
	}
	if !slices.Equal(core.TracedIndex, []uint32{1, 2}) || len(core.TracedSpan) != 2 {
		t.Fatalf("the core got traced index %v, spans %v; want [1 2] and two spans", core.TracedIndex, core.TracedSpan)
	}
}

// FuzzEncodedProduceTraced: whatever encodedProduce keeps encoded while
// tracing, sampledMessages gives a batch as long as the full decode's, with
// the first message and each one named sampled (each with a sampled
// traceparent) decoded as the full decode has them, and nothing else.
func FuzzEncodedProduceTraced(f *testing.F) {
	f.Add(tracedProduce(f, unsampledTP, sampledTP, unsampledTP))
	f.Add(tracedProduce(f, sampledTP, sampledTP, sampledTP))
	f.Add(tracedProduce(f, unsampledTP, unsampledTP))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req ferryv1.ProduceRequest
		if !encodedProduce(b, 1<<20, true, &req) {
			return
		}
		var full ferryv1.ProduceRequest
		if err := proto.Unmarshal(b, &full); err != nil {
			t.Fatalf("kept encoded, but the decoder refuses it: %v", err)
		}
		if len(req.TracedIndex) == 0 {
			return // no sampled message: no hop decodes any
		}
		msgs := sampledMessages(&req, req.TracedIndex)
		if len(msgs) != len(full.Messages) {
			t.Fatalf("%d messages for the hop, the decoder has %d", len(msgs), len(full.Messages))
		}
		sampled := map[int]bool{0: true}
		for _, i := range req.TracedIndex {
			sampled[int(i)] = true
			if !telemetry.SampledTraceparent(full.Messages[i].Headers["traceparent"]) {
				t.Fatalf("message %d named sampled: traceparent %q", i, full.Messages[i].Headers["traceparent"])
			}
		}
		for i, m := range msgs {
			if sampled[i] != (m != nil) || (m != nil && !proto.Equal(m, full.Messages[i])) {
				t.Fatalf("message %d for the hop: %v; decoded: %v (sampled or first: %v)", i, m, full.Messages[i], sampled[i])
			}
		}
	})
}
