package grpctransport

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// A produce request that stays encoded.
//
// When the core is in another process (sdk.EncodesRequests), the transport
// has no use for a decoded batch: it would decode the client's bytes, then
// encode them again for the core. Instead utf8Codec reads the request's
// wire form with encodedProduce, which checks what the transport itself
// must check (strings are UTF-8, every message within max_message_bytes,
// no traced fields from a client) without building any message, and keeps
// the bytes as the request's unknown fields; the SDK writes them to the
// core as they are (see core/sdk/encoded.go) and the core decodes and
// checks them as any request. Whatever encodedProduce does not understand
// or refuses is decoded in full instead, so errors read as before.

// Field numbers of the wire forms read here (core/proto/ferry/v1).
const (
	produceSeq      protowire.Number = 1
	produceMessages protowire.Number = 2
	produceTimeout  protowire.Number = 3
)

// encodedProduce fills req from the wire form b of a ProduceRequest when b
// holds only what it understands and nothing it must refuse: Seq and
// TimeoutNanos set, b kept as req's unknown fields (b must not change
// afterwards). It returns false, with req untouched, otherwise. With
// tracing on, a request is kept encoded only when every message's trace
// was decided against (an unsampled traceparent): the transport's span of
// any other message reads the message.
func encodedProduce(b []byte, maxMessageBytes int64, tracing bool, req *ferryv1.ProduceRequest) bool {
	var seq, timeout uint64
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return false
		}
		rest = rest[n:]
		switch {
		case (num == produceSeq || num == produceTimeout) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(rest)
			if n < 0 {
				return false
			}
			rest = rest[n:]
			if num == produceSeq {
				seq = v
			} else {
				timeout = v
			}
		case num == produceMessages && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(rest)
			if n < 0 || !plainMessage(v, maxMessageBytes, tracing) {
				return false
			}
			rest = rest[n:]
		default:
			return false // traced fields, or what this transport does not know
		}
	}
	req.Seq, req.TimeoutNanos = seq, int64(timeout)
	req.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
	return true
}

// plainMessage reports whether the wire form b of a Message has only its
// known fields, with strings in UTF-8 (sdk.MessageWire), at most
// maxMessageBytes of body and headers (counted as brokerServer.checkSizes
// does) and, with tracing, an unsampled trace.
func plainMessage(b []byte, maxMessageBytes int64, tracing bool) bool {
	info, ok := sdk.MessageWire(b)
	return ok && info.Size <= maxMessageBytes && (!tracing || info.Trace == sdk.TraceUnsampled)
}
