package sdk

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
)

// wireSample is a batch as a transport forwards it: each message as the
// client encoded it (no queue chosen by the broker yet for some, no born
// time for others), and the decoded messages after the broker set those.
func wireSample(r *rand.Rand, n int) (msgs []*ferryv1.Message, wires MessageWires) {
	for i := range n {
		m := &ferryv1.Message{
			Id:    fmt.Sprintf("id-%d-ü", i),
			Topic: "orders",
			Queue: int32(r.IntN(3)) - 1, // -1 too: an int32's varint is 10 bytes
			Body:  bytes.Repeat([]byte{byte(i)}, r.IntN(2000)),
		}
		if r.IntN(2) == 0 {
			m.Key = "k"
			m.Headers = map[string]string{"h": "v", "é": "ß"}
		}
		if r.IntN(2) == 0 {
			m.BornUnixNano = r.Int64()
		}
		w, err := m.MarshalVT()
		if err != nil {
			panic(err)
		}
		// What the broker sets after decoding.
		m.Queue = int32(r.IntN(8))
		if m.BornUnixNano == 0 {
			m.BornUnixNano = 1_700_000_000_000_000_000 + int64(i)
		}
		msgs = append(msgs, m)
		if r.IntN(4) == 0 {
			w = nil // a message without its wire form (made by the broker)
		}
		wires = append(wires, w)
	}
	return msgs, wires
}

// TestAppendFrameDecodesAsEncoded: an append frame written from the
// messages' wire forms (with the broker's queue and born time after them)
// decodes, by protobuf-go, to exactly the request encoding the decoded
// messages makes.
func TestAppendFrameDecodesAsEncoded(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 17, 100} {
		msgs, wires := wireSample(r, n)
		req := &ferryv1.AppendRequest{Seq: 9, Messages: msgs, Trace: map[string]string{"traceparent": "x"}, TimeoutNanos: 5,
			WantWritten: true, TracedIndex: []uint32{1}, TracedSpan: []uint64{2}, LogDurable: true}
		f := appendFrame{req: req, wires: wires}
		size, base := f.size()
		b := make([]byte, size)
		if err := f.put(b, base); err != nil {
			t.Fatalf("%d messages: %v", n, err)
		}
		if len(req.Messages) != n {
			t.Fatalf("put changed the request's messages")
		}
		var got ferryv1.AppendRequest
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatalf("%d messages: the frame does not decode: %v", n, err)
		}
		if !proto.Equal(&got, req) {
			t.Fatalf("%d messages: the frame decodes to\n%v\nwant\n%v", n, &got, req)
		}
	}
}

