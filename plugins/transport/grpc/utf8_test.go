package grpctransport_test

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// rawCodec sends and receives wire bytes as they are: a client that can send
// what protobuf's own marshaller refuses (strings that are not UTF-8).
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// corrupt marshals m and replaces the placeholder in its wire form with
// bytes of the same length that are not UTF-8.
func corrupt(t *testing.T, m proto.Message, placeholder string) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte(placeholder)) != 1 {
		t.Fatalf("placeholder %q not once in the wire form", placeholder)
	}
	return bytes.Replace(b, []byte(placeholder), bytes.Repeat([]byte{0xff}, len(placeholder)), 1)
}

// TestInvalidUTF8IsInvalidArgument sends requests whose string fields are not
// UTF-8: each is answered InvalidArgument naming the field, nothing reaches
// the core, and the connection keeps serving good requests (gRPC answered
// Internal: "grpc: error unmarshalling request").
func TestInvalidUTF8IsInvalidArgument(t *testing.T) {
	core := &fakeCore{}
	s := serve(t, core, "")
	cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testCtx(t)

	for _, tc := range []struct {
		method string
		req    []byte
		field  string
	}{
		{"/ferry.v1.Broker/Metadata", corrupt(t, &ferryv1.MetadataRequest{Topics: []string{"ok", "PLACEHOLDER"}}, "PLACEHOLDER"), "topics[1]"},
		{"/ferry.v1.Broker/Fetch", corrupt(t, &ferryv1.FetchRequest{Topic: "t", Group: "PLACEHOLDER"}, "PLACEHOLDER"), "group"},
		{"/ferry.v1.Broker/CommitOffsets", corrupt(t, &ferryv1.CommitOffsetsRequest{Group: "g", Offsets: []*ferryv1.GroupOffset{{Topic: "PLACEHOLDER"}}}, "PLACEHOLDER"), "offsets[0].topic"},
	} {
		var reply []byte
		err := cc.Invoke(ctx, tc.method, &tc.req, &reply)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.field) {
			t.Errorf("%s: %v; want InvalidArgument naming %s", tc.method, err, tc.field)
		}
		// The same connection still serves a good request.
		if _, err := s.rpc.Metadata(ctx, &ferryv1.MetadataRequest{}); err != nil {
			t.Fatalf("after %s: %v", tc.method, err)
		}
	}

	// A produce stream: its request is refused, the stream ends with
	// InvalidArgument, and the core never sees the message.
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/ferry.v1.Broker/Produce")
	if err != nil {
		t.Fatal(err)
	}
	req := corrupt(t, &ferryv1.ProduceRequest{Seq: 1, Messages: []*ferryv1.Message{{Id: "a", Topic: "t"}, {Id: "b", Topic: "t", Key: "PLACEHOLDER"}}}, "PLACEHOLDER")
	if err := stream.SendMsg(&req); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	err = stream.RecvMsg(&reply)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "messages[1].key") {
		t.Errorf("produce stream: %v; want InvalidArgument naming messages[1].key", err)
	}
	req = corrupt(t, &ferryv1.ProduceRequest{Seq: 1, Messages: []*ferryv1.Message{{Id: "a", Topic: "t", Headers: map[string]string{"h": "PLACEHOLDER"}}}}, "PLACEHOLDER")
	stream, err = cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/ferry.v1.Broker/Produce")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(&req); err != nil {
		t.Fatal(err)
	}
	err = stream.RecvMsg(&reply)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "messages[0].headers") {
		t.Errorf("produce stream, header value: %v; want InvalidArgument naming messages[0].headers", err)
	}
	if n := core.produceCalls.Load(); n != 0 {
		t.Errorf("the core saw %d produce calls of refused requests", n)
	}
}
