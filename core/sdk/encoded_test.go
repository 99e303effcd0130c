package sdk

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

func sampleFetch() *ferryv1.FetchResponse {
	return &ferryv1.FetchResponse{
		Messages: []*ferryv1.Message{
			{Id: "a", Topic: "t", Queue: 1, Offset: 5, Headers: map[string]string{"h": "v"}, Body: bytes.Repeat([]byte("x"), 300)},
			{Id: "b", Topic: "t", Queue: 1, Offset: 6},
		},
		Offsets: []*ferryv1.QueueOffsets{{Queue: 1, Start: 0, End: 7}},
		Errors:  []*ferryv1.QueueError{{Queue: 2, Offset: 3, Error: &ferryv1.Error{Code: "UNAVAILABLE", Message: "m"}}},
	}
}

func frameBytes(t *testing.T, f *ferryv1.CoreFrame) []byte {
	t.Helper()
	b, err := f.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFetchAnswersStayEncoded: a fetch answer read off the ring stays in its
// wire form until Fetch decodes it, to the same answer the full decode
// makes; FetchEncoded's answer, encoded again, is the core's bytes.
func TestFetchAnswersStayEncoded(t *testing.T) {
	want := sampleFetch()
	wire := frameBytes(t, &ferryv1.CoreFrame{Id: 42, Response: &ferryv1.CoreFrame_Fetch{Fetch: want}})
	var f ferryv1.CoreFrame
	if err := decodeCoreFrame(bytes.Clone(wire), &f); err != nil {
		t.Fatal(err)
	}
	if f.Id != 42 {
		t.Fatalf("id %d, want 42", f.Id)
	}
	raw, ok := encodedOnly(f.GetFetch())
	if !ok {
		t.Fatal("the fetch answer was decoded")
	}
	full, err := decodedFetch(f.GetFetch())
	if err != nil || !proto.Equal(full, want) {
		t.Fatalf("Fetch gets %v (%v), want %v", full, err, want)
	}
	again, err := f.GetFetch().MarshalVT()
	if err != nil || !bytes.Equal(again, raw) {
		t.Fatalf("encoded again: %d bytes (%v), want the core's %d", len(again), err, len(raw))
	}
	var client ferryv1.FetchResponse
	if err := proto.Unmarshal(again, &client); err != nil || !proto.Equal(&client, want) {
		t.Fatalf("the client gets %v (%v), want %v", &client, err, want)
	}
	// The control: a decoded answer is not taken for an encoded one.
	if _, ok := encodedOnly(want); ok {
		t.Fatal("control: a decoded answer counts as encoded")
	}
}

// TestCoreFramesDecodeAsBefore: every frame other than a bare fetch answer
// decodes in full, as unmarshalFrame does, and a traced fetch answer is
// decoded for FetchEncoded's caller.
func TestCoreFramesDecodeAsBefore(t *testing.T) {
	for name, in := range map[string]*ferryv1.CoreFrame{
		"produce":      {Id: 1, Response: &ferryv1.CoreFrame_Produce{Produce: &ferryv1.ProduceResponse{Seq: 3, Offsets: []int64{4}, Status: ferryv1.Status_STATUS_OK}}},
		"error":        {Id: 2, Error: &ferryv1.Error{Code: "NOT_FOUND", Message: "no topic"}},
		"fetch+error":  {Id: 3, Response: &ferryv1.CoreFrame_Fetch{Fetch: sampleFetch()}, Error: &ferryv1.Error{Code: "X"}},
		"empty fetch":  {Id: 4, Response: &ferryv1.CoreFrame_Fetch{Fetch: &ferryv1.FetchResponse{}}},
		"get_offsets":  {Id: 5, Response: &ferryv1.CoreFrame_GetOffsets{GetOffsets: &ferryv1.GetOffsetsResponse{}}},
		"no id at all": {Response: &ferryv1.CoreFrame_Fetch{Fetch: sampleFetch()}},
	} {
		var got ferryv1.CoreFrame
		if err := decodeCoreFrame(frameBytes(t, in), &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fetch := got.GetFetch(); fetch != nil {
			full, err := decodedFetch(fetch)
			if err != nil {
				t.Fatal(err)
			}
			got.Response = &ferryv1.CoreFrame_Fetch{Fetch: full}
		}
		if !proto.Equal(&got, in) {
			t.Errorf("%s: got %v, want %v", name, &got, in)
		}
	}

	traced := sampleFetch()
	traced.TracedIndex, traced.TracedSpan = []uint32{1}, []uint64{99}
	var f ferryv1.CoreFrame
	if err := decodeCoreFrame(frameBytes(t, &ferryv1.CoreFrame{Id: 7, Response: &ferryv1.CoreFrame_Fetch{Fetch: traced}}), &f); err != nil {
		t.Fatal(err)
	}
	raw, _ := encodedOnly(f.GetFetch())
	if fieldsAbsent(raw, fetchTracedIndex, fetchTracedSpan) {
		t.Fatal("a traced answer's traced fields were not seen")
	}
	if !fieldsAbsent(frameBytes(t, &ferryv1.CoreFrame{}), fetchTracedIndex) {
		t.Fatal("control: an empty frame has traced fields")
	}
}

// TestFetchAnswerMalformed: a fetch answer that does not decode fails the
// call that waits for it with an error naming it, not the data plane.
func TestFetchAnswerMalformed(t *testing.T) {
	wire := frameBytes(t, &ferryv1.CoreFrame{Id: 1, Response: &ferryv1.CoreFrame_Fetch{Fetch: &ferryv1.FetchResponse{Messages: []*ferryv1.Message{{Id: "ID"}}}}})
	wire = bytes.Replace(wire, []byte("ID"), []byte{0xff, 0xfe}, 1)
	var f ferryv1.CoreFrame
	if err := decodeCoreFrame(wire, &f); err != nil {
		t.Fatal(err)
	}
	if _, err := decodedFetch(f.GetFetch()); err == nil {
		t.Fatal("an answer whose id is not UTF-8 decoded")
	}
}

func sampleRead() *ferryv1.ReadResponse {
	return &ferryv1.ReadResponse{
		Id: 11,
		Messages: []*ferryv1.Message{
			{Id: "m1", Topic: "t", Queue: 2, Offset: 10, Key: "k", Headers: map[string]string{"a": "b"}, Body: []byte("one"), BornUnixNano: 1, StoredUnixNano: 2},
			{Id: "m2", Topic: "t", Queue: 2, Offset: 11, Body: bytes.Repeat([]byte{0}, 2000)},
			{Topic: "t", Queue: 2, Offset: 12},
		},
		Offsets:     &ferryv1.QueueOffsets{Queue: 2, Start: 0, End: 13},
		TracedIndex: []uint32{1},
		TracedSpan:  []uint64{5},
	}
}

// scatteredRead is the wire form of r with a field between its messages
// (any encoder may order fields so).
func scatteredRead(t *testing.T, r *ferryv1.ReadResponse) []byte {
	t.Helper()
	head, err := (&ferryv1.ReadResponse{Id: r.Id, Messages: r.Messages[:1]}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	tail, err := (&ferryv1.ReadResponse{Messages: r.Messages[1:], Offsets: r.Offsets, TracedIndex: r.TracedIndex, TracedSpan: r.TracedSpan}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	mid, err := (&ferryv1.ReadResponse{Offsets: r.Offsets}).MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	return append(append(head, mid...), tail...)
}

// TestReadAnswersSplit: a read answer off the ring decodes, through
// splitRead and decodedRead, to what unmarshalFrame makes of it, with its
// messages contiguous or not; encodedRead keeps their bytes, counted, and
// retagged as FetchResponse.messages they decode to the same messages.
func TestReadAnswersSplit(t *testing.T) {
	want := sampleRead()
	contiguous, err := want.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	for name, wire := range map[string][]byte{"contiguous": contiguous, "scattered": scatteredRead(t, want)} {
		var full ferryv1.ReadResponse
		if err := unmarshalFrame(bytes.Clone(wire), &full); err != nil {
			t.Fatal(err)
		}
		var r ferryv1.ReadResponse
		if err := splitRead(bytes.Clone(wire), &r); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(r.Messages) != 0 || r.Id != 11 || r.Offsets.GetEnd() != 13 || len(r.TracedIndex) != 1 {
			t.Fatalf("%s: split answer %v", name, &r)
		}
		enc := proto.Clone(&r).(*ferryv1.ReadResponse)
		if err := decodedRead(&r); err != nil || !proto.Equal(&r, &full) {
			t.Fatalf("%s: decoded %v (%v), want %v", name, &r, err, &full)
		}
		msgs, err := encodedRead(enc)
		if err != nil || msgs.N != 3 || len(enc.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("%s: encoded read: %d messages, %v", name, msgs.N, err)
		}
		var fetch ferryv1.FetchResponse
		if err := proto.Unmarshal(msgs.AppendRetagged(nil, 1), &fetch); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&ferryv1.ReadResponse{Messages: fetch.Messages}, &ferryv1.ReadResponse{Messages: want.Messages}) {
			t.Fatalf("%s: retagged messages %v, want %v", name, fetch.Messages, want.Messages)
		}
	}
}

// TestEncodedReadRefusesBadMessages: a message ReadEncoded would forward
// undecoded is checked as the decoder would check it: a string that is not
// UTF-8 fails the read, naming the answer; a field Message lacks (a store
// on a newer message.proto) makes the answer decode, as Read's would, with
// the field kept; the same answer intact passes encoded (the control).
func TestEncodedReadRefusesBadMessages(t *testing.T) {
	good, err := sampleRead().MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	badKey := bytes.Replace(good, []byte("m2"), []byte{0xc3, 0x28}, 1)
	var r ferryv1.ReadResponse
	if err := splitRead(badKey, &r); err != nil {
		t.Fatalf("split: %v", err)
	}
	if _, err := encodedRead(&r); err == nil || !strings.Contains(err.Error(), "read answer does not decode") {
		t.Errorf("id not UTF-8: %v", err)
	}

	extra := sampleRead()
	extra.Messages[1].ProtoReflect().SetUnknown([]byte{0xf8, 0x01, 0x01}) // field 31
	unknown, err := extra.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	r.Reset()
	if err := splitRead(unknown, &r); err != nil {
		t.Fatal(err)
	}
	msgs, err := encodedRead(&r)
	if err != nil || msgs.N != 0 || len(r.Messages) != 3 || !bytes.Equal(r.Messages[1].ProtoReflect().GetUnknown(), []byte{0xf8, 0x01, 0x01}) {
		t.Fatalf("unknown field: %d encoded, %d decoded (%v)", msgs.N, len(r.Messages), err)
	}

	r.Reset()
	if err := splitRead(good, &r); err != nil {
		t.Fatal(err)
	}
	if msgs, err := encodedRead(&r); err != nil || msgs.N != 3 || len(r.Messages) != 0 {
		t.Fatalf("control: %d encoded, %d decoded (%v)", msgs.N, len(r.Messages), err)
	}
	// Malformed answers fail the split itself.
	if err := splitRead(good[:len(good)-3], &ferryv1.ReadResponse{}); err == nil {
		t.Error("a truncated answer split")
	}
}

// FuzzMessageWire: a message MessageWire passes decodes without error, and
// its size is what the decoded message holds.
func FuzzMessageWire(f *testing.F) {
	for _, m := range sampleRead().Messages {
		b, _ := m.MarshalVT()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, ok := MessageWire(b)
		size := info.Size
		if !ok {
			return
		}
		var m ferryv1.Message
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatalf("passed, but the decoder refuses it: %v", err)
		}
		if len(m.ProtoReflect().GetUnknown()) > 0 {
			t.Fatal("passed with unknown fields")
		}
		n := int64(len(m.Body))
		for k, v := range m.Headers {
			n += int64(len(k) + len(v))
		}
		if n > size {
			t.Fatalf("size %d, the message holds %d", size, n)
		}
	})
}

// TestFetchFrameEncodes: a fetch answer with encoded parts, written as the
// ring writes it (fetchFrame.put) or as the gRPC stream sends it
// (fetchFrame.frame), reaches the transport as the answer whose messages
// are the answer's own and then the parts', in order.
func TestFetchFrameEncodes(t *testing.T) {
	read := sampleRead()
	wire, err := read.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	var r ferryv1.ReadResponse
	if err := splitRead(wire, &r); err != nil {
		t.Fatal(err)
	}
	part, err := encodedRead(&r)
	if err != nil {
		t.Fatal(err)
	}
	own := &ferryv1.Message{Id: "own", Topic: "t", Body: []byte("first")}
	resp := &ferryv1.FetchResponse{Messages: []*ferryv1.Message{own}, Offsets: []*ferryv1.QueueOffsets{{Queue: 2, End: 13}}}
	f := &fetchFrame{id: 300, resp: resp, parts: []EncodedMessages{part, part}}
	want := proto.Clone(resp).(*ferryv1.FetchResponse)
	want.Messages = append(want.Messages, read.Messages...)
	want.Messages = append(want.Messages, read.Messages...)

	size, inner := f.size()
	b := make([]byte, size)
	if err := f.put(b, inner); err != nil {
		t.Fatal(err)
	}
	var got ferryv1.CoreFrame
	if err := decodeCoreFrame(b, &got); err != nil {
		t.Fatal(err)
	}
	full, err := decodedFetch(got.GetFetch())
	if err != nil {
		t.Fatal(err)
	}
	if got.Id != 300 || !proto.Equal(full, want) {
		t.Fatalf("ring frame: id %d, %v; want 300, %v", got.Id, full, want)
	}
	sent := f.frame()
	again, err := sent.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	var viaStream ferryv1.CoreFrame
	if err := proto.Unmarshal(again, &viaStream); err != nil || viaStream.Id != 300 || !proto.Equal(viaStream.GetFetch(), want) {
		t.Fatalf("stream frame: %v (%v), want %v", &viaStream, err, want)
	}
	if len(resp.ProtoReflect().GetUnknown()) != 0 {
		t.Fatal("frame() changed the broker's answer")
	}
	// The control: a buffer one byte short is refused, not overrun.
	if err := f.put(make([]byte, size-1), inner); err == nil {
		t.Fatal("control: a short buffer took the frame")
	}
}

// TestCodecSendsEncodedFetchAsIs: the gRPC codec sends a fetch answer
// kept encoded as its own bytes, without copying them; a decoded answer
// (the control) is encoded as usual, to the same bytes.
func TestCodecSendsEncodedFetchAsIs(t *testing.T) {
	raw, err := sampleFetch().MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	out, err := codec{}.Marshal(encodedFetch(raw))
	if err != nil {
		t.Fatal(err)
	}
	b := out.Materialize()
	if len(out) != 1 || !bytes.Equal(b, raw) || &out[0].ReadOnlyData()[0] != &raw[0] {
		t.Fatalf("encoded answer: %d buffers, equal %v, shared %v", len(out), bytes.Equal(b, raw), len(out) == 1 && &out[0].ReadOnlyData()[0] == &raw[0])
	}
	dec, err := codec{}.Marshal(sampleFetch())
	if err != nil {
		t.Fatal(err)
	}
	if d := dec.Materialize(); !bytes.Equal(d, raw) || &dec[0].ReadOnlyData()[0] == &raw[0] {
		t.Fatal("control: a decoded answer was not encoded anew")
	}
}

// TestEncodedReadCountsSampled: encodedRead counts the messages whose
// traceparent is sampled, the last header of the name counting, as in the
// decoded map.
func TestEncodedReadCountsSampled(t *testing.T) {
	r := sampleRead()
	r.Messages[0].Headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r.Messages[1].Headers = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
	wire, err := r.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	var split ferryv1.ReadResponse
	if err := splitRead(wire, &split); err != nil {
		t.Fatal(err)
	}
	msgs, err := encodedRead(&split)
	if err != nil || msgs.Sampled != 1 {
		t.Fatalf("sampled %d (%v), want 1", msgs.Sampled, err)
	}
	info, ok := MessageWire(mustMarshal(t, r.Messages[1]))
	if !ok || info.Trace != TraceUnsampled {
		t.Fatalf("unsampled message: %v %v", info, ok)
	}
	if info, _ := MessageWire(mustMarshal(t, r.Messages[2])); info.Trace != TraceNone {
		t.Fatalf("message without traceparent: %v", info)
	}
}

func mustMarshal(t *testing.T, m *ferryv1.Message) []byte {
	t.Helper()
	b, err := m.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
