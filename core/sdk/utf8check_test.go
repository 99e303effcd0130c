package sdk

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// messageUTF8 and messagesUTF8 name Message's string fields one by one: a
// new one must be added there (and here).
func TestMessageUTF8CoversEveryStringField(t *testing.T) {
	known := map[string]bool{"id": true, "topic": true, "key": true, "headers": true}
	fields := (&ferryv1.Message{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		str := fd.Kind() == protoreflect.StringKind || fd.IsMap() && (fd.MapKey().Kind() == protoreflect.StringKind || fd.MapValue().Kind() == protoreflect.StringKind)
		if str && !known[string(fd.Name())] {
			t.Errorf("ferry.v1.Message.%s holds strings that messageUTF8 and messagesUTF8 neither check nor copy", fd.Name())
		}
	}
}

func produceFrame(n int) ([]byte, []*ferryv1.Message) {
	req := &ferryv1.ProduceRequest{Seq: 1}
	for i := range n {
		req.Messages = append(req.Messages, &ferryv1.Message{
			Id: fmt.Sprintf("p-%d", i), Topic: []string{"orders", "orders", "audit"}[i%3], Key: fmt.Sprintf("k%d", i%5),
			Body: []byte("body"), Headers: testHeaders(i),
		})
	}
	frame, err := req.MarshalVT()
	if err != nil {
		panic(err)
	}
	return frame, req.Messages
}

// testHeaders varies by i among a plain header, a traceparent alone (what
// every message of a traced pipeline carries) and both with a third.
func testHeaders(i int) map[string]string {
	tp := fmt.Sprintf("00-%032x-%016x-00", i+1, i+1)
	switch i % 3 {
	case 0:
		return map[string]string{"h": fmt.Sprint(i)}
	case 1:
		return map[string]string{"traceparent": tp}
	}
	return map[string]string{"h": fmt.Sprint(i), "traceparent": tp, "x": "y"}
}

// A frame's messages decoded by the fast decoder alias the frame; after the
// check their ids, topics, keys and headers are their own: the frame can be
// overwritten and they stay. The negative control: without the check they
// change with the frame.
func TestMessagesUTF8OwnsStrings(t *testing.T) {
	frame, want := produceFrame(50)
	checked, raw := &ferryv1.ProduceRequest{}, &ferryv1.ProduceRequest{}
	if err := checked.UnmarshalVTUnsafe(frame); err != nil {
		t.Fatal(err)
	}
	if err := checkUTF8(checked.ProtoReflect()); err != nil {
		t.Fatal(err)
	}
	frame2 := append([]byte(nil), frame...)
	if err := raw.UnmarshalVTUnsafe(frame2); err != nil {
		t.Fatal(err)
	}
	for i := range frame {
		frame[i], frame2[i] = 'X', 'X'
	}
	for i, m := range checked.Messages {
		w := want[i]
		// maps.Equal reads m's keys too: a key left aliasing the frame
		// reads "XX…" and is not found in w.
		if m.Id != w.Id || m.Topic != w.Topic || m.Key != w.Key || !maps.Equal(m.Headers, w.Headers) {
			t.Fatalf("message %d after the frame was overwritten: %q %q %q %v; want %q %q %q %v", i, m.Id, m.Topic, m.Key, m.Headers, w.Id, w.Topic, w.Key, w.Headers)
		}
	}
	if raw.Messages[0].Id == want[0].Id || maps.Equal(raw.Messages[1].Headers, want[1].Headers) {
		t.Fatal("the unchecked decode did not alias its frame: this test proves nothing")
	}
}

// The ids, topics, keys and headers of a frame take one allocation, not
// one each, nor a map a message.
func TestMessagesUTF8Allocations(t *testing.T) {
	frame, _ := produceFrame(100)
	var req ferryv1.ProduceRequest
	if err := req.UnmarshalVTUnsafe(frame); err != nil {
		t.Fatal(err)
	}
	ms := req.Messages
	allocs := testing.AllocsPerRun(20, func() {
		if err := messagesUTF8(ms); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("%v allocations for 100 messages, want 1", allocs)
	}
}

// A bad string anywhere in a frame's messages is refused, naming the field.
func TestMessagesUTF8Refuses(t *testing.T) {
	for _, field := range []string{"id", "topic", "key", "headers"} {
		_, ms := produceFrame(3)
		bad := string([]byte{0xff, 'x'})
		switch field {
		case "id":
			ms[2].Id = bad
		case "topic":
			ms[2].Topic = bad
		case "key":
			ms[2].Key = bad
		case "headers":
			ms[2].Headers = map[string]string{"h": bad}
		}
		err := checkUTF8((&ferryv1.ProduceRequest{Messages: ms}).ProtoReflect())
		if err == nil || !strings.Contains(err.Error(), "ferry.v1.Message."+field) {
			t.Errorf("bad %s: %v", field, err)
		}
	}
}
