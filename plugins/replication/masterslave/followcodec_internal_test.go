package masterslave

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// The slave's follow stream decodes its master's answers except their
// messages, which stay in wire form (the answer's unknown fields) for the
// core: re-read as an ApplyRequest they are the master's messages, and the
// other fields decode as before. A field this build does not know is not
// forwarded.
func TestFollowCodecKeepsMessagesEncoded(t *testing.T) {
	in := &ferryv1.FollowResponse{
		Messages: []*ferryv1.Message{
			{Id: "a", Topic: "orders", Queue: 1, Offset: 7, Body: []byte("x"), Headers: map[string]string{"k": "v"}},
			{Id: "b", Topic: "orders", Queue: 0, Offset: 3, Key: "kb"},
		},
		MasterNode: "master", Epoch: 2, AckedEnds: []*ferryv1.QueueOffsets{{Topic: "orders", Queue: 1, End: 8}},
	}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, 0xa0, 0x3e, 5) // field 1000, varint 5: unknown to this build
	c := followCodec{sdk.GRPCCodec()}
	got := &ferryv1.FollowResponse{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
		t.Fatal(err)
	}
	if len(got.Messages) != 0 || got.MasterNode != "master" || got.Epoch != 2 || len(got.AckedEnds) != 1 {
		t.Fatalf("decoded %v; want no messages and the other fields", got)
	}
	apply := &ferryv1.ApplyRequest{}
	if err := proto.Unmarshal(got.ProtoReflect().GetUnknown(), apply); err != nil {
		t.Fatal(err)
	}
	if len(apply.ProtoReflect().GetUnknown()) != 0 {
		t.Errorf("the unknown field 1000 was forwarded to the core")
	}
	if len(apply.Messages) != len(in.Messages) {
		t.Fatalf("kept %d messages, want %d", len(apply.Messages), len(in.Messages))
	}
	for i, m := range in.Messages {
		if !proto.Equal(apply.Messages[i], m) {
			t.Errorf("message %d: kept %v, want %v", i, apply.Messages[i], m)
		}
	}
	// Other messages of the stream decode as the SDK's codec does.
	req := &ferryv1.FollowRequest{Node: "slave"}
	rb, _ := proto.Marshal(req)
	back := &ferryv1.FollowRequest{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(rb)}, back); err != nil || !proto.Equal(back, req) {
		t.Errorf("a FollowRequest: %v, %v", back, err)
	}
	// A record that is not a Message is forwarded (the core refuses it),
	// but the slave's own reading of its position fails first.
	bad := &ferryv1.FollowResponse{}
	bad.ProtoReflect().SetUnknown(protoreflect.RawFields{0x0a, 0x02, 0x12, 0xff})
	bb, _ := proto.Marshal(bad)
	kept := &ferryv1.FollowResponse{}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(bb)}, kept); err != nil {
		t.Fatal(err)
	}
	if _, err := (sdk.EncodedMessages{Records: kept.ProtoReflect().GetUnknown()}).Positions(); err == nil {
		t.Error("the position of a message that does not decode was read")
	} else {
		t.Log(err)
	}
	// Not a record of field 1 of wire type bytes: refused by the codec.
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x08, 0x01})}, &ferryv1.FollowResponse{}); err == nil {
		t.Error("field 1 as a varint was accepted")
	} else {
		t.Log(err)
	}
}
