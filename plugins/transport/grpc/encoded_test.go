package grpctransport

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
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

// TestEncodedProduceWhileTracing: with tracing on, only a request whose
// every message carries an unsampled traceparent stays encoded.
func TestEncodedProduceWhileTracing(t *testing.T) {
	const unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	const sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	with := func(tps ...string) []byte {
		r := sampleProduce()
		for i, m := range r.Messages {
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
	var req ferryv1.ProduceRequest
	if !encodedProduce(with(unsampled, unsampled, unsampled), 1<<20, true, &req) {
		t.Fatal("all unsampled: decoded")
	}
	for name, b := range map[string][]byte{
		"one sampled":   with(unsampled, sampled, unsampled),
		"one without":   with(unsampled, unsampled, ""),
		"one malformed": with(unsampled, "00-xyz", unsampled),
		"none at all":   with("", "", ""),
	} {
		var req ferryv1.ProduceRequest
		if encodedProduce(b, 1<<20, true, &req) {
			t.Errorf("%s: kept encoded while tracing", name)
		}
		// The control: without tracing the same request stays encoded.
		if !encodedProduce(b, 1<<20, false, &req) {
			t.Errorf("%s: refused without tracing", name)
		}
	}
}
