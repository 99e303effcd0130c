package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/telemetry"
)

// utf8Codec is the server's codec: the SDK's, except that a request holding a
// string field that is not UTF-8 decodes without error and is remembered as
// refused, so that its handler answers InvalidArgument naming the field
// (gRPC itself answers a codec error with Internal, which tells a client
// nothing of what it did wrong). gRPC calls Unmarshal for every request
// message, then the handler calls refused on it.
//
// With encodeProduce set (the core is in another process), a
// ProduceRequest the codec can check in its wire form stays encoded
// (encodedProduce) and only a request it cannot is decoded.
type utf8Codec struct {
	encoding.CodecV2
	encodeProduce   bool
	maxMessageBytes int64
}

// refusedReqs maps a request message decoded by utf8Codec to the reason it is
// refused; entries live from Unmarshal until refused takes them.
var refusedReqs sync.Map

func (c utf8Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if req, ok := v.(*ferryv1.ProduceRequest); ok && c.encodeProduce {
		if encodedProduce(data.Materialize(), c.maxMessageBytes, telemetry.Enabled(), req) {
			return nil
		}
	}
	err := c.CodecV2.Unmarshal(data, v)
	var bad interface{ InvalidUTF8() bool }
	if err == nil || !errors.As(err, &bad) || !bad.InvalidUTF8() {
		return err
	}
	reason := "a string field is not valid UTF-8"
	if m, ok := v.(protoadapt.MessageV2); ok {
		if field := invalidField(data.Materialize(), m.ProtoReflect().Descriptor(), ""); field != "" {
			reason = fmt.Sprintf("field %s is not valid UTF-8", field)
		}
	}
	refusedReqs.Store(v, status.Errorf(codes.InvalidArgument, "INVALID_ARGUMENT: %s (strings are UTF-8; send binary data in bytes fields such as body)", reason))
	return nil
}

// refused returns the InvalidArgument status for a request utf8Codec decoded
// with a string that is not UTF-8, and forgets it; nil for others. Called by
// every handler before it reads the request.
func refused(req any) error {
	if err, ok := refusedReqs.LoadAndDelete(req); ok {
		return err.(error)
	}
	return nil
}

// invalidField walks the wire form b of a message of type md and returns the
// path of the first string field that is not UTF-8 ("messages[2].key"), or
// "" if it finds none.
func invalidField(b []byte, md protoreflect.MessageDescriptor, at string) string {
	index := map[protoreflect.FieldNumber]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		name := string(fd.Name())
		if at != "" {
			name = at + "." + name
		}
		if fd.IsList() {
			name = fmt.Sprintf("%s[%d]", name, index[num])
			index[num]++
		}
		switch {
		case fd.IsMap():
			// A map entry is a message of key and value.
			if f := invalidField(v, fd.Message(), name); f != "" {
				return strings.Replace(f, name+".", name+"{", 1) + "}"
			}
		case fd.Kind() == protoreflect.StringKind:
			if !utf8.Valid(v) {
				return name
			}
		case fd.Kind() == protoreflect.MessageKind:
			if f := invalidField(v, fd.Message(), name); f != "" {
				return f
			}
		}
	}
	return ""
}

// refuseInvalidUTF8 is the unary interceptor that answers a request refused
// by utf8Codec before its handler runs.
func refuseInvalidUTF8(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := refused(req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}
