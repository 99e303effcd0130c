package client_test

import (
	"context"
	"errors"
	"strings"
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

// A handler that never returns does not hold Client.Close forever: after
// the close timeout Close returns an error wrapping
// context.DeadlineExceeded, what was settled before is committed, the
// stuck delivery (and those queued behind it) is not, and the group gets
// it again. The handler returning later commits nothing.
func TestCloseGivesUpOnAStuckHandler(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 1})
	admin := connect(t, n.addr)
	produceN(t, admin, "t", 5)
	c, err := client.Dial(bgCtx(t), n.addr, client.WithLogger(silent), client.WithCloseTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Concurrency: 1, CommitInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	release, stuck, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var acked atomic.Int64
	done, err := cons.Launch(context.Background(), func(ctx context.Context, d *client.Delivery) error {
		if d.Offset == 2 {
			close(stuck)
			<-release // ignores ctx: a handler that never returns
			close(returned)
			return nil
		}
		acked.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-stuck:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler never got offset 2")
	}
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- c.Close() }()
	select {
	case err = <-closed:
	case <-time.After(60 * time.Second):
		t.Fatal("Client.Close still blocked 60s after it began, with a close timeout of 2s")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a stuck handler: %v after %s; want an error wrapping context.DeadlineExceeded", err, time.Since(start))
	}
	t.Logf("Close returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the consumer ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Launch's done got nothing after Close returned")
	}
	if got := committed(t, admin, "g", "t", 1)[0]; got != 2 {
		t.Fatalf("committed after Close: %d; want 2 (offsets 0 and 1 settled, 2 still in the handler)", got)
	}
	close(release)
	<-returned
	if got := committed(t, admin, "g", "t", 1)[0]; got != 2 {
		t.Fatalf("committed after the stuck handler returned: %d; want still 2", got)
	}
	// The group gets offset 2 again.
	again, err := connect(t, n.addr).NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan int64, 10)
	runConsumer(t, again, func(_ context.Context, d *client.Delivery) error {
		select {
		case first <- d.Offset:
		default:
		}
		return nil
	})
	select {
	case off := <-first:
		if off != 2 {
			t.Fatalf("the next member's first delivery: offset %d; want 2", off)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stuck delivery was not delivered again")
	}
}

// A close timeout that is not positive is refused by Dial.
func TestCloseTimeoutMustBePositive(t *testing.T) {
	_, err := client.Dial(bgCtx(t), "127.0.0.1:1", client.WithCloseTimeout(0))
	if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "close timeout") {
		t.Fatalf("Dial with a close timeout of 0: %v; want invalid argument naming the close timeout", err)
	}
}
