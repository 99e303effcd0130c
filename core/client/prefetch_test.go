package client_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
)

// Pull prefetches: after Fetch returns, the next fetch runs at the broker
// while the application still holds the batch (before, a fetch ran only
// inside Fetch: the wait below fails against that code), and the next Fetch
// returns what it got. Every message comes once, in offset order per queue;
// what a consumer prefetched and never returned before Close is delivered
// to the next consumer of the group, nothing lost.
func TestPullPrefetches(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 2})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	const n = 200
	for i := range n {
		if _, err := p.SendSync(ctx, client.Message{Topic: "t", Key: fmt.Sprint(i % 7), Body: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	last := map[int32]int64{0: -1, 1: -1}
	take := func(ds []*client.Delivery) {
		for _, d := range ds {
			seen[string(d.Message.Body)]++
			if d.Queue < 0 || d.Queue > 1 || d.Offset <= last[d.Queue] {
				t.Fatalf("queue %d offset %d after offset %d", d.Queue, d.Offset, last[d.Queue])
			}
			last[d.Queue] = d.Offset
			d.Ack()
		}
	}

	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", MaxWait: 100 * time.Millisecond, CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ds, err := cons.Fetch(ctx, 10)
	if err != nil || len(ds) == 0 {
		t.Fatalf("first Fetch: %d, %v", len(ds), err)
	}
	calls := core.fetchCalls.Load()
	waitFor(t, 10*time.Second, "a fetch at the broker while the application holds its batch", func() bool {
		return core.fetchCalls.Load() > calls
	})
	take(ds)
	for len(seen) < n/2 {
		ds, err := cons.Fetch(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		take(ds)
	}
	// Close while a prefetched batch may be ready and not returned.
	if err := cons.Close(); err != nil {
		t.Fatal(err)
	}
	last = map[int32]int64{0: -1, 1: -1} // the next consumer starts again from the commits
	next, err := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", MaxWait: 100 * time.Millisecond, CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		ds, err := next.Fetch(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		take(ds)
	}
	for i := range n {
		if seen[fmt.Sprint(i)] == 0 {
			t.Fatalf("message %d never delivered (%d of %d seen)", i, len(seen), n)
		}
	}
	dups := 0
	for _, k := range seen {
		dups += k - 1
	}
	if dups > 20 {
		// Only what the first consumer had fetched and not committed
		// comes again (at most one prefetch of 10 plus the commit lag).
		t.Fatalf("%d messages delivered twice", dups)
	}
}
