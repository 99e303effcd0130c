package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// TestInternalTopicsOnlyForExistingGroups: requests naming the retry or
// dead-letter topic of a made-up group are refused (not found) and create
// nothing; a group that exists (live member, commit, stored offsets or
// messages) has its internal topics. Each distinct %RETRY% name used to
// create a topic that was never released.
func TestInternalTopicsOnlyForExistingGroups(t *testing.T) {
	store := newMemory(t)
	b := newBroker(t, newSource(store))
	ctx := context.Background()
	declared := len(b.topics)
	for i := range 1000 {
		retry, dlq := sdk.RetryTopic(fmt.Sprintf("ghost-%d", i)), sdk.DLQTopic(fmt.Sprintf("ghost-%d", i))
		var errs []error
		_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "x", Topic: retry, Body: []byte("x")}}})
		errs = append(errs, err)
		_, err = b.Fetch(ctx, &sdk.FetchRequest{Topic: dlq, Group: "x", Positions: []*sdkPos{{Queue: 0}}})
		errs = append(errs, err)
		_, err = b.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "x", Queues: []*sdk.QueueRef{{Topic: retry}}})
		errs = append(errs, err)
		errs = append(errs, b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "x", Offsets: []*sdk.GroupOffset{{Topic: dlq, Offset: 0}}}))
		_, err = b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "other", Member: "m", Topics: []string{retry}})
		errs = append(errs, err)
		for j, err := range errs {
			if !errors.Is(err, sdk.ErrNotFound) {
				t.Fatalf("request %d on %s: %v, want not found", j, retry, err)
			}
		}
		// Metadata answers (a consumer asks before it joins), creating
		// nothing.
		if md, _ := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{retry, dlq}}); len(md.Topics) != 2 {
			t.Fatalf("metadata lists %v", md.Topics)
		}
	}
	if n := len(b.topics); n != declared {
		t.Fatalf("%d topics after requests naming 1000 made-up groups, want the %d declared", n, declared)
	}

	// A group's own request on its internal topics (a consumer before its
	// first commit) is answered, and remembers nothing.
	if _, err := b.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "own", Queues: []*sdk.QueueRef{{Topic: sdk.RetryTopic("own")}}}); err != nil {
		t.Fatalf("a group's own retry topic: %v", err)
	}
	if _, err := b.Fetch(ctx, &sdk.FetchRequest{Topic: sdk.RetryTopic("own"), Group: "own", Positions: []*sdkPos{{Queue: 0}}}); err != nil {
		t.Fatalf("a group's own retry topic: %v", err)
	}
	if n := len(b.topics); n != declared {
		t.Fatalf("a group's own request remembered its retry topic: %d topics", n)
	}

	// A group that fetched lately (a consumer that has not committed yet)
	// can use its retry topic, which is remembered once it holds messages;
	// the set of such groups is bounded.
	if _, err := b.Fetch(ctx, &sdk.FetchRequest{Topic: "orders", Group: "fresh", Positions: []*sdkPos{{Queue: 0}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "fresh", Queues: []*sdk.QueueRef{{Topic: sdk.RetryTopic("fresh")}}}); err != nil {
		t.Fatalf("retry topic of a group that fetched: %v", err)
	}
	if n := len(b.topics); n != declared {
		t.Fatalf("a fetching group's retry topic is remembered before it holds messages: %d topics", n)
	}
	if _, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "f1", Topic: sdk.RetryTopic("fresh"), Body: []byte("x")}}}); err != nil {
		t.Fatalf("produce to the retry topic of a group that fetched: %v", err)
	}
	for i := range maxRecentFetchers + 10 {
		b.Fetch(ctx, &sdk.FetchRequest{Topic: "orders", Group: fmt.Sprintf("f%d", i), Positions: []*sdkPos{{Queue: 0}}})
	}
	if n := len(b.fetchers.names); n != maxRecentFetchers {
		t.Errorf("%d recent fetchers, want the bound %d", n, maxRecentFetchers)
	}
	if _, err := b.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "x", Queues: []*sdk.QueueRef{{Topic: sdk.DLQTopic("fresh")}}}); err != nil {
		t.Errorf("a group with messages in its retry topic, once out of the recent fetchers: %v", err)
	}

	// A group with a live member has its retry topic.
	if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "live", Member: "m", Topics: []string{"orders", sdk.RetryTopic("live")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "r1", Topic: sdk.RetryTopic("live"), Body: []byte("x")}}}); err != nil {
		t.Fatalf("retry topic of a live group: %v", err)
	}
	// A group that committed has its dead-letter topic.
	if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "committed", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "d1", Topic: sdk.DLQTopic("committed"), Body: []byte("x")}}}); err != nil {
		t.Fatalf("dead-letter topic of a group that committed: %v", err)
	}

	// A new broker over the same store (a restart) finds both groups in
	// storage: "live" by the messages in its retry topic, "committed" by its
	// offsets and its dead letters.
	b2 := newBroker(t, newSource(store))
	for _, topic := range []string{sdk.RetryTopic("live"), sdk.DLQTopic("committed"), sdk.RetryTopic("committed")} {
		if _, err := b2.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "g", Queues: []*sdk.QueueRef{{Topic: topic}}}); err != nil {
			t.Errorf("after a restart, %s: %v", topic, err)
		}
	}
	if _, err := b2.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "g", Queues: []*sdk.QueueRef{{Topic: sdk.RetryTopic("ghost-1")}}}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("after a restart, a made-up group's retry topic: %v", err)
	}
	// The pipeline's groups exist from the start.
	b3 := New(Options{Topics: []Topic{{Name: "orders", Queues: 1}}, Groups: []string{"flow"}}, newSource(newMemory(t)))
	if _, err := b3.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "g", Queues: []*sdk.QueueRef{{Topic: sdk.DLQTopic("flow")}}}); err != nil {
		t.Errorf("a pipeline group's dead-letter topic: %v", err)
	}
}

// TestHeartbeatForgetsExpiredGroups: groups whose members all expired are
// dropped, so heartbeats naming made-up groups hold memory only while their
// sessions last.
func TestHeartbeatForgetsExpiredGroups(t *testing.T) {
	b := newBroker(t, newSource(newMemory(t)))
	now := time.Unix(1000, 0)
	b.groups.now = func() time.Time { return now }
	ctx := context.Background()
	for i := range 1000 {
		if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: fmt.Sprintf("g%d", i), Member: "m", Topics: []string{"orders"}, SessionTimeoutNanos: int64(time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(b.groups.members); n != 1000 {
		t.Fatalf("%d groups, want 1000 live", n)
	}
	now = now.Add(2 * time.Second)
	if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "g0", Member: "m", Topics: []string{"orders"}, Leave: true}); err != nil {
		t.Fatal(err)
	}
	if n := len(b.groups.members); n != 0 {
		t.Fatalf("%d groups left after every session expired", n)
	}
}
