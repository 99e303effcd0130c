package broker

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

func topicSettings(t *testing.T, b *Broker, name string) *sdk.TopicSettings {
	t.Helper()
	resp, err := b.Metadata(context.Background(), &sdk.MetadataRequest{Topics: []string{name}})
	if err != nil || len(resp.Topics) != 1 {
		t.Fatalf("metadata of %s: %v %v", name, resp, err)
	}
	return resp.Topics[0].Settings
}

// The pipeline's topic settings are the declared baseline: taken when the
// topic is created from it or the node holds none; a setting the pipeline
// leaves out keeps the node's; one declared with another value than the
// node holds stops the start, naming the topic, the setting and both
// values, and changes nothing.
func TestOpenTopicsSettingsBaseline(t *testing.T) {
	dir := t.TempDir()
	declared := func(max int64) Topic {
		return Topic{Name: "logs", Queues: 1, Settings: &sdk.TopicSettings{MaxMessageBytes: max}}
	}
	b, err := openTopics(t, dir, declared(1024))
	if err != nil {
		t.Fatal(err)
	}
	if s := topicSettings(t, b, "logs"); s.GetMaxMessageBytes() != 1024 {
		t.Fatalf("a topic created from the pipeline has settings %v, want max_message_bytes 1024", s)
	}
	// Left out: kept.
	if b, err = openTopics(t, dir, Topic{Name: "logs", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	if s := topicSettings(t, b, "logs"); s.GetMaxMessageBytes() != 1024 {
		t.Fatalf("a pipeline leaving max_message_bytes out: %v, want the held 1024", s)
	}
	// Another value: refused, nothing changed.
	_, err = openTopics(t, dir, declared(2048))
	if err == nil || !strings.Contains(err.Error(), `topic "logs": the pipeline declares max_message_bytes: 2048, but this node holds 1024`) {
		t.Fatalf("a pipeline declaring another max_message_bytes: %v, want a conflict naming both", err)
	}
	if b, err = openTopics(t, dir, declared(1024)); err != nil {
		t.Fatal(err)
	}
	if s := topicSettings(t, b, "logs"); s.GetMaxMessageBytes() != 1024 {
		t.Fatalf("after the refused start: %v, want 1024", s)
	}
	// A bad declared value: one clear error.
	if _, err := openTopics(t, t.TempDir(), declared(8<<20)); err == nil || !strings.Contains(err.Error(), "max_message_bytes must be between 1 and the broker's limit") {
		t.Fatalf("max_message_bytes 8MiB in the pipeline: %v", err)
	}
}

// CreateTopic and AlterTopic with settings on a node whose store (memory) has
// no retention per topic: max_message_bytes is taken, altered and unset (0 keeps a
// setting, -1 unsets it), kept across a restart; a retention is refused,
// naming what the store lacks, and creates nothing; an alter that changes
// nothing is refused.
func TestTopicSettingsAdmin(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Broker {
		b := New(Options{DataDir: dir, Topics: []Topic{{Name: "orders", Queues: 1}}}, newSource(newMemory(t)))
		if err := b.OpenTopics(); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := open()
	if _, err := b.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "logs", Queues: 2, Settings: &sdk.TopicSettings{MaxMessageBytes: 100}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: "logs", Settings: &sdk.TopicSettings{MaxMessageBytes: 200}}); err != nil {
		t.Fatal(err)
	}
	_, err := b.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: "logs", Settings: &sdk.TopicSettings{MaxMessageBytes: 200}})
	if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "already has 2 queues and these settings") {
		t.Errorf("an alter that changes nothing: %v", err)
	}
	_, err = b.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "kept", Queues: 1, Settings: &sdk.TopicSettings{RetentionBytes: 4096}})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), `topic "kept"`) || !strings.Contains(err.Error(), "sdk.TopicRetainer") {
		t.Errorf("a retention on a node whose store has none: %v", err)
	}
	if _, ok := metadataTopics(t, b)["kept"]; ok {
		t.Error("the refused topic was created")
	}
	b2 := open()
	if s := topicSettings(t, b2, "logs"); s.GetMaxMessageBytes() != 200 || metadataTopics(t, b2)["logs"] != 2 {
		t.Fatalf("after a restart logs has %v", s)
	}
	if _, err := b2.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: "logs", Settings: &sdk.TopicSettings{MaxMessageBytes: -1}}); err != nil {
		t.Fatal(err)
	}
	if s := topicSettings(t, b2, "logs"); s != nil {
		t.Errorf("after unsetting max_message_bytes logs has %v, want none", s)
	}
}
