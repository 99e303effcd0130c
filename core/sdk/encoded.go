package sdk

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/telemetry"
)

// Messages that stay in their wire form.
//
// A transport that speaks protobuf to its clients (the grpc transport) has no
// use for a decoded batch: it would decode what the core sent, then encode
// the same bytes again for the client. Instead a message may carry its
// fields still encoded, as its unknown fields (protoreflect's GetUnknown):
// every encoder of Ferry's (vtprotobuf's and protobuf-go's) writes them out
// as they are, so the message reaches the next process byte for byte as if
// it had been decoded and encoded again, at the cost of one copy.
//
// Two places use it, both between a transport plugin and the core when the
// core is in another process (EncodesRequests):
//   - a produce request the transport did not decode (its codec checked the
//     wire form and set only Seq and TimeoutNanos), forwarded in its
//     TransportFrame; the core decodes and checks it as any request;
//   - a fetch answer the transport forwards to its client without decoding
//     it (EncodedFetcher).

// EncodesRequests reports whether core, as a transport plugin's Serve got
// it, reaches the broker through encoded frames (the ring data plane or the
// Connect stream): then a request whose fields stay encoded as its unknown
// fields reaches the broker whole. A core linked into the same process
// (plugins in-process) reads requests as Go values and must get them
// decoded.
func EncodesRequests(core Core) bool {
	_, ok := core.(*coreClient)
	return ok
}

// EncodedFetcher is what the Core a transport plugin gets from Serve has
// when the broker is in another process: FetchEncoded is Fetch, except that
// the answer may come still encoded (its Messages, Offsets and Errors empty,
// all of it in its unknown fields), for a transport that only encodes the
// answer again as protobuf. An answer that names traced messages
// (TracedIndex, for the transport's own spans) always comes decoded.
type EncodedFetcher interface {
	FetchEncoded(ctx context.Context, req *FetchRequest) (*FetchResponse, error)
}

var _ EncodedFetcher = (*coreClient)(nil)

// FetchEncoded implements EncodedFetcher.
func (c *coreClient) FetchEncoded(ctx context.Context, req *FetchRequest) (*FetchResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_Fetch{Fetch: req}})
	if err != nil {
		return nil, err
	}
	resp := f.GetFetch()
	if raw, ok := encodedOnly(resp); ok && fieldsAbsent(raw, fetchTracedIndex, fetchTracedSpan) {
		return resp, nil
	}
	return decodedFetch(resp)
}

// Field numbers of the wire forms read here (core/proto/ferry/v1).
const (
	coreFrameID      protowire.Number = 1
	coreFrameFetch   protowire.Number = 3
	fetchTracedIndex protowire.Number = 50
	fetchTracedSpan  protowire.Number = 51
)

// decodeCoreFrame decodes a frame the core sent a transport plugin over the
// ring, as unmarshalFrame does, except a fetch answer: its FetchResponse
// stays encoded (encodedOnly) until Fetch decodes it, or goes to the client
// as it is (FetchEncoded). Only a frame of exactly an id and a fetch answer
// is kept encoded; any other decodes in full.
func decodeCoreFrame(b []byte, f *ferryv1.CoreFrame) error {
	var (
		id    uint64
		fetch []byte
	)
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return unmarshalFrame(b, f)
		}
		rest = rest[n:]
		switch {
		case num == coreFrameID && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(rest)
			if n < 0 {
				return unmarshalFrame(b, f)
			}
			id, rest = v, rest[n:]
		case num == coreFrameFetch && typ == protowire.BytesType && fetch == nil:
			v, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				return unmarshalFrame(b, f)
			}
			fetch, rest = v, rest[n:]
		default:
			return unmarshalFrame(b, f)
		}
	}
	if len(fetch) == 0 {
		return unmarshalFrame(b, f)
	}
	f.Reset()
	f.Id = id
	f.Response = &ferryv1.CoreFrame_Fetch{Fetch: encodedFetch(fetch)}
	return nil
}

// encodedFetch is a FetchResponse all of whose fields are raw, still
// encoded, as its unknown fields. raw must not change while it is in use
// (a frame copied out of the ring never does).
func encodedFetch(raw []byte) *ferryv1.FetchResponse {
	resp := &ferryv1.FetchResponse{}
	resp.ProtoReflect().SetUnknown(protoreflect.RawFields(raw))
	return resp
}

// encodedOnly returns the wire form of a response of decodeCoreFrame's, and
// false for one that has decoded fields.
func encodedOnly(resp *ferryv1.FetchResponse) ([]byte, bool) {
	if resp == nil || len(resp.Messages) > 0 || len(resp.Offsets) > 0 || len(resp.Errors) > 0 || len(resp.TracedIndex) > 0 || len(resp.TracedSpan) > 0 {
		return nil, false
	}
	raw := resp.ProtoReflect().GetUnknown()
	return raw, len(raw) > 0
}

