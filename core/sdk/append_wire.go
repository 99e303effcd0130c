package sdk

import (
	"context"
	"fmt"
	"sync/atomic"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
)

// Produced messages in their wire form, from the transport's ring to the
// store's write buffer.
//
// On the ring data plane a produce request reaches the core as the bytes the
// transport forwarded. The core decodes it (its checks and routing need the
// fields; the decoding checks the bytes) but keeps each message's encoding
// beside it (MessageWires); when
// the batch goes on to the store, the core writes those bytes into the
// store's ring as they are, followed by the fields the broker sets (queue,
// born_unix_nano: protobuf's last value of a field counts), instead of
// encoding each message again. The store's side of the ring hands a store
// that can take them (WireAppender) each message's encoding, checked
// (MessageWire), without decoding it; the file store copies it into its
// record. The frame is an ordinary AppendRequest either way: a plugin that
// decodes it sees the same messages.

// wireAppendsSent and wireAppendsTaken count append frames written with
// messages from their wire form (the core's side), and taken with messages
// in their wire form by a WireAppender (the store's side).
var wireAppendsSent, wireAppendsTaken atomic.Uint64

// WireAppendCounts returns how many append frames this process wrote into a
// store's ring from its messages' wire forms (the core's side), and how many
// it handed to a store in their wire form (WireAppender; the store's side).
func WireAppendCounts() (sent, taken uint64) {
	return wireAppendsSent.Load(), wireAppendsTaken.Load()
}

// MessageWires are the wire forms of a batch's messages: w[i] is the
// encoding (a Message) that msgs[i] was decoded from, or nil when msgs[i]
// has none. Whoever holds both must not
// change a message's fields other than its queue and born_unix_nano while
// its encoding travels with it (the core writes those two after it).
type MessageWires [][]byte

type messageWiresKey struct{}

type messageWires struct {
	msgs  []*Message
	wires MessageWires
}

// WithMessageWires returns ctx carrying w, the wire forms of msgs (len(w)
// must be len(msgs); else ctx is returned as it is).
func WithMessageWires(ctx context.Context, msgs []*Message, w MessageWires) context.Context {
	if w == nil || len(w) != len(msgs) {
		return ctx
	}
	return context.WithValue(ctx, messageWiresKey{}, messageWires{msgs, w})
}

// MessageWiresOf returns the wire forms WithMessageWires put in ctx if they
// are those of msgs (the same messages, in the same order), else nil.
func MessageWiresOf(ctx context.Context, msgs []*Message) MessageWires {
	mw, _ := ctx.Value(messageWiresKey{}).(messageWires)
	if len(mw.msgs) != len(msgs) || len(msgs) == 0 {
		return nil
	}
	for i, m := range msgs {
		if mw.msgs[i] != m {
			return nil
		}
	}
	return mw.wires
}

// Field numbers of the frames the wire forms are read from and written to.
const (
	transportFrameProduce  protowire.Number = 2 // TransportFrame.produce
	produceRequestMessages protowire.Number = 2 // ProduceRequest.messages
	appendRequestMessages  protowire.Number = 2 // AppendRequest.messages
)

// produceWires returns the wire form of each of the n messages of the
// produce request in TransportFrame frame p, which decoded to them already
// (its decoding checked them: structure, strings in UTF-8), or nil when there
// are not exactly n or the frame holds its produce request in more than one
// piece (which a decoder merges). A message's fields that Message lacks stay
// in its wire form, as the decoded message keeps them as unknown fields and
// encoding it writes them out: the store gets them either way.
func produceWires(p []byte, n int) MessageWires {
	var req []byte
	seen := false
	for len(p) > 0 {
		num, typ, tl := protowire.ConsumeTag(p)
		if tl < 0 {
			return nil
		}
		vl := protowire.ConsumeFieldValue(num, typ, p[tl:])
		if vl < 0 {
			return nil
		}
		if num == transportFrameProduce {
			if typ != protowire.BytesType || seen {
				return nil
			}
			req, _ = protowire.ConsumeBytes(p[tl : tl+vl])
			seen = true
		}
		p = p[tl+vl:]
	}
	wires := make(MessageWires, 0, n)
	for len(req) > 0 {
		num, typ, l := protowire.ConsumeTag(req)
		if l < 0 {
			return nil
		}
		req = req[l:]
		if num == produceRequestMessages {
			if typ != protowire.BytesType || len(wires) == n {
				return nil
			}
			v, l := protowire.ConsumeBytes(req)
			if l < 0 {
				return nil
			}
			wires = append(wires, v)
			req = req[l:]
			continue
		}
		if l = protowire.ConsumeFieldValue(num, typ, req); l < 0 {
			return nil
		}
		req = req[l:]
	}
	if len(wires) != n {
		return nil
	}
	return wires
}

