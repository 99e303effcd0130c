package raft

import (
	"encoding/json"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// A snapshot carries each topic's own settings, through its JSON, to the
// topic set a restoring follower applies; a topic without settings has
// none after the round trip; and a topic change entry keeps them.
func TestSnapshotTopicsKeepSettings(t *testing.T) {
	in := []*sdk.ReplicatedTopic{
		{Name: "logs", Queues: 2, Settings: &sdk.TopicSettings{RetentionBytes: 4096, RetentionAgeNanos: 7, MaxMessageBytes: 100}},
		{Name: "orders", Queues: 4},
	}
	data, err := json.Marshal(&snapshot{Topics: snapTopics(in)})
	if err != nil {
		t.Fatal(err)
	}
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	got := map[string]*sdk.TopicSettings{}
	for _, st := range s.Topics {
		got[st.Name] = st.settings()
	}
	if l := got["logs"]; l.GetRetentionBytes() != 4096 || l.GetRetentionAgeNanos() != 7 || l.GetMaxMessageBytes() != 100 {
		t.Errorf("logs after a snapshot round trip: %v (%s)", l, data)
	}
	if o, ok := got["orders"]; !ok || o != nil {
		t.Errorf("orders after a snapshot round trip: %v, %v; want listed, without settings", o, ok)
	}

	entry, err := encodeTopics(&sdk.TopicChange{Op: sdk.TopicAlter, Name: "logs", Queues: 2, Settings: in[0].Settings})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := decodeTopics(entry[2:])
	if err != nil {
		t.Fatal(err)
	}
	if ch.GetSettings().GetMaxMessageBytes() != 100 {
		t.Errorf("a topic change entry decodes to %v", ch)
	}
}
