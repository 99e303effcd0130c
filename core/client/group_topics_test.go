package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
)

// One consumer group used on two topics, one member per topic: each topic's
// queues are split among that topic's own members, so every message of both
// topics is consumed (by its topic's member). Before the broker told members
// apart by topic, half of each topic's queues went to the member that does
// not read it, and their messages were never consumed.
func TestGroupOnTwoTopics(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"a": 4, "b": 4})
	c := connect(t, n.addr)
	const each = 200
	ids := map[string][]string{"a": produceN(t, c, "a", each), "b": produceN(t, c, "b", each)}
	var mu sync.Mutex
	got := map[string]map[string]bool{"a": {}, "b": {}}
	wrong := 0
	for _, topic := range []string{"a", "b"} {
		cons, err := connect(t, n.addr).NewConsumer(client.ConsumerOptions{Topic: topic, Group: "g", Member: "m-" + topic,
			HeartbeatInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			if d.Topic != topic {
				wrong++
			}
			got[d.Topic][d.ID] = true
			return nil
		})
	}
	complete := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["a"]) == each && len(got["b"]) == each
	}
	deadline := time.Now().Add(30 * time.Second)
	for !complete() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for topic, want := range ids {
		missing := 0
		for _, id := range want {
			if !got[topic][id] {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("topic %s: %d of %d messages never consumed", topic, missing, each)
		}
	}
	if wrong > 0 {
		t.Errorf("%d messages handed to the member of the other topic", wrong)
	}
}
