package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
)

// Launch fails at start on a topic the broker does not have, with
// sdk.ErrNotFound, and runs nothing.
func TestLaunchUnknownTopicFailsAtStart(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 2})
	cons, err := connect(t, n.addr).NewConsumer(client.ConsumerOptions{Topic: "nope", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	done, err := cons.Launch(bgCtx(t), func(context.Context, *client.Delivery) error { return nil })
	if !errors.Is(err, sdk.ErrNotFound) || done != nil {
		t.Fatalf("Launch on an unknown topic: done %v, err %v; want sdk.ErrNotFound at once", done, err)
	}
	// Control: the same on a topic that exists starts, and stops when
	// its context ends.
	ok, err := connect(t, n.addr).NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, err = ok.Launch(ctx, func(context.Context, *client.Delivery) error { return nil })
	if err != nil {
		t.Fatalf("Launch on an existing topic: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("consumer ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the launched consumer did not stop within 30s of its cancellation")
	}
}

// Client.Close with live consumers (a push and a pull one) stops them and
// waits for their final commits: every message they settled is committed,
// though their commit interval never came.
func TestCloseWithLiveConsumersLosesNoCommit(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"push": 2, "pull": 2})
	admin := connect(t, n.addr)
	const total = 100
	produceN(t, admin, "push", total)
	produceN(t, admin, "pull", total)
	c, err := client.Dial(bgCtx(t), n.addr, client.WithLogger(silent))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	push, err := c.NewConsumer(client.ConsumerOptions{Topic: "push", Group: "g", CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	done, err := push.Launch(context.Background(), func(context.Context, *client.Delivery) error {
		handled.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pull, err := c.NewConsumer(client.ConsumerOptions{Topic: "pull", Group: "g", CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := pull.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	acked := 0
	for deadline := time.Now().Add(30 * time.Second); acked < total && time.Now().Before(deadline); {
		ds, err := pull.Fetch(bgCtx(t), total)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			d.Ack()
			acked++
		}
	}
	waitFor(t, 30*time.Second, "the push consumer handled every message", func() bool { return handled.Load() == total })
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the push consumer ended with %v", err)
		}
	default:
		t.Fatal("Close returned before the push consumer ended")
	}
	for _, topic := range []string{"push", "pull"} {
		var sum int64
		for _, off := range committed(t, admin, "g", topic, 2) {
			sum += max(off, 0)
		}
		if sum != total {
			t.Errorf("topic %s: group g committed %d of %d settled messages after Close", topic, sum, total)
		}
	}
}