// TestWriteAppendFrameOverRing: a frame too big for one ring record goes
// out through a buffer and arrives whole.
func TestWriteAppendFrameOverRing(t *testing.T) {
	seg, err := ring.Create(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	host, err := ring.NewConn(seg, ring.Host, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	plugin, err := ring.NewConn(seg, ring.Plugin, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plugin.Close()
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{3, 200} { // in place, then larger than a record
		msgs, wires := wireSample(r, n)
		req := &ferryv1.AppendRequest{Seq: uint64(n), Messages: msgs}
		done := make(chan error, 1)
		go func() { done <- writeAppendFrame(host, appendFrame{req: req, wires: wires}) }()
		kind, id, p, err := plugin.Read()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var got ferryv1.AppendRequest
		if err := proto.Unmarshal(p, &got); err != nil || kind != KindAppend || id != uint64(n) {
			t.Fatalf("kind %d id %d: %v", kind, id, err)
		}
		got.Seq = req.Seq
		if !proto.Equal(&got, req) {
			t.Fatalf("%d messages: the ring carried another request", n)
		}
	}
}

// TestSplitAppend: the store's side reads an append frame's messages in
// their wire form, and the request's other fields as the full decode does.
func TestSplitAppend(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	msgs, _ := wireSample(r, 30)
	req := &ferryv1.AppendRequest{Seq: 9, Messages: msgs, Trace: map[string]string{"a": "b"}, TimeoutNanos: 5,
		WantWritten: true, TracedIndex: []uint32{1}, TracedSpan: []uint64{2}, LogDurable: true}
	p, err := req.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	got, wires, ok, err := splitAppend(p)
	if err != nil || !ok {
		t.Fatalf("ok %v, %v", ok, err)
	}
	if len(got.Messages) != 0 || len(wires) != len(msgs) {
		t.Fatalf("%d decoded, %d in wire form; want 0 and %d", len(got.Messages), len(wires), len(msgs))
	}
	got.Messages = msgs
	if !proto.Equal(got, req) {
		t.Fatalf("the other fields decode to %v, want %v", got, req)
	}
	for i, w := range wires {
		var m ferryv1.Message
		if err := proto.Unmarshal(w.Wire, &m); err != nil || !proto.Equal(&m, msgs[i]) {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(w.Info.ID) != msgs[i].Id || string(w.Info.Topic) != msgs[i].Topic || w.Info.Queue != msgs[i].Queue {
			t.Fatalf("message %d: info %q %q %d, want %q %q %d", i, w.Info.ID, w.Info.Topic, w.Info.Queue, msgs[i].Id, msgs[i].Topic, msgs[i].Queue)
		}
	}

	// A message with a field Message lacks: the frame is decoded in full.
	odd := protowire.AppendTag(nil, appendRequestMessages, protowire.BytesType)
	inner := protowire.AppendTag(nil, 99, protowire.VarintType)
	inner = protowire.AppendVarint(inner, 1)
	odd = protowire.AppendBytes(odd, inner)
	if _, _, ok, err := splitAppend(append(bytes.Clone(p), odd...)); ok || err != nil {
		t.Fatalf("a message with an unknown field: ok %v, %v; want not ok, no error", ok, err)
	}
	// Bytes that are no frame.
	if _, _, _, err := splitAppend([]byte{0x12, 0x05, 1}); err == nil {
		t.Fatal("a truncated frame split without an error")
	}
	if _, _, _, err := splitAppend([]byte{0x10, 0x01}); err == nil { // messages as a varint
		t.Fatal("messages of the wrong wire type split without an error")
	}
}

// FuzzSplitAppend: whatever the bytes, splitAppend does not panic, and what
// it takes in wire form is what the full decode makes of the frame.
func FuzzSplitAppend(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	msgs, _ := wireSample(r, 3)
	p, _ := (&ferryv1.AppendRequest{Seq: 1, Messages: msgs, Trace: map[string]string{"a": "b"}}).MarshalVT()
	f.Add(p)
	f.Add([]byte{0x12, 0x00})
	f.Add([]byte{0x12, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, p []byte) {
		req, wires, ok, err := splitAppend(bytes.Clone(p))
		if err != nil || !ok {
			return
		}
		// The full decode the SDK makes otherwise (vtprotobuf's: it keeps
		// unknown fields' bytes as they are, where protobuf-go rewrites
		// an overlong tag).
		var full ferryv1.AppendRequest
		if err := unmarshalFrame(bytes.Clone(p), &full); err != nil {
			t.Fatalf("split, but the full decode fails: %v", err)
		}
		if len(full.Messages) != len(wires) {
			t.Fatalf("%d messages in wire form, the full decode has %d", len(wires), len(full.Messages))
		}
		for i, w := range wires {
			var m ferryv1.Message
			if err := proto.Unmarshal(w.Wire, &m); err != nil || !proto.Equal(&m, full.Messages[i]) {
				t.Fatalf("message %d differs from the full decode's (%v)", i, err)
			}
			if string(w.Info.ID) != m.Id || string(w.Info.Topic) != m.Topic || w.Info.Queue != m.Queue {
				t.Fatalf("message %d: info %q %q %d, decoded %q %q %d", i, w.Info.ID, w.Info.Topic, w.Info.Queue, m.Id, m.Topic, m.Queue)
			}
		}
		full.Messages = nil
		req.Messages = nil
		if !proto.Equal(req, &full) {
			t.Fatalf("other fields %v, the full decode's %v", req, &full)
		}
	})
}

// TestProduceWires: the core keeps a forwarded produce's messages in their
// wire form, exactly the bytes each decoded from; not when the frame holds
// its request in pieces.
func TestProduceWires(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	msgs, _ := wireSample(r, 5)
	frame := &ferryv1.TransportFrame{Id: 3, TimeoutNanos: 7, Request: &ferryv1.TransportFrame_Produce{Produce: &ferryv1.ProduceRequest{Seq: 1, Messages: msgs}}}
	p, err := frame.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	wires := produceWires(p, len(msgs))
	if len(wires) != len(msgs) {
		t.Fatalf("%d wire forms, want %d", len(wires), len(msgs))
	}
	var decoded ferryv1.TransportFrame
	if err := proto.Unmarshal(p, &decoded); err != nil {
		t.Fatal(err)
	}
	for i, w := range wires {
		var m ferryv1.Message
		if err := proto.Unmarshal(w, &m); err != nil || !proto.Equal(&m, decoded.GetProduce().Messages[i]) {
			t.Fatalf("message %d: wire form is not what it decoded from (%v)", i, err)
		}
		if !bytes.Contains(p, w) {
			t.Fatalf("message %d: wire form is not the frame's bytes", i)
		}
	}
	if produceWires(p, len(msgs)+1) != nil {
		t.Fatal("wire forms for a count that is not the frame's")
	}
	// The produce request twice (a decoder merges the two).
	twice := append(bytes.Clone(p), protowire.AppendBytes(protowire.AppendTag(nil, transportFrameProduce, protowire.BytesType), nil)...)
	if produceWires(twice, len(msgs)) != nil {
		t.Fatal("wire forms for a produce request in two pieces")
	}
	// A message with a field Message lacks keeps it in its wire form, as
	// the decoded message keeps it unknown, and encoding it writes it out:
	// the store gets the same either way.
	odd := &ferryv1.ProduceRequest{Messages: msgs[:1]}
	ob, _ := odd.MarshalVT()
	m := protowire.AppendTag(nil, 99, protowire.VarintType)
	m = protowire.AppendVarint(m, 1)
	ob = protowire.AppendBytes(protowire.AppendTag(ob, produceRequestMessages, protowire.BytesType), m)
	fb := protowire.AppendBytes(protowire.AppendTag(nil, transportFrameProduce, protowire.BytesType), ob)
	ow := produceWires(fb, 2)
	var of ferryv1.TransportFrame
	if err := of.UnmarshalVT(fb); err != nil || len(ow) != 2 {
		t.Fatalf("%d wire forms (%v)", len(ow), err)
	}
	enc, _ := of.GetProduce().Messages[1].MarshalVT()
	if !bytes.Equal(ow[1], enc) {
		t.Fatalf("a message with an unknown field: wire form %x, its encoding after decoding %x", ow[1], enc)
	}
}

// TestMessageWiresOf: wire forms travel only with the messages they are
// of.
func TestMessageWiresOf(t *testing.T) {
	msgs := []*ferryv1.Message{{Id: "a"}, {Id: "b"}}
	wires := MessageWires{[]byte{1}, nil}
	ctx := WithMessageWires(context.Background(), msgs, wires)
	if got := MessageWiresOf(ctx, msgs); len(got) != 2 || got[0][0] != 1 {
		t.Fatalf("got %v", got)
	}
	if MessageWiresOf(ctx, msgs[:1]) != nil {
		t.Fatal("wire forms for fewer messages")
	}
	other := []*ferryv1.Message{msgs[0], {Id: "b"}}
	if MessageWiresOf(ctx, other) != nil {
		t.Fatal("wire forms for other messages of the same length")
	}
	if MessageWiresOf(WithMessageWires(context.Background(), msgs, wires[:1]), msgs) != nil {
		t.Fatal("wire forms of another length were kept")
	}
}

// BenchmarkAppendFrameEncode: writing an append frame of 64 messages of 1
// KiB from their wire forms against encoding the messages (what the core
// did before, and does for messages without one), and the wire forms
// checked against their messages first (checkWires) as the storage client
// does.
//
//	go test -run '^$' -bench AppendFrameEncode -count 5 ./core/sdk/
func BenchmarkAppendFrameEncode(b *testing.B) {
	var msgs []*ferryv1.Message
	var wires MessageWires
	for i := range 64 {
		m := &ferryv1.Message{Id: fmt.Sprintf("producer-7f3a-%d", i), Topic: "orders", Body: make([]byte, 1024), BornUnixNano: 1}
		w, _ := m.MarshalVT()
		m.Queue = 2
		msgs, wires = append(msgs, m), append(wires, w)
	}
	req := &ferryv1.AppendRequest{Seq: 1, Messages: msgs, TimeoutNanos: 5e9, WantWritten: true}
	// As the core has them from the ring: decoded from their wire forms,
	// which their strings and bodies alias.
	var decoded []*ferryv1.Message
	for _, w := range wires {
		m := &ferryv1.Message{}
		if err := m.UnmarshalVTUnsafe(w); err != nil {
			b.Fatal(err)
		}
		m.Queue = 2
		decoded = append(decoded, m)
	}
	buf := make([]byte, 1<<20)
	for _, c := range []struct {
		name  string
		wires MessageWires
		check bool // checkWires first, as StorageClient.send does
	}{{"encoded", make(MessageWires, len(msgs)), false}, {"wire", wires, false}, {"wire-checked", wires, true}} {
		b.Run(c.name, func(b *testing.B) {
			f := appendFrame{req: req, wires: c.wires}
			if c.check {
				f.req = &ferryv1.AppendRequest{Seq: 1, Messages: decoded, TimeoutNanos: 5e9, WantWritten: true}
			}
			b.SetBytes(64 * 1024)
			b.ReportAllocs()
			for b.Loop() {
				if c.check {
					if err := checkWires(f.req.Messages, c.wires); err != nil {
						b.Fatal(err)
					}
				}
				size, base := f.size()
				if err := f.put(buf[:size], base); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*64), "ns/msg")
		})
	}
}

// BenchmarkSplitAppend: the store's side of the ring reading a 64-message
// append frame's wire forms into a fresh slice (as splitAppend), or into
// the slice the previous frame used (as serveStorageRing does).
//
//	go test -run '^$' -bench SplitAppend -benchmem ./core/sdk/
func BenchmarkSplitAppend(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 10))
	msgs, _ := wireSample(r, 64)
	p, err := (&ferryv1.AppendRequest{Seq: 1, Messages: msgs}).MarshalVT()
	if err != nil {
		b.Fatal(err)
	}
	for _, reuse := range []bool{false, true} {
		b.Run(fmt.Sprintf("reuse=%v", reuse), func(b *testing.B) {
			b.ReportAllocs()
			var scratch []WireAppend
			for b.Loop() {
				_, wires, ok, err := splitAppendInto(p, scratch[:0])
				if err != nil || !ok || len(wires) != len(msgs) {
					b.Fatalf("%d wire forms, ok %v, %v", len(wires), ok, err)
				}
				if reuse {
					clear(wires)
					scratch = wires
				}
			}
		})
	}
}

// TestCheckWires: each message's own wire form passes, whatever queue and
// born time the core set after it; a wire form of another message (another
// id or topic; without ids, another body) fails, naming the message.
func TestCheckWires(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	msgs, wires := wireSample(r, 12)
	if err := checkWires(msgs, wires); err != nil {
		t.Fatal(err)
	}
	if err := checkWires(msgs, make(MessageWires, len(msgs))); err != nil {
		t.Fatalf("no wire forms: %v", err)
	}
	other := func(f func(m *ferryv1.Message)) []byte {
		m := proto.Clone(msgs[3]).(*ferryv1.Message)
		f(m)
		w, err := m.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	for _, c := range []struct {
		name string
		w    []byte
	}{
		{"another id", other(func(m *ferryv1.Message) { m.Id += "x" })},
		{"another topic", other(func(m *ferryv1.Message) { m.Topic = "payments" })},
		{"no id", other(func(m *ferryv1.Message) { m.Id = "" })},
		{"cut short", other(func(*ferryv1.Message) {})[:5]},
	} {
		bad := append(MessageWires(nil), wires...)
		bad[3] = c.w
		err := checkWires(msgs, bad)
		if err == nil || !strings.Contains(err.Error(), "message 3 of 12") {
			t.Errorf("%s: %v, want an error naming message 3", c.name, err)
		}
	}
	// A message without an id: its body tells.
	anon := []*ferryv1.Message{{Topic: "t", Body: []byte("a")}}
	for body, ok := range map[string]bool{"a": true, "b": false, "": false} {
		w, err := (&ferryv1.Message{Topic: "t", Body: []byte(body)}).MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		if err := checkWires(anon, MessageWires{w}); (err == nil) != ok {
			t.Errorf("no id, body %q against %q: %v", body, "a", err)
		}
	}
	// Two messages' wire forms swapped.
	bad := append(MessageWires(nil), wires...)
	for i := range bad {
		if bad[i] != nil && bad[i+1] != nil && msgs[i].Id != msgs[i+1].Id {
			bad[i], bad[i+1] = bad[i+1], bad[i]
			break
		}
	}
	if checkWires(msgs, bad) == nil {
		t.Error("swapped wire forms passed")
	}
}