// decodedFetch decodes a FetchResponse that decodeCoreFrame kept encoded;
// others are returned as they are.
func decodedFetch(resp *ferryv1.FetchResponse) (*ferryv1.FetchResponse, error) {
	raw, ok := encodedOnly(resp)
	if !ok {
		return resp, nil
	}
	full := &ferryv1.FetchResponse{}
	if err := unmarshalFrame(raw, full); err != nil {
		return nil, fmt.Errorf("%w: the core's fetch answer does not decode: %v", ErrUnavailable, err)
	}
	return full, nil
}

// fieldsAbsent reports whether the wire form b of a message has none of the
// fields nums at its top level (and is well formed).
func fieldsAbsent(b []byte, nums ...protowire.Number) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		for _, x := range nums {
			if num == x {
				return false
			}
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// MessageWire checks the wire form b of one Message without decoding it:
// only Message's own fields, each of its wire type, strings (id, topic,
// key, header keys and values) in UTF-8. It returns what a hop needs of the
// message (WireInfo) and whether b passed.
func MessageWire(b []byte) (info WireInfo, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return WireInfo{}, false
		}
		b = b[n:]
		switch num {
		case messageQueue, messageBorn, messageOffset, messageStored:
			if typ != protowire.VarintType {
				return WireInfo{}, false
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return WireInfo{}, false
			}
			b = b[n:]
			if num == messageQueue {
				info.Queue = int32(v) // as protobuf decodes an int32
			}
		case messageID, messageTopic, messageKey, messageBody, messageHeaders:
			if typ != protowire.BytesType {
				return WireInfo{}, false
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return WireInfo{}, false
			}
			b = b[n:]
			switch num {
			case messageID:
				info.ID = v
			case messageTopic:
				info.Topic = v
			}
			switch num {
			case messageBody:
				info.Size += int64(len(v))
			case messageHeaders:
				k, val, ok := headerEntry(v)
				if !ok {
					return WireInfo{}, false
				}
				info.Size += int64(len(k) + len(val))
				if string(k) == telemetry.HeaderTraceparent {
					// The last one counts, as in the decoded map.
					switch {
					case telemetry.SampledTraceparent(string(val)):
						info.Trace = TraceSampled
					case telemetry.UnsampledTraceparent(string(val)):
						info.Trace = TraceUnsampled
					default:
						info.Trace = TraceNone
					}
				}
			default:
				if !utf8.Valid(v) {
					return WireInfo{}, false
				}
			}
		default:
			return WireInfo{}, false
		}
	}
	return info, true
}

// WireInfo is what MessageWire reads of a message.
type WireInfo struct {
	Size  int64      // bytes of body and headers (the size transports limit)
	Trace TraceState // its trace context (the traceparent header)
	// The message's id, topic and queue, as a decoder would see them (the
	// last value of a field counts). ID and Topic alias the bytes read.
	ID, Topic []byte
	Queue     int32
}

// TraceState is what a message's traceparent header says of its trace.
type TraceState uint8

const (
	TraceNone      TraceState = iota // no valid traceparent: no trace, which no hop starts
	TraceUnsampled                   // a trace decided against: no hop records it
	TraceSampled                     // a sampled trace: hops record it
)

// Field numbers of Message (core/proto/ferry/v1/message.proto).
const (
	messageID      protowire.Number = 1
	messageTopic   protowire.Number = 2
	messageQueue   protowire.Number = 3
	messageKey     protowire.Number = 4
	messageHeaders protowire.Number = 5
	messageBody    protowire.Number = 6
	messageBorn    protowire.Number = 7
	messageOffset  protowire.Number = 8
	messageStored  protowire.Number = 9
)

// headerEntry reads a map entry of Message.headers (key 1, value 2, both
// strings in UTF-8).
func headerEntry(b []byte) (k, v []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || (num != 1 && num != 2) {
			return nil, nil, false
		}
		b = b[n:]
		s, n := protowire.ConsumeBytes(b)
		if n < 0 || !utf8.Valid(s) {
			return nil, nil, false
		}
		b = b[n:]
		if num == 1 {
			k = s
		} else {
			v = s
		}
	}
	return k, v, true
}

// EncodedReader is what a StorageClient has: ReadEncoded is Read, except
// that the messages read stay in their wire form, checked (MessageWire),
// for a caller that only forwards them encoded (the broker's fetch for a
// transport plugin, EncodedFetcher). msgs holds them as the store encoded
// them; the answer's Messages are then empty. Over the gRPC data plane
// (and for a store that sent messages the core had to decode) the answer
// comes decoded, msgs empty, and Messages as Read's.
type EncodedReader interface {
	ReadEncoded(ctx context.Context, req *ReadRequest) (resp *ReadResponse, msgs EncodedMessages, err error)
}

