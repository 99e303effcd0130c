package broker

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// node.auto_create_topics: a producer's Metadata (auto_create) or a
// Produce creates an unknown topic with the configured queues, durably
// (the node's topics file: a new broker on the data dir has it); a bad
// name is the name rule's error; the internal prefixes are never created;
// a Metadata without auto_create (a consumer, an admin tool) creates
// nothing. Off, a produce to an unknown topic is not found.
func TestAutoCreateTopics(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func(queues int32) *Broker {
		b := New(Options{Node: "n1", DataDir: dir, Topics: []Topic{{Name: "orders", Queues: 2}}, AutoCreateQueues: queues}, newSource(newMemory(t)))
		if err := b.OpenTopics(); err != nil {
			t.Fatal(err)
		}
		b.Start()
		t.Cleanup(func() { _ = b.Close(ctx) })
		return b
	}
	msg := func(topic string, q int32) *sdk.ProduceRequest {
		return &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: topic + "-1", Topic: topic, Queue: q, Body: []byte("x")}}}
	}
	queuesOf := func(b *Broker, topic string) int32 {
		md, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Topics) == 0 {
			return 0
		}
		return md.Topics[0].Queues
	}

	off := open(0)
	if _, err := off.Produce(ctx, msg("fresh", 0)); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("auto-create off: produce to an unknown topic: %v, want not found", err)
	}
	if md, err := off.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{"fresh"}, AutoCreate: true}); err != nil || len(md.Topics) != 0 {
		t.Errorf("auto-create off: metadata = %v, %v; want no topic", md, err)
	}
	_ = off.Close(ctx)

	b := open(3)
	if n := queuesOf(b, "looked-at"); n != 0 {
		t.Errorf("a metadata request without auto_create created a topic with %d queues", n)
	}
	md, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{"by-metadata"}, AutoCreate: true})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Queues != 3 {
		t.Fatalf("metadata with auto_create = %v, %v; want by-metadata with 3 queues", md, err)
	}
	if _, err := b.Produce(ctx, msg("by-produce", 2)); err != nil {
		t.Fatalf("produce to an unknown topic: %v", err)
	}
	if _, err := b.Produce(ctx, msg("by-produce2", 3)); err == nil || !strings.Contains(err.Error(), `has queues 0..2, got queue 3`) {
		t.Errorf("produce to queue 3 of a topic auto-created with 3: %v", err)
	}
	for _, c := range []struct{ topic, want string }{
		{"bad name", `character ' ' at position 4 is not allowed`},
		{strings.Repeat("x", 250), `more than the limit of 249`},
	} {
		if _, err := b.Produce(ctx, msg(c.topic, 0)); !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("produce to %.20q: %v, want the name rule's %q", c.topic, err, c.want)
		}
		if _, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{c.topic}, AutoCreate: true}); !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("metadata of %.20q: %v, want the name rule's %q", c.topic, err, c.want)
		}
	}
	for _, name := range []string{"%RETRY%nobody", "%DLQ%nobody", "%RETRY%"} {
		if _, err := b.Produce(ctx, msg(name, 0)); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("produce to %s: %v, want not found", name, err)
		}
		b.topicsMu.RLock()
		_, made := b.topics[name]
		b.topicsMu.RUnlock()
		if made {
			t.Errorf("%s was created", name)
		}
	}
	_ = b.Close(ctx)

	// Durable: a broker started again on the data dir, auto-create off,
	// has them.
	again := open(0)
	if queuesOf(again, "by-metadata") != 3 || queuesOf(again, "by-produce") != 3 {
		t.Errorf("after a restart: by-metadata %d queues, by-produce %d; want 3 and 3", queuesOf(again, "by-metadata"), queuesOf(again, "by-produce"))
	}
}
