package sdk

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

func TestRawReplicateRequestThroughCodec(t *testing.T) {
	req := &ferryv1.ReplicateRequest{Seq: 7, TimeoutNanos: 99, Trace: map[string]string{"traceparent": "x"}, Messages: []*ferryv1.Message{
		{Id: "a", Topic: "orders", Queue: 2, Offset: 40, Body: []byte("hello"), Headers: map[string]string{"k": "v"}},
		{Id: "b", Topic: "orders", Queue: 3, Offset: 0, Body: []byte("x")},
	}}
	data, err := codec{}.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	raw := &rawReplicateRequest{}
	if err := (codec{}).Unmarshal(data, raw); err != nil {
		t.Fatal(err)
	}
	if raw.seq != 7 || raw.timeout != 99 || raw.trace["traceparent"] != "x" || len(raw.msgs) != 2 {
		t.Fatalf("got %+v", raw)
	}
	m := raw.msgs[0]
	if m.Topic != "orders" || m.Queue != 2 || m.Offset != 40 || m.GetHeaders()["k"] != "v" {
		t.Fatalf("got %+v", m)
	}
	if raw.msgs[1].Queue != 3 || raw.msgs[1].Offset != 0 || raw.msgs[1].GetHeaders() != nil {
		t.Fatalf("got %+v", raw.msgs[1])
	}
	d, err := m.Decode()
	if err != nil || !proto.Equal(d, req.Messages[0]) {
		t.Fatalf("decode: %v %v", d, err)
	}
	// A raw frame goes out as its bytes.
	apply := AppendRawMessages(nil, 1, raw.msgs)
	out, err := codec{}.Marshal(&RawFrame{B: apply})
	if err != nil {
		t.Fatal(err)
	}
	var ar ferryv1.ApplyRequest
	if err := proto.Unmarshal(out.Materialize(), &ar); err != nil || len(ar.Messages) != 2 || !proto.Equal(ar.Messages[1], req.Messages[1]) {
		t.Fatalf("apply: %v %v", &ar, err)
	}
	var f RawFrame
	if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(apply)}, &f); err != nil || string(f.B) != string(apply) {
		t.Fatalf("raw frame unmarshal: %v", err)
	}
}

// The replication plugins reuse a sent frame's buffer when the codec copied
// it (SentFrameReusable); a frame the codec keeps must not be reported so.
func TestRawFrameCopiedByCodec(t *testing.T) {
	for _, n := range []int{10, 1 << 10, 1<<10 + 1, 64 << 10} {
		b := make([]byte, n)
		out, err := codec{}.Marshal(&RawFrame{B: b})
		if err != nil {
			t.Fatal(err)
		}
		b[0] = 1 // changed after the send
		got := out.Materialize()
		if copied := got[0] == 0; SentFrameReusable(n) && !copied {
			t.Fatalf("%d bytes: reported reusable but the codec kept the caller's buffer", n)
		}
	}
}