// EncodedMessages are messages in their wire form: each a length-delimited
// record of a repeated Message field (ReadResponse.messages), one after the
// other.
type EncodedMessages struct {
	Records []byte // tag, length, Message, for each message in turn
	N       int    // how many
	Sampled int    // how many of them are in a sampled trace (TraceSampled)
}

// Decode decodes m's messages (their bodies alias Records).
func (m EncodedMessages) Decode() ([]*ferryv1.Message, error) {
	r := &ferryv1.ReadResponse{}
	if err := unmarshalFrame(m.Records, r); err != nil {
		return nil, fmt.Errorf("%w: encoded messages do not decode: %v", ErrUnavailable, err)
	}
	return r.Messages, nil
}

// RetaggedSize is the size of m's records as records of field num.
func (m EncodedMessages) RetaggedSize(num protowire.Number) int {
	size := 0
	for b := m.Records; len(b) > 0; {
		_, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		_, n = protowire.ConsumeBytes(b)
		b = b[n:]
		size += protowire.SizeTag(num) + n
	}
	return size
}

// PutRetagged writes m's records into b as records of field num (of another
// message's repeated Message field, FetchResponse.messages for instance):
// the bytes of each Message as they are, under a new tag. b must hold
// RetaggedSize(num) bytes; it returns how many it wrote.
func (m EncodedMessages) PutRetagged(b []byte, num protowire.Number) int {
	at := 0
	for r := m.Records; len(r) > 0; {
		_, _, n := protowire.ConsumeTag(r)
		r = r[n:]
		_, n = protowire.ConsumeBytes(r)
		at += copy(b[at:], protowire.AppendTag(b[at:at], num, protowire.BytesType))
		at += copy(b[at:], r[:n]) // the length and the Message
		r = r[n:]
	}
	return at
}

// AppendRetagged appends m's records to dst as PutRetagged writes them.
func (m EncodedMessages) AppendRetagged(dst []byte, num protowire.Number) []byte {
	size := m.RetaggedSize(num)
	dst = slices.Grow(dst, size)
	n := m.PutRetagged(dst[len(dst):len(dst)+size], num)
	return dst[:len(dst)+n]
}

// Field numbers of ReadResponse (core/proto/ferry/v1/storage.proto).
const (
	readID       protowire.Number = 1
	readMessages protowire.Number = 2
)

// splitRead decodes a storage plugin's read answer from the ring except its
// messages: their records (ReadResponse.messages, in order) are kept, not
// decoded, as the answer's unknown fields, for Read to decode
// (decodedRead) or ReadEncoded to check (encodedRead). Fields a ReadResponse
// does not have are dropped (the core has no use for them).
func splitRead(b []byte, r *ferryv1.ReadResponse) error {
	var (
		records    []byte   // the messages' records
		start, end = -1, -1 // records is b[start:end] while they are contiguous
		rest       []byte
	)
	for at := 0; at < len(b); {
		num, typ, n := protowire.ConsumeTag(b[at:])
		if n < 0 {
			return protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[at+n:])
		if m < 0 {
			return protowire.ParseError(m)
		}
		field := b[at : at+n+m]
		switch {
		case num != readMessages:
			rest = append(rest, field...)
		case typ != protowire.BytesType:
			return fmt.Errorf("read answer: messages field of wire type %d", typ)
		case start < 0:
			start, end = at, at+len(field)
			records = b[start:end]
		case end == at:
			end += len(field)
			records = b[start:end]
		default: // another field came between: copy them together
			if end >= 0 {
				records, end = bytes.Clone(records), -1
			}
			records = append(records, field...)
		}
		at += n + m
	}
	if err := unmarshalFrame(rest, r); err != nil {
		return err
	}
	r.ProtoReflect().SetUnknown(protoreflect.RawFields(records))
	return nil
}

// decodedRead decodes the messages splitRead kept encoded.
func decodedRead(r *ferryv1.ReadResponse) error {
	records := r.ProtoReflect().GetUnknown()
	if len(records) == 0 {
		return nil
	}
	r.ProtoReflect().SetUnknown(nil)
	msgs := &ferryv1.ReadResponse{}
	if err := unmarshalFrame(records, msgs); err != nil {
		return fmt.Errorf("%w: the storage plugin's read answer does not decode: %v", ErrUnavailable, err)
	}
	r.Messages = append(r.Messages, msgs.Messages...)
	return nil
}

