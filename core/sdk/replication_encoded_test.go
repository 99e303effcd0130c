package sdk

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

func followSample() *ferryv1.FollowResponse {
	var msgs []*ferryv1.Message
	for i := range 5 {
		topic := "orders"
		if i == 3 {
			topic = "payments"
		}
		msgs = append(msgs, &ferryv1.Message{Id: fmt.Sprintf("id-%d", i), Topic: topic, Queue: int32(i % 2), Key: fmt.Sprintf("k%d", i),
			Headers: map[string]string{"h": "é", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			Body:    []byte(strings.Repeat("b", 10+i)), BornUnixNano: 7, Offset: int64(100 + i), StoredUnixNano: 9})
	}
	return &ferryv1.FollowResponse{Messages: msgs, MasterNode: "master", Epoch: 3,
		Ends:          []*ferryv1.QueueOffsets{{Topic: "orders", Queue: 1, End: 104}},
		Topics:        &ferryv1.TopicChange{Op: TopicSet},
		DeletedGroups: []string{"billing"}, TopicsVersion: 4}
}

// A slave's plugin keeps its master's messages in wire form and hands them
// to its core as they are: the frame the core receives decodes to an Apply
// of exactly the master's messages, every field kept, and the rest of the
// follow answer decodes as before.
func TestApplyEncodedForwardsTheMastersMessages(t *testing.T) {
	in := followSample()
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	msgs, rest, err := SplitMessageRecords(b, 1)
	if err != nil {
		t.Fatal(err)
	}
	if msgs.N != len(in.Messages) {
		t.Fatalf("split: %d messages, want %d", msgs.N, len(in.Messages))
	}
	others := &ferryv1.FollowResponse{}
	if err := unmarshalFrame(rest, others); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(in).(*ferryv1.FollowResponse)
	want.Messages = nil
	if !proto.Equal(others, want) {
		t.Errorf("the follow answer without its messages:\n got %v\nwant %v", others, want)
	}
	pos, err := msgs.Positions()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range in.Messages {
		if p := pos[i]; p != (MessagePosition{m.Topic, m.Queue, m.Offset}) {
			t.Errorf("position %d: %+v, want %s/%d@%d", i, p, m.Topic, m.Queue, m.Offset)
		}
	}

	var sent []byte
	c := &replicaCoreClient{calls: newPending[*ferryv1.ReplicaCoreFrame](), sendFrame: func(f *ferryv1.ReplicationFrame) error {
		var buf *[]byte
		sent, buf, err = encodeFrame(f)
		sent = append([]byte(nil), sent...)
		if buf != nil {
			sharedBufferPool.Put(buf)
		}
		return err
	}}
	if _, err := c.ApplyEncoded(WithLogDurable(context.Background()), msgs); err != nil {
		t.Fatal(err)
	}
	got := &ferryv1.ReplicationFrame{}
	if err := unmarshalFrame(sent, got); err != nil {
		t.Fatal(err)
	}
	a := got.GetApply()
	if a == nil || !a.LogDurable || len(a.Messages) != len(in.Messages) {
		t.Fatalf("the core got %v; want an apply of %d messages, log durable", got, len(in.Messages))
	}
	for i, m := range in.Messages {
		if !proto.Equal(a.Messages[i], m) {
			t.Errorf("message %d: the core got %v, the master sent %v", i, a.Messages[i], m)
		}
	}
}

// What is not a batch of records is refused, naming what is wrong, before
// anything is forwarded; a record that is not a Message is the core's to
// refuse (TestApplyEncodedMessageTheCoreRefuses).
func TestSplitMessageRecordsRefusesBadMessages(t *testing.T) {
	good, err := proto.Marshal(&ferryv1.FollowResponse{Messages: []*ferryv1.Message{{Id: "a", Topic: "orders"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := SplitMessageRecords(good, 1); err != nil {
		t.Fatalf("a sound answer: %v", err)
	}
	notBytes := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7)
	for name, b := range map[string][]byte{
		"field 1 not bytes": notBytes,
		"cut short":         good[:len(good)-1],
	} {
		if _, _, err := SplitMessageRecords(b, 1); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// ApplyEncoded takes only records of ApplyRequest.messages.
	c := &replicaCoreClient{calls: newPending[*ferryv1.ReplicaCoreFrame](), sendFrame: func(*ferryv1.ReplicationFrame) error {
		t.Error("a bad batch was sent to the core")
		return nil
	}}
	msgs, _, _ := SplitMessageRecords(good, 1)
	for name, m := range map[string]EncodedMessages{
		"another field":    {Records: protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), nil), N: 1},
		"a miscount":       {Records: msgs.Records, N: 2},
		"a record cut off": {Records: msgs.Records[:len(msgs.Records)-1], N: 1},
	} {
		if _, err := c.ApplyEncoded(context.Background(), m); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The plugin forwards records without checking the messages in them; the
// core's decode of the frame (unmarshalFrame, as ReplicationClient's ring
// reader and the Connect stream's codec do) refuses one that is not a valid
// Message, so its Apply fails instead of storing it.
func TestApplyEncodedMessageTheCoreRefuses(t *testing.T) {
	badTopic := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{0xff, 0xfe})
	records := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), badTopic)
	var sent []byte
	c := &replicaCoreClient{calls: newPending[*ferryv1.ReplicaCoreFrame](), sendFrame: func(f *ferryv1.ReplicationFrame) error {
		b, buf, err := encodeFrame(f)
		sent = append([]byte(nil), b...)
		if buf != nil {
			sharedBufferPool.Put(buf)
		}
		return err
	}}
	msgs, _, err := SplitMessageRecords(records, 1)
	if err != nil || msgs.N != 1 {
		t.Fatalf("split: %d records, %v", msgs.N, err)
	}
	if _, err := msgs.Positions(); err != nil {
		t.Fatalf("positions of a message with a bad topic: %v", err)
	}
	if _, err := c.ApplyEncoded(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if err := unmarshalFrame(sent, &ferryv1.ReplicationFrame{}); err == nil {
		t.Fatal("the core decoded an apply of a message whose topic is not UTF-8")
	} else {
		t.Log(err)
	}
}
