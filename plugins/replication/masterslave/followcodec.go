package masterslave

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// followCodec is the SDK's gRPC codec for a slave's Follow stream, except
// that a FollowResponse's messages are not decoded: their records (field 1)
// become the answer's unknown fields, and the slave hands them to its core
// as they are (sdk.EncodedApplier), which decodes and checks them once. The
// other fields decode as usual.
type followCodec struct{ encoding.CodecV2 }

// followMessages is FollowResponse.messages' field number, the same as
// ApplyRequest.messages' (the records go on unchanged).
const followMessages protowire.Number = 1

func (c followCodec) Unmarshal(data mem.BufferSlice, v any) error {
	fr, ok := v.(*ferryv1.FollowResponse)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	msgs, rest, err := sdk.SplitMessageRecords(data.Materialize(), followMessages)
	if err != nil {
		return fmt.Errorf("the master's follow answer: %w", err)
	}
	if err := c.CodecV2.Unmarshal(mem.BufferSlice{mem.SliceBuffer(rest)}, fr); err != nil {
		return err
	}
	// Replaces fields of fr this build does not know (rest's): only the
	// messages' records are forwarded.
	fr.ProtoReflect().SetUnknown(protoreflect.RawFields(msgs.Records))
	return nil
}