// encodedRead checks the messages splitRead kept encoded and takes them out
// of r. A message MessageWire does not pass (a field Message lacks, from a
// store built on a newer message.proto, say) makes the whole answer decode
// instead, as Read's would: r.Messages then holds them and the result is
// empty; only an answer that does not decode either is an error.
func encodedRead(r *ferryv1.ReadResponse) (EncodedMessages, error) {
	records := r.ProtoReflect().GetUnknown()
	out := EncodedMessages{Records: records}
	for b := records; len(b) > 0; out.N++ {
		_, _, n := protowire.ConsumeTag(b) // splitRead parsed these
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		b = b[n:]
		info, ok := MessageWire(v)
		if !ok {
			return EncodedMessages{}, decodedRead(r)
		}
		if info.Trace == TraceSampled {
			out.Sampled++
		}
	}
	r.ProtoReflect().SetUnknown(nil)
	return out, nil
}

// WireFetcher is what the broker has (and the guard in front of it):
// FetchWire is Fetch, except that messages the store read in its own
// process may stay in their wire form, as it encoded them
// (EncodedReader): the answer's messages are resp.Messages, then those of
// parts, in order. handleFrame answers a transport plugin's fetch with
// it, and the frame is written with the parts' bytes copied straight into
// the ring (fetchFrame): the core neither decodes the messages nor
// encodes them again.
type WireFetcher interface {
	FetchWire(ctx context.Context, req *FetchRequest) (resp *FetchResponse, parts []EncodedMessages, err error)
}

// fetchFrame is a CoreFrame answering a fetch (id, and resp with the
// messages of parts after its own), encoded without decoding parts.
type fetchFrame struct {
	id    uint64
	resp  *ferryv1.FetchResponse
	parts []EncodedMessages
}

func (f *fetchFrame) innerSize() int {
	n := f.resp.SizeVT()
	for _, p := range f.parts {
		n += p.RetaggedSize(fetchMessages)
	}
	return n
}

// size is the frame's encoded size, inner the FetchResponse's.
func (f *fetchFrame) size() (size, inner int) {
	inner = f.innerSize()
	return protowire.SizeTag(coreFrameID) + protowire.SizeVarint(f.id) + protowire.SizeTag(coreFrameFetch) + protowire.SizeBytes(inner), inner
}

// put encodes the frame into b, of exactly size bytes.
func (f *fetchFrame) put(b []byte, inner int) error {
	h := protowire.AppendTag(b[:0], coreFrameID, protowire.VarintType)
	h = protowire.AppendVarint(h, f.id)
	h = protowire.AppendTag(h, coreFrameFetch, protowire.BytesType)
	h = protowire.AppendVarint(h, uint64(inner))
	at := len(h)
	if len(b) != at+inner {
		return fmt.Errorf("%w: encode fetch answer: %d bytes of room for %d", ErrInvalidArgument, len(b), at+inner)
	}
	rs := f.resp.SizeVT()
	if n, err := f.resp.MarshalToSizedBufferVT(b[at : at+rs]); err != nil || n != rs {
		return fmt.Errorf("%w: encode fetch answer: %d of %d bytes: %v", ErrInvalidArgument, n, rs, err)
	}
	at += rs
	for _, p := range f.parts {
		at += p.PutRetagged(b[at:], fetchMessages)
	}
	if at != len(b) {
		return fmt.Errorf("%w: encode fetch answer: %d bytes of %d", ErrInvalidArgument, at, len(b))
	}
	return nil
}

// frame is the CoreFrame itself, the parts' messages copied into resp's
// unknown fields: for the gRPC data plane's stream.
func (f *fetchFrame) frame() *ferryv1.CoreFrame {
	var records []byte
	for _, p := range f.parts {
		records = p.AppendRetagged(records, fetchMessages)
	}
	resp := proto.Clone(f.resp).(*ferryv1.FetchResponse)
	resp.ProtoReflect().SetUnknown(append(resp.ProtoReflect().GetUnknown(), records...))
	return &ferryv1.CoreFrame{Id: f.id, Response: &ferryv1.CoreFrame_Fetch{Fetch: resp}}
}

// fetchMessages is FetchResponse.messages' field number.
const fetchMessages protowire.Number = 1

// writeFetchFrame writes f to c as one frame of kind: encoded in the ring
// itself when it fits one record, else in a pooled buffer copied in.
func writeFetchFrame(c *ring.Conn, kind uint16, f *fetchFrame) error {
	size, inner := f.size()
	if size <= c.MaxInPlace() {
		return c.WriteFunc(kind, f.id, size, func(b []byte) error { return f.put(b, inner) })
	}
	buf := sharedBufferPool.Get(size)
	defer sharedBufferPool.Put(buf)
	b := (*buf)[:size]
	if err := f.put(b, inner); err != nil {
		return err
	}
	return c.Write(kind, f.id, b)
}
