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
// tracing on, a single message is kept encoded only when it is not sampled
// (a message without a traceparent, or with an unsampled one, is traced by
// no hop: a trace starts only at a message's producer). The sampled messages of a
// batch are named in req.TracedIndex (a client's traced fields are refused
// here): the transport's hop decodes only them (sampledMessages) to make
// their spans, and no message of the batch otherwise.
func encodedProduce(b []byte, maxMessageBytes int64, tracing bool, req *ferryv1.ProduceRequest) bool {
	var seq, timeout uint64
	var sampled []uint32
	count := 0 // messages
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
			v, k := protowire.ConsumeBytes(rest)
			if k < 0 {
				return false
			}
			info, ok := sdk.MessageWire(v)
			if !ok || info.Size > maxMessageBytes {
				return false
			}
			if tracing && info.Trace == sdk.TraceSampled {
				sampled = append(sampled, uint32(count))
			}
			rest = rest[k:]
			count++
		default:
			return false // traced fields, or what this transport does not know
		}
	}
	if len(sampled) > 0 && count == 1 {
		return false // a message sent alone: its span reads it, as it always did
	}
	req.Seq, req.TimeoutNanos = seq, int64(timeout)
	req.TracedIndex, req.TracedSpan = sampled, nil
	req.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
	return true
}

// sampledMessages returns, for a produce request encodedProduce kept
// encoded, a slice as long as its batch that holds, decoded, its first
// message (whose topic the hop's spans name) and the sampled ones (indexes
// in sampled, ascending), and nil for the others: what telemetry.StartHop
// reads of a batch. It decodes nothing else. nil when req holds no
// encoded messages or a sampled one does not decode.
func sampledMessages(req *ferryv1.ProduceRequest, sampled []uint32) []*ferryv1.Message {
	raw := req.ProtoReflect().GetUnknown()
	var msgs []*ferryv1.Message
	next := 0 // into sampled
	for rest := []byte(raw); len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil
		}
		rest = rest[n:]
		if num != produceMessages || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, rest)
			if n < 0 {
				return nil
			}
			rest = rest[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(rest)
		if n < 0 {
			return nil
		}
		rest = rest[n:]
		i := len(msgs)
		var m *ferryv1.Message
		if i == 0 || (next < len(sampled) && int(sampled[next]) == i) {
			m = new(ferryv1.Message)
			if err := m.UnmarshalVT(v); err != nil {
				return nil
			}
		}
		if next < len(sampled) && int(sampled[next]) == i {
			next++
		}
		msgs = append(msgs, m)
	}
	return msgs
}
