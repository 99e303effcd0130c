package broker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

func openTopics(t *testing.T, dir string, topics ...Topic) (*Broker, error) {
	t.Helper()
	b := New(Options{DataDir: dir, Topics: topics}, nil)
	return b, b.OpenTopics()
}

func metadataTopics(t *testing.T, b *Broker) map[string]int32 {
	t.Helper()
	resp, err := b.Metadata(context.Background(), &sdk.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int32{}
	for _, ti := range resp.Topics {
		out[ti.Name] = ti.Queues
	}
	return out
}

// The pipeline's topics are written to the node's metadata on the first
// start; a later start serves what the node holds (a topic no longer
// declared, a topic that grew) and refuses to shrink one.
func TestOpenTopicsBaseline(t *testing.T) {
	dir := t.TempDir()
	if _, err := openTopics(t, dir, Topic{Name: "orders", Queues: 4}, Topic{Name: "audit", Queues: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, TopicsFile)); err != nil {
		t.Fatalf("no metadata file after the first start: %v", err)
	}
	// audit is no longer declared, orders grows, payments is new.
	b, err := openTopics(t, dir, Topic{Name: "orders", Queues: 8}, Topic{Name: "payments", Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := metadataTopics(t, b)
	want := map[string]int32{"orders": 8, "audit": 1, "payments": 2}
	if len(got) != len(want) {
		t.Fatalf("topics %v, want %v", got, want)
	}
	for n, q := range want {
		if got[n] != q {
			t.Errorf("topic %s has %d queues, want %d (all: %v)", n, got[n], q, got)
		}
	}
	// Shrinking orders back to 4 is a conflict, reported, not applied.
	before, _ := os.ReadFile(filepath.Join(dir, TopicsFile))
	_, err = openTopics(t, dir, Topic{Name: "orders", Queues: 4})
	if err == nil || !strings.Contains(err.Error(), `topic "orders": the pipeline declares 4 queues, but this node holds 8`) {
		t.Fatalf("shrinking a topic: %v, want the conflict named", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, TopicsFile))
	if string(before) != string(after) {
		t.Errorf("a conflicting start changed the metadata:\n%s\n→\n%s", before, after)
	}
}

func TestOpenTopicsDamagedFile(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		`{"version": 1, "topics": [`:                               "is damaged",
		`{"version": 9, "topics": []}`:                             "has version 9",
		`{"version": 1, "topics": [{"name": "a b", "queues": 1}]}`: `character ' ' at position 2`,
		`{"version": 1, "topics": [{"name": "a", "queues": 0}]}`:   `topic "a" has 0 queues`,
	} {
		if err := os.WriteFile(filepath.Join(dir, TopicsFile), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := openTopics(t, dir, Topic{Name: "orders", Queues: 4}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("metadata %s: error %v, want one containing %q", content, err, want)
		}
	}
}

// A write replaces the file whole and leaves no temporary file behind.
func TestWriteTopicsFileReplaces(t *testing.T) {
	dir := t.TempDir()
	for _, tf := range []topicsFile{{Topics: []topicMeta{{Name: "a", Queues: 1}}}, {Topics: []topicMeta{{Name: "b", Queues: 2}, {Name: "a", Queues: 3}}}} {
		if err := writeTopicsFile(dir, tf); err != nil {
			t.Fatal(err)
		}
	}
	tf, ok, err := readTopicsFile(dir)
	if err != nil || !ok || len(tf.Topics) != 2 || tf.Topics[0] != (topicMeta{Name: "a", Queues: 3}) || tf.Topics[1] != (topicMeta{Name: "b", Queues: 2}) {
		t.Fatalf("read back %+v %v %v", tf, ok, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("leftovers in the data dir: %v", entries)
	}
}
