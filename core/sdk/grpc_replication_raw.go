package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Encoded messages on the replication path.
//
// A master–slave batch crosses two replication plugin processes (the
// master's, the slave's) that only route it: they need each message's topic,
// queue and offset, never its body or headers. Decoding every message into a
// Message and encoding it again at each of them was a third of their CPU
// time. A plugin that implements RawReplication gets the batch as the
// encoded messages (ferry.v1.Message, as they arrived), and a ReplicaCore
// reached over gRPC applies encoded messages (RawApplier) by copying them
// into its frame. The wire is unchanged: the same .proto messages, encoded
// the same way.

// RawMessage is one message as its encoded ferry.v1.Message, with the fields
// replication routes by read out of it.
type RawMessage struct {
	Bytes  []byte // the encoded Message; never modified
	Topic  string
	Queue  int32
	Offset int64
}

// RawReplication is a Replication that takes batches as encoded messages
// (the SDK then does not decode them). Replicate is still called where there
// is no gRPC boundary (a plugin linked in-process).
type RawReplication interface {
	ReplicateRaw(ctx context.Context, msgs []RawMessage) (ReplicateWait, error)
}

// RawApplier is a ReplicaCore that applies encoded messages; the SDK's
// gRPC ReplicaCore is one.
type RawApplier interface {
	ApplyRaw(ctx context.Context, msgs []RawMessage) (ApplyWait, error)
}

// EncodeRawMessage encodes m.
func EncodeRawMessage(m *Message) (RawMessage, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return RawMessage{}, err
	}
	return RawMessage{Bytes: b, Topic: m.Topic, Queue: m.Queue, Offset: m.Offset}, nil
}

// Decode decodes the message.
func (m RawMessage) Decode() (*Message, error) {
	out := &Message{}
	if err := proto.Unmarshal(m.Bytes, out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetHeaders decodes the message's headers (for trace links); nil when it
// has none.
func (m RawMessage) GetHeaders() map[string]string {
	var h map[string]string
	b := m.Bytes
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h
		}
		b = b[n:]
		if num == 5 && typ == protowire.BytesType {
			e, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return h
			}
			b = b[n:]
			k, v := mapEntry(e)
			if h == nil {
				h = map[string]string{}
			}
			h[k] = v
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return h
		}
		b = b[n:]
	}
	return h
}

// mapEntry decodes a map<string, string> entry.
func mapEntry(e []byte) (k, v string) {
	for len(e) > 0 {
		num, typ, n := protowire.ConsumeTag(e)
		if n < 0 {
			return
		}
		e = e[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			s, n := protowire.ConsumeBytes(e)
			if n < 0 {
				return
			}
			e = e[n:]
			if num == 1 {
				k = string(s)
			} else {
				v = string(s)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, e)
		if n < 0 {
			return
		}
		e = e[n:]
	}
	return
}

// ParseRawMessage reads topic, queue and offset out of an encoded Message;
// b is kept, not copied. last, when not nil, is the topic of the previous
// message of the batch, reused (not allocated again) when equal.
func ParseRawMessage(b []byte, last *string) (RawMessage, error) {
	m := RawMessage{Bytes: b}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, fmt.Errorf("%w: bad message encoding", ErrInvalidArgument)
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType:
			s, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return m, fmt.Errorf("%w: bad message encoding", ErrInvalidArgument)
			}
			b = b[n:]
			if last != nil && *last == string(s) {
				m.Topic = *last
			} else {
				m.Topic = string(s)
				if last != nil {
					*last = m.Topic
				}
			}
			continue
		case (num == 3 || num == 8) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return m, fmt.Errorf("%w: bad message encoding", ErrInvalidArgument)
			}
			b = b[n:]
			if num == 3 {
				m.Queue = int32(v)
			} else {
				m.Offset = int64(v)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return m, fmt.Errorf("%w: bad message encoding", ErrInvalidArgument)
		}
		b = b[n:]
	}
	return m, nil
}

// RawMessagesSize is the encoded size of msgs as the repeated message field
// num.
func RawMessagesSize(num protowire.Number, msgs []RawMessage) int {
	n := 0
	for _, m := range msgs {
		n += protowire.SizeTag(num) + protowire.SizeBytes(len(m.Bytes))
	}
	return n
}

// AppendRawMessages appends msgs to b as the repeated message field num.
func AppendRawMessages(b []byte, num protowire.Number, msgs []RawMessage) []byte {
	for _, m := range msgs {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Bytes)
	}
	return b
}

// Frame buffers. A frame built to be sent (RawFrame) can be used again once
// SendMsg returned when it is longer than mem's pooling threshold: the
// codec (codec.Marshal) then copies it into a buffer of its own, where a
// shorter one is sent as it is (TestRawFrameCopiedByCodec holds the codec
// to that). Reusing them keeps the replication plugins from allocating a
// frame-sized buffer per batch, which made their garbage collector run
// several times a second.

// GetFrameBuffer returns an empty buffer of capacity n or more, from a pool.
func GetFrameBuffer(n int) *[]byte {
	b := sharedBufferPool.Get(n)
	*b = (*b)[:0]
	return b
}

// PutFrameBuffer returns b to the pool; b must not be used afterwards.
func PutFrameBuffer(b *[]byte) { sharedBufferPool.Put(b) }

