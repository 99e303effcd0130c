package file

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

func topicMsg(topic string, i int) *sdk.Message {
	return &sdk.Message{Id: fmt.Sprintf("%s-%d", topic, i), Topic: topic, Body: []byte(strings.Repeat("x", 200))}
}

func queueRange(t *testing.T, s *Store, topic string) (start, end, bytes int64) {
	t.Helper()
	o, err := s.GetOffsets(ctx(t), "", []*sdk.QueueRef{{Topic: topic}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.QueueBytes(ctx(t), []*sdk.QueueRef{{Topic: topic}})
	if err != nil {
		t.Fatal(err)
	}
	return o[0].Start, o[0].End, b[0]
}

// A topic's own retention_bytes (sdk.TopicRetainer) drops that topic's
// oldest messages, in whole segments, until each of its queues holds at
// most that; the segments no queue reads from then go, while the newer
// messages and another topic's stay readable; the retention is kept across
// a restart.
func TestTopicRetentionBytesDropsOldSegments(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB"}`
	s := openStore(t, dataDir, config)
	first := segments(t, dataDir)[0]
	if err := s.SetTopicRetention(ctx(t), []*sdk.TopicRetention{{Topic: "big", RetentionBytes: 4 << 10}}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		appendWait(t, s, topicMsg("big", i))
	}
	for i := range 5 {
		appendWait(t, s, topicMsg("keep", i))
	}
	for i := 100; i < 200; i++ {
		appendWait(t, s, topicMsg("big", i))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		start, end, bytes := queueRange(t, s, "big")
		_, ferr := os.Stat(first)
		if start > 100 && end == 200 && bytes <= 4<<10 && os.IsNotExist(ferr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("big is %d..%d with %d bytes, first segment %s: %v; want its start past 100, at most 4KiB, the first segment gone", start, end, bytes, first, ferr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start, _, _ := queueRange(t, s, "big")
	resp, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "big", Offset: 0, MaxMessages: 1000})
	if err != nil || len(resp.Messages) == 0 || resp.Messages[0].Offset != start || resp.Messages[len(resp.Messages)-1].Id != "big-199" {
		t.Fatalf("read of big from 0: %v, %d messages; want from its start %d to big-199", err, len(resp.Messages), start)
	}
	keep, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "keep", Offset: 0, MaxMessages: 1000})
	if err != nil || len(keep.Messages) != 5 {
		t.Fatalf("keep (no retention of its own): %v, %d messages, want all 5", err, len(keep.Messages))
	}

	// Kept across a restart: more of big is trimmed again.
	_ = s.Close()
	s = openStore(t, dataDir, config)
	if st, _, _ := queueRange(t, s, "big"); st != start {
		t.Fatalf("after a restart big starts at %d, want %d", st, start)
	}
	for i := 200; i < 300; i++ {
		appendWait(t, s, topicMsg("big", i))
	}
	for {
		st, end, bytes := queueRange(t, s, "big")
		if st > 200 && end == 300 && bytes <= 4<<10 {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("after a restart big is %d..%d with %d bytes; want its own retention still applied", st, end, bytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if keep, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "keep", Offset: 0, MaxMessages: 1000}); err != nil || len(keep.Messages) != 5 {
		t.Fatalf("keep after a restart: %v, %d messages, want all 5", err, len(keep.Messages))
	}
}

// A topic's own retention_age drops its messages in segments whose newest
// message is older; an empty set takes it away again.
func TestTopicRetentionAge(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	for i := range 60 {
		appendWait(t, s, topicMsg("old", i))
	}
	if err := s.SetTopicRetention(ctx(t), []*sdk.TopicRetention{{Topic: "old", RetentionAgeNanos: int64(time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The kick and the janitor's timer both start passes.
		if st, _, _ := queueRange(t, s, "old"); st > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("old's messages kept past its retention_age of 1ms")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.SetTopicRetention(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if rets := s.topicRetentions(); len(rets) != 0 {
		t.Fatalf("after an empty set the store keeps %v", rets)
	}
	if err := s.SetTopicRetention(ctx(t), []*sdk.TopicRetention{{Topic: "old", RetentionBytes: -1}}); err == nil {
		t.Fatal("a negative retention was taken")
	}
}