// appendFrame is an AppendRequest whose messages with a wire form are
// written from it (with their queue and born_unix_nano after it), the others
// encoded.
type appendFrame struct {
	req   *ferryv1.AppendRequest
	wires MessageWires // len(req.Messages), or nil
}

// wireOverrides is the size of what follows a message's wire form.
func wireOverrides(m *ferryv1.Message) int {
	return protowire.SizeTag(messageQueue) + protowire.SizeVarint(uint64(int64(m.Queue))) +
		protowire.SizeTag(messageBorn) + protowire.SizeVarint(uint64(m.BornUnixNano))
}

func (f appendFrame) messageSize(i int) int {
	if w := f.wires[i]; w != nil {
		return len(w) + wireOverrides(f.req.Messages[i])
	}
	return f.req.Messages[i].SizeVT()
}

// size is the frame's encoded size, and that of the request without its
// messages.
func (f appendFrame) size() (size, base int) {
	msgs := f.req.Messages
	f.req.Messages = nil // the request's other fields, encoded by their generated code
	base = f.req.SizeVT()
	f.req.Messages = msgs
	size = base
	for i := range msgs {
		n := f.messageSize(i)
		size += protowire.SizeTag(appendRequestMessages) + protowire.SizeBytes(n)
	}
	return size, base
}

// put encodes the frame into b, of exactly the size size returned: the
// messages first, then the request's other fields (protobuf takes fields in
// any order).
func (f appendFrame) put(b []byte, base int) error {
	out := b[:0]
	for i, m := range f.req.Messages {
		n := f.messageSize(i)
		out = protowire.AppendTag(out, appendRequestMessages, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(n))
		if w := f.wires[i]; w != nil {
			out = append(out, w...)
			out = protowire.AppendTag(out, messageQueue, protowire.VarintType)
			out = protowire.AppendVarint(out, uint64(int64(m.Queue)))
			out = protowire.AppendTag(out, messageBorn, protowire.VarintType)
			out = protowire.AppendVarint(out, uint64(m.BornUnixNano))
			continue
		}
		at := len(out)
		if at+n > len(b) {
			break // reported below
		}
		out = out[:at+n]
		if k, err := m.MarshalToSizedBufferVT(out[at:]); err != nil || k != n {
			return fmt.Errorf("%w: encode append frame: message %d: %d of %d bytes: %v", ErrInvalidArgument, i, k, n, err)
		}
	}
	if len(out)+base != len(b) || len(out) > 0 && &out[0] != &b[0] {
		return fmt.Errorf("%w: encode append frame: %d bytes of %d", ErrInvalidArgument, len(out)+base, len(b))
	}
	msgs := f.req.Messages
	f.req.Messages = nil
	k, err := f.req.MarshalToSizedBufferVT(b[len(out):])
	f.req.Messages = msgs
	if err != nil || k != base {
		return fmt.Errorf("%w: encode append frame: %d of %d bytes: %v", ErrInvalidArgument, k, base, err)
	}
	return nil
}

// writeAppendFrame writes f to c as one frame of kind KindAppend: encoded in
// the ring itself when it fits one record, else in a pooled buffer copied
// in.
func writeAppendFrame(c *ring.Conn, f appendFrame) error {
	size, base := f.size()
	if size <= c.MaxInPlace() {
		return c.WriteFunc(KindAppend, f.req.Seq, size, func(b []byte) error { return f.put(b, base) })
	}
	buf := sharedBufferPool.Get(size)
	defer sharedBufferPool.Put(buf)
	b := (*buf)[:size]
	if err := f.put(b, base); err != nil {
		return err
	}
	return c.Write(KindAppend, f.req.Seq, b)
}

// WireAppender is an optional capability of a Storage: taking an append's
// messages in their wire form, as the ring data plane carries them, instead
// of decoded (a store that keeps each message's protobuf encoding stores
// the bytes it is given).
//
// AppendWire is AppendEarly (sdk.EarlyOffsets) of the messages msgs
// describe, in order: the same checks, offsets, de-duplication by id and
// answers. Each WireAppend's Wire is one Message's encoding, checked by
// MessageWire (Message's own fields, each of its wire type, strings in
// UTF-8); its Info says what a decoder would read of its id, topic and
// queue. The slice msgs (the SDK reuses it), Wire, Info.ID and Info.Topic
// are valid only during the call: a store copies what it keeps. Wire may hold a field more than once (the last
// value counts) and may hold offset and stored_unix_nano, which the store
// sets on read as it does for a decoded message.
//
// The SDK calls AppendWire on the ring data plane while the plugin process
// does not trace (a traced append's spans need the messages decoded), and
// for an append whose messages all pass MessageWire; Append or AppendEarly
// otherwise.
type WireAppender interface {
	AppendWire(ctx context.Context, msgs []WireAppend) (AppendWritten, AppendWait, error)
}

