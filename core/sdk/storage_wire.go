package sdk

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferrymq/ferry/core/ring"
)

// WireReader is an optional capability of a Storage: reading messages in
// the wire form the store keeps them in, so that the plugin's side of the
// ring data plane writes them into the answer as they are instead of
// decoding them and encoding them again (a store on files holds each
// message's protobuf encoding already).
//
// ReadWire is Read, except that the answer's messages are msgs, in order,
// and resp.Messages is empty. Each WireMessage is one Message: its Wire
// bytes, then its queue, offset and time of storing, which win over any
// value Wire holds (protobuf's rule: the last value of a field counts). The
// core checks each message as it checks every answer a plugin sends
// (MessageWire): only Message's own fields, strings in UTF-8. A store may
// return messages whose Wire lacks the queue, offset or time, or holds
// stale values of them.
//
// The SDK uses ReadWire on the ring data plane while the plugin process does
// not trace (a sampled read's spans need the messages decoded); Read
// otherwise, and over gRPC.
type WireReader interface {
	ReadWire(ctx context.Context, req *ReadRequest) (resp *ReadResponse, msgs []WireMessage, err error)
}

// WireMessage is one message in its wire form (WireReader).
type WireMessage struct {
	Wire   []byte // a Message's protobuf encoding
	Queue  int32  // written after Wire
	Offset int64  // written after Wire
	Stored int64  // stored_unix_nano, written after Wire
}

// Size is the encoded size of m as a Message.
func (m WireMessage) Size() int {
	return len(m.Wire) +
		protowire.SizeTag(messageQueue) + protowire.SizeVarint(uint64(int64(m.Queue))) +
		protowire.SizeTag(messageOffset) + protowire.SizeVarint(uint64(m.Offset)) +
		protowire.SizeTag(messageStored) + protowire.SizeVarint(uint64(m.Stored))
}

// AppendTo appends m to b, encoded as a Message (what a reader decodes).
func (m WireMessage) AppendTo(b []byte) []byte {
	b = append(b, m.Wire...)
	b = protowire.AppendTag(b, messageQueue, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(int64(m.Queue)))
	b = protowire.AppendTag(b, messageOffset, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(m.Offset))
	b = protowire.AppendTag(b, messageStored, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(m.Stored))
}

// wireRead is a read answer whose messages are in their wire form.
type wireRead struct {
	resp *ReadResponse
	msgs []WireMessage
}

func (w wireRead) size() int {
	n := w.resp.SizeVT()
	for _, m := range w.msgs {
		n += protowire.SizeTag(readMessages) + protowire.SizeBytes(m.Size())
	}
	return n
}

// put encodes the answer into b, of exactly size bytes: resp, then each
// message as a record of ReadResponse.messages.
func (w wireRead) put(b []byte) error {
	rs := w.resp.SizeVT()
	if len(b) < rs {
		return fmt.Errorf("%w: encode read answer: %d bytes of room for %d", ErrInvalidArgument, len(b), rs)
	}
	if n, err := w.resp.MarshalToSizedBufferVT(b[:rs]); err != nil || n != rs {
		return fmt.Errorf("%w: encode read answer: %d of %d bytes: %v", ErrInvalidArgument, n, rs, err)
	}
	out := b[:rs:len(b)] // an encoding longer than size moves, and fails below
	for _, m := range w.msgs {
		out = protowire.AppendTag(out, readMessages, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(m.Size()))
		out = m.AppendTo(out)
	}
	if len(out) != len(b) || len(b) > 0 && &out[0] != &b[0] {
		return fmt.Errorf("%w: encode read answer: %d bytes of %d", ErrInvalidArgument, len(out), len(b))
	}
	return nil
}

// writeWireRead writes a read answer with messages in their wire form to c
// as one frame of kind KindRead: encoded in the ring itself when it fits
// one record, else in a pooled buffer copied in.
func writeWireRead(c *ring.Conn, id uint64, w wireRead) error {
	size := w.size()
	if size <= c.MaxInPlace() {
		return c.WriteFunc(KindRead, id, size, w.put)
	}
	buf := sharedBufferPool.Get(size)
	defer sharedBufferPool.Put(buf)
	b := (*buf)[:size]
	if err := w.put(b); err != nil {
		return err
	}
	return c.Write(KindRead, id, b)
}
