package sdk

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Applies in wire form: a master–slave slave's plugin receives its master's
// messages encoded (a FollowResponse on the link) and hands them to its
// core encoded again; keeping them in their wire form on the way through
// the plugin saves it a decode and an encode of every message (the core
// decodes and checks them, as any Apply).

// EncodedApplier is what the ReplicaCore a replication plugin's Serve gets
// has when the broker is in another process (the ring data plane or the
// Connect stream): ApplyEncoded is Apply, except that the messages are in
// their wire form, records of ApplyRequest.messages (field 1, as
// FollowResponse.messages is: SplitMessageRecords keeps them so), sent to
// the core as they are. The core decodes and checks them as it checks any
// Apply; a record that does not decode as a Message fails the call. A core
// linked into the plugin's process has no EncodedApplier: decode the
// messages (EncodedMessages.Decode) and Apply them.
type EncodedApplier interface {
	ApplyEncoded(ctx context.Context, msgs EncodedMessages) (ApplyWait, error)
}

var _ EncodedApplier = (*replicaCoreClient)(nil)

// applyMessages is ApplyRequest.messages' field number, the one
// ApplyEncoded's records must have.
const applyMessages protowire.Number = 1

// ApplyEncoded implements EncodedApplier.
func (c *replicaCoreClient) ApplyEncoded(ctx context.Context, msgs EncodedMessages) (ApplyWait, error) {
	if err := msgs.checkRecords(applyMessages); err != nil {
		return nil, err
	}
	req := &ferryv1.ApplyRequest{LogDurable: LogDurable(ctx)}
	// Written out by the frame's encoder as they are (vtprotobuf and
	// protobuf-go both write unknown fields verbatim): the core reads them
	// as ApplyRequest.messages.
	req.ProtoReflect().SetUnknown(protoreflect.RawFields(msgs.Records))
	wait, err := c.start(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_Apply{Apply: req}})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]int64, error) {
		f, err := wait(ctx)
		if err != nil {
			return nil, err
		}
		return f.GetApply().GetOffsets(), nil
	}, nil
}

// checkRecords checks that m.Records are m.N length-delimited records of
// field num and nothing else (the messages inside are the core's to check).
func (m EncodedMessages) checkRecords(num protowire.Number) error {
	n := 0
	for b := m.Records; len(b) > 0; n++ {
		got, typ, k := protowire.ConsumeTag(b)
		if k < 0 || got != num || typ != protowire.BytesType {
			return fmt.Errorf("%w: encoded messages: record %d is not field %d of wire type bytes", ErrInvalidArgument, n, num)
		}
		b = b[k:]
		if k = protowire.ConsumeFieldValue(got, typ, b); k < 0 {
			return fmt.Errorf("%w: encoded messages: record %d is cut short", ErrInvalidArgument, n)
		}
		b = b[k:]
	}
	if n != m.N {
		return fmt.Errorf("%w: encoded messages: %d records, but N says %d", ErrInvalidArgument, n, m.N)
	}
	return nil
}

// SplitMessageRecords splits the wire form b of a message whose field num
// is `repeated Message` (FollowResponse.messages, say): the records of that
// field are returned as msgs, in order, and every other field in rest, for
// the caller to decode as the message with those records left out. When
// the records come first and one after the other (as every encoder of
// Ferry's writes them) msgs and rest alias b, with no copy; else they are
// copied. The caller must own b. The messages inside the records are not
// checked here: the core that gets them decodes and checks each one
// (EncodedApplier), and Positions reads what it needs defensively.
func SplitMessageRecords(b []byte, num protowire.Number) (msgs EncodedMessages, rest []byte, err error) {
	end := -1 // b[:end] holds every record, and nothing else, while they come first
	at := 0
	for at < len(b) {
		got, typ, n := protowire.ConsumeTag(b[at:])
		if n < 0 {
			return EncodedMessages{}, nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(got, typ, b[at+n:])
		if m < 0 {
			return EncodedMessages{}, nil, protowire.ParseError(m)
		}
		if got == num {
			if typ != protowire.BytesType {
				return EncodedMessages{}, nil, fmt.Errorf("field %d: wire type %d, want bytes (a Message)", num, typ)
			}
			msgs.N++
			if end == at || at == 0 {
				end = at + n + m
			} else {
				end = -2 // a record after another field: copy below
			}
		}
		at += n + m
	}
	switch {
	case msgs.N == 0:
		return EncodedMessages{}, b, nil
	case end >= 0:
		msgs.Records = b[:end:end]
		return msgs, b[end:], nil
	}
	for at := 0; at < len(b); {
		got, typ, n := protowire.ConsumeTag(b[at:])
		m := protowire.ConsumeFieldValue(got, typ, b[at+n:])
		if got == num {
			msgs.Records = append(msgs.Records, b[at:at+n+m]...)
		} else {
			rest = append(rest, b[at:at+n+m]...)
		}
		at += n + m
	}
	return msgs, rest, nil
}

// MessagePosition is where a message in wire form says it is stored.
type MessagePosition struct {
	Topic  string
	Queue  int32
	Offset int64
}

// Positions reads each message's topic, queue and offset from its wire
// form, in order, without decoding the rest (the last value of a field
// counts, as in a decode). Topics equal to the one before share its string.
func (m EncodedMessages) Positions() ([]MessagePosition, error) {
	out := make([]MessagePosition, 0, m.N)
	prev := ""
	for r := m.Records; len(r) > 0; {
		_, _, n := protowire.ConsumeTag(r)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		r = r[n:]
		v, n := protowire.ConsumeBytes(r)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		r = r[n:]
		var p MessagePosition
		var topic []byte
		for len(v) > 0 {
			num, typ, k := protowire.ConsumeTag(v)
			if k < 0 {
				return nil, protowire.ParseError(k)
			}
			v = v[k:]
			switch {
			case num == messageTopic && typ == protowire.BytesType:
				s, k := protowire.ConsumeBytes(v)
				if k < 0 {
					return nil, protowire.ParseError(k)
				}
				topic, v = s, v[k:]
				continue
			case (num == messageQueue || num == messageOffset) && typ == protowire.VarintType:
				x, k := protowire.ConsumeVarint(v)
				if k < 0 {
					return nil, protowire.ParseError(k)
				}
				if num == messageQueue {
					p.Queue = int32(x)
				} else {
					p.Offset = int64(x)
				}
				v = v[k:]
				continue
			}
			k = protowire.ConsumeFieldValue(num, typ, v)
			if k < 0 {
				return nil, protowire.ParseError(k)
			}
			v = v[k:]
		}
		if string(topic) != prev { // no allocation for the comparison
			prev = string(topic)
		}
		p.Topic = prev
		out = append(out, p)
	}
	return out, nil
}