// WireAppend is one message of an AppendWire.
type WireAppend struct {
	Wire []byte
	Info WireInfo
}

// splitAppend decodes AppendRequest frame p except for its messages, which
// it returns in their wire form, checked (MessageWire). ok is false when a
// message fails the check (it holds a field Message does not have, for
// one): the frame is then to be decoded in full. An error says p does not
// decode.
func splitAppend(p []byte) (req *ferryv1.AppendRequest, msgs []WireAppend, ok bool, err error) {
	return splitAppendInto(p, nil)
}

// splitAppendInto is splitAppend appending the messages to msgs (a slice
// to reuse: the store's side of the ring keeps one for the frames it
// reads, as AppendWire's messages are valid only during the call).
func splitAppendInto(p []byte, msgs []WireAppend) (req *ferryv1.AppendRequest, _ []WireAppend, ok bool, err error) {
	var rest []byte // the other fields, decoded by the generated code
	for b := p; len(b) > 0; {
		num, typ, tl := protowire.ConsumeTag(b)
		if tl < 0 {
			return nil, nil, false, fmt.Errorf("%w: append request: bad field tag", ErrInvalidArgument)
		}
		vl := protowire.ConsumeFieldValue(num, typ, b[tl:])
		if vl < 0 {
			return nil, nil, false, fmt.Errorf("%w: append request: field %d does not decode", ErrInvalidArgument, num)
		}
		field, value := b[:tl+vl], b[tl:tl+vl]
		b = b[tl+vl:]
		if num != appendRequestMessages {
			rest = append(rest, field...)
			continue
		}
		if typ != protowire.BytesType {
			return nil, nil, false, fmt.Errorf("%w: append request: messages of wire type %d", ErrInvalidArgument, typ)
		}
		v, _ := protowire.ConsumeBytes(value)
		info, good := MessageWire(v)
		if !good {
			return nil, nil, false, nil
		}
		msgs = append(msgs, WireAppend{Wire: v, Info: info})
	}
	req = &ferryv1.AppendRequest{}
	if err := unmarshalFrame(rest, req); err != nil {
		return nil, nil, false, fmt.Errorf("%w: append request: %v", ErrInvalidArgument, err)
	}
	return req, msgs, true, nil
}

// wireMismatches counts append frames whose wire forms did not all match
// their messages (checkWires): the frame was written encoded instead.
var wireMismatches atomic.Uint64

// WireMismatches returns how many appends this process found with a wire
// form that is not its message's (checkWires).
func WireMismatches() uint64 { return wireMismatches.Load() }

// checkWires reports whether each wire form of w is that of its message of
// msgs: the same id and topic, and for a message without an id the same
// body (the queue and born_unix_nano are the core's to set, and written
// after the wire form). A mismatch is a bug of whoever paired them; the
// error says which message. Cheap: an encoder writes the id and topic
// first (fields 1 and 2), and the scan stops once it has both.
func checkWires(msgs []*Message, w MessageWires) error {
	for i, b := range w {
		if b == nil {
			continue
		}
		m := msgs[i]
		var id, topic, body []byte
		seen := 0 // of id and topic
		for p := b; len(p) > 0 && (seen != 3 || m.Id == ""); {
			num, typ, n := protowire.ConsumeTag(p)
			if n < 0 {
				return fmt.Errorf("message %d of %d (id %q): its wire form does not decode", i, len(msgs), m.Id)
			}
			p = p[n:]
			vl := protowire.ConsumeFieldValue(num, typ, p)
			if vl < 0 {
				return fmt.Errorf("message %d of %d (id %q): its wire form does not decode", i, len(msgs), m.Id)
			}
			if typ == protowire.BytesType {
				switch num {
				case messageID:
					id, _ = protowire.ConsumeBytes(p)
					seen |= 1
				case messageTopic:
					topic, _ = protowire.ConsumeBytes(p)
					seen |= 2
				case messageBody:
					body, _ = protowire.ConsumeBytes(p)
				}
			}
			p = p[vl:]
		}
		if string(id) != m.Id || string(topic) != m.Topic || m.Id == "" && string(body) != string(m.Body) {
			return fmt.Errorf("message %d of %d: its wire form is of id %q topic %q, the message's are %q and %q",
				i, len(msgs), id, topic, m.Id, m.Topic)
		}
	}
	return nil
}
