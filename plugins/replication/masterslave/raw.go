package masterslave

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// The link carries batches as the messages' encodings (sdk.RawMessage), as
// the master's broker sent them: neither side decodes a message. The wire is
// ferry.v1.FollowResponse all the same.

// encodeFollow encodes a FollowResponse whose messages are msgs and whose
// other fields are those of rest (nil: none), into a pooled buffer: see
// sendFollow.
func encodeFollow(msgs []sdk.RawMessage, rest *ferryv1.FollowResponse) (*sdk.RawFrame, *[]byte, error) {
	var tail []byte
	if rest != nil {
		var err error
		if tail, err = proto.Marshal(rest); err != nil {
			return nil, nil, err
		}
	}
	buf := sdk.GetFrameBuffer(sdk.RawMessagesSize(1, msgs) + len(tail))
	b := sdk.AppendRawMessages(*buf, 1, msgs)
	*buf = append(b, tail...)
	return &sdk.RawFrame{B: *buf}, buf, nil
}

// sendFollow sends a FollowResponse (encodeFollow) and reuses its buffer
// when the codec copied it.
func sendFollow(send func(any) error, msgs []sdk.RawMessage, rest *ferryv1.FollowResponse) error {
	f, buf, err := encodeFollow(msgs, rest)
	if err != nil {
		return err
	}
	err = send(f)
	if sdk.SentFrameReusable(len(f.B)) {
		sdk.PutFrameBuffer(buf)
	}
	return err
}

// rawFollow is a received FollowResponse: its messages left encoded, the
// other fields decoded into rest.
type rawFollow struct {
	msgs []sdk.RawMessage
	rest ferryv1.FollowResponse
	buf  *[]byte // what msgs point into, from the frame pool: see release
}

// release returns the frame's buffer to the pool once its messages were
// copied (applied); msgs must not be used afterwards.
func (r *rawFollow) release() {
	if r.buf != nil {
		sdk.PutFrameBuffer(r.buf)
		r.buf, r.msgs = nil, nil
	}
}

func (r *rawFollow) Reset()         { *r = rawFollow{} }
func (r *rawFollow) String() string { return "raw FollowResponse" }
func (r *rawFollow) ProtoMessage()  {}

var errFollowEncoding = errors.New("bad FollowResponse encoding")

// Unmarshal keeps one copy of in (the codec reuses its buffer), which the
// messages point into.
func (r *rawFollow) Unmarshal(in []byte) error {
	r.buf = sdk.GetFrameBuffer(len(in))
	*r.buf = append(*r.buf, in...)
	b := *r.buf
	r.msgs = make([]sdk.RawMessage, 0, len(b)/1024+1)
	var others []byte
	var last string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errFollowEncoding
		}
		field := b
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			e, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errFollowEncoding
			}
			b = b[n:]
			m, err := sdk.ParseRawMessage(e, &last)
			if err != nil {
				return err
			}
			r.msgs = append(r.msgs, m)
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errFollowEncoding
		}
		b = b[n:]
		others = append(others, field[:len(field)-len(b)]...)
	}
	if len(others) == 0 {
		return nil
	}
	return proto.Unmarshal(others, &r.rest)
}

// rawOf encodes messages (read back from storage, or given by an in-process
// caller).
func rawOf(msgs []*sdk.Message) ([]sdk.RawMessage, error) {
	out := make([]sdk.RawMessage, len(msgs))
	for i, m := range msgs {
		r, err := sdk.EncodeRawMessage(m)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// decodeAll decodes messages for a ReplicaCore that takes no encoded ones.
func decodeAll(raw []sdk.RawMessage) ([]*sdk.Message, error) {
	out := make([]*sdk.Message, len(raw))
	for i, r := range raw {
		m, err := r.Decode()
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}
