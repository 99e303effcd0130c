package sdk

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// gRPC hands the codec pooled buffers and reuses them once Unmarshal
// returns: what the codec decoded must not change when they are
// overwritten, whether the message came in one buffer or several.
func TestCodecUnmarshalOwnsItsBytes(t *testing.T) {
	for _, m := range sampleFrames() {
		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, pieces := range []int{1, 3} {
			var data mem.BufferSlice
			step := (len(wire) + pieces - 1) / pieces
			for i := 0; i < len(wire); i += step {
				data = append(data, mem.SliceBuffer(bytes.Clone(wire[i:min(i+step, len(wire))])))
			}
			got := m.ProtoReflect().New().Interface()
			if err := (codec{}).Unmarshal(data, got); err != nil {
				t.Fatalf("%T in %d buffers: %v", m, pieces, err)
			}
			for _, b := range data {
				clear(b.ReadOnlyData()) // the pool's next user
			}
			if !proto.Equal(m, got) {
				t.Errorf("%T in %d buffers: changed when gRPC's buffers were reused", m, pieces)
			}
		}
	}
}

// Decoded bodies alias one copy of the request, so each is capped at its
// length: appending to one must not write over the next message.
func TestCodecBodiesAreCapped(t *testing.T) {
	req := &ferryv1.ProduceRequest{Messages: []*ferryv1.Message{{Id: "a", Body: []byte("first")}, {Id: "b", Body: []byte("second")}}}
	wire, _ := proto.Marshal(req)
	got := &ferryv1.ProduceRequest{}
	if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
		t.Fatal(err)
	}
	for _, m := range got.Messages {
		if cap(m.Body) != len(m.Body) {
			t.Errorf("message %s: body cap %d, len %d", m.Id, cap(m.Body), len(m.Body))
		}
	}
	_ = append(got.Messages[0].Body, "XXXXXXXXXXXXXXXX"...)
	if string(got.Messages[1].Body) != "second" || got.Messages[1].Id != "b" {
		t.Errorf("appending to the first body changed the second message: %q %q", got.Messages[1].Id, got.Messages[1].Body)
	}
}

// A string that is not UTF-8 is an error the grpc transport recognizes
// (InvalidUTF8), as protobuf-go's was.
func TestCodecRefusesInvalidUTF8(t *testing.T) {
	req := &ferryv1.ProduceRequest{Messages: []*ferryv1.Message{{Id: "ok", Key: "k"}}}
	wire, _ := proto.Marshal(req)
	i := bytes.Index(wire, []byte("ok"))
	wire[i] = 0xff
	err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &ferryv1.ProduceRequest{})
	var bad interface{ InvalidUTF8() bool }
	if err == nil || !errors.As(err, &bad) || !bad.InvalidUTF8() {
		t.Fatalf("bad id decoded with %v, want an InvalidUTF8 error", err)
	}
	wire[i] = 'o' // control: the same bytes, valid, decode
	if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &ferryv1.ProduceRequest{}); err != nil {
		t.Fatalf("valid request: %v", err)
	}
}