// SentFrameReusable reports whether a frame of n bytes handed to SendMsg
// may be reused once SendMsg returned (the codec copied it).
func SentFrameReusable(n int) bool { return !mem.IsBelowBufferPoolingThreshold(n) }

// RawFrame is an already encoded protobuf message, sent as it is through a
// gRPC stream (stream.SendMsg) by a codec that takes proto messages: it is
// a legacy (APIv1) message whose Marshal returns the bytes.
type RawFrame struct{ B []byte }

func (f *RawFrame) Reset()                   { f.B = nil }
func (f *RawFrame) String() string           { return fmt.Sprintf("raw frame (%d bytes)", len(f.B)) }
func (f *RawFrame) ProtoMessage()            {}
func (f *RawFrame) Marshal() ([]byte, error) { return f.B, nil }

// Unmarshal keeps a copy of b (a codec may reuse its buffer).
func (f *RawFrame) Unmarshal(b []byte) error {
	f.B = append([]byte(nil), b...)
	return nil
}

// rawReplicateRequest is a ferry.v1.ReplicateRequest with its messages
// left encoded.
type rawReplicateRequest struct {
	seq     uint64
	msgs    []RawMessage
	trace   map[string]string
	timeout int64
}

func (r *rawReplicateRequest) Reset()                 { *r = rawReplicateRequest{} }
func (r *rawReplicateRequest) String() string         { return "raw ReplicateRequest" }
func (r *rawReplicateRequest) ProtoMessage()          {}
func (r *rawReplicateRequest) GetTimeoutNanos() int64 { return r.timeout }

var errRawEncoding = errors.New("bad ReplicateRequest encoding")

// Unmarshal decodes the request, keeping one copy of b (the codec reuses
// its buffer) that the messages point into.
func (r *rawReplicateRequest) Unmarshal(in []byte) error {
	b := append([]byte(nil), in...)
	r.msgs = make([]RawMessage, 0, countField(b, 2))
	var last string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errRawEncoding
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 4) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errRawEncoding
			}
			b = b[n:]
			if num == 1 {
				r.seq = v
			} else {
				r.timeout = int64(v)
			}
			continue
		case (num == 2 || num == 3) && typ == protowire.BytesType:
			e, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errRawEncoding
			}
			b = b[n:]
			if num == 2 {
				m, err := ParseRawMessage(e, &last)
				if err != nil {
					return err
				}
				r.msgs = append(r.msgs, m)
			} else {
				k, v := mapEntry(e)
				if r.trace == nil {
					r.trace = map[string]string{}
				}
				r.trace[k] = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errRawEncoding
		}
		b = b[n:]
	}
	return nil
}

// countField counts the occurrences of field num in an encoded message (0
// when it is malformed: the decoder reports that).
func countField(b []byte, num protowire.Number) int {
	c := 0
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return 0
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return 0
		}
		b = b[l:]
		if n == num {
			c++
		}
	}
	return c
}

// ApplyRaw is Apply with the messages copied as they are into the frame.
func (c *replicaCoreClient) ApplyRaw(ctx context.Context, msgs []RawMessage) (ApplyWait, error) {
	id, ch, err := c.calls.add()
	if err != nil {
		return nil, err
	}
	// One buffer of the exact size: the frame is copied once more, by the
	// codec, and that is all.
	applyLen := RawMessagesSize(1, msgs)
	size := protowire.SizeTag(1) + protowire.SizeVarint(id) + protowire.SizeTag(2) + protowire.SizeBytes(applyLen)
	var timeout uint64
	if dl, ok := ctx.Deadline(); ok {
		timeout = uint64(max(int64(time.Until(dl)), 1))
		size += protowire.SizeTag(9) + protowire.SizeVarint(timeout)
	}
	buf := GetFrameBuffer(size)
	b := *buf
	b = protowire.AppendTag(b, 1, protowire.VarintType) // id
	b = protowire.AppendVarint(b, id)
	b = protowire.AppendTag(b, 2, protowire.BytesType) // apply: an ApplyRequest
	b = protowire.AppendVarint(b, uint64(applyLen))
	b = AppendRawMessages(b, 1, msgs)
	if timeout > 0 {
		b = protowire.AppendTag(b, 9, protowire.VarintType) // timeout_nanos
		b = protowire.AppendVarint(b, timeout)
	}
	c.sendMu.Lock()
	err = c.stream.SendMsg(&RawFrame{B: b})
	c.sendMu.Unlock()
	if SentFrameReusable(len(b)) {
		*buf = b
		PutFrameBuffer(buf)
	}
	if err != nil {
		c.calls.fail(err)
	}
	return func(ctx context.Context) ([]int64, error) {
		select {
		case r := <-ch:
			if r.err != nil {
				return nil, r.err
			}
			if r.v.Error != nil {
				return nil, ErrorFromProto(r.v.Error)
			}
			return r.v.GetApply().GetOffsets(), nil
		case <-ctx.Done():
			c.calls.drop(id)
			return nil, ctx.Err()
		}
	}, nil
}

var _ RawApplier = (*replicaCoreClient)(nil)

// compile-time check that the raw request carries what serveOrdered needs.
var _ interface{ GetTimeoutNanos() int64 } = (*rawReplicateRequest)(nil)
