package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

func TestCreateTopicAndAddQueues(t *testing.T) {
	dir := t.TempDir()
	b := New(Options{Node: "n1", DataDir: dir, Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(newMemory(t)))
	if err := b.OpenTopics(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close(context.Background())
	ctx := context.Background()

	if err := b.CreateTopic("Clicks.v1", 2); err != nil {
		t.Fatal(err)
	}
	// Producers write to every queue they know while queues are added.
	var wg sync.WaitGroup
	var produced atomic.Int64
	errs := make(chan error, 4)
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				md, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{"Clicks.v1"}})
				if err != nil {
					errs <- err
					return
				}
				q := int32(i) % md.Topics[0].Queues
				_, err = b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: fmt.Sprint(w, "-", i), Topic: "Clicks.v1", Queue: q, Body: []byte("x")}}})
				if err != nil {
					errs <- err
					return
				}
				produced.Add(1)
			}
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); produced.Load() < 20; {
		if time.Now().After(deadline) {
			t.Fatal("producers stored nothing in 30 s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.AddQueues("Clicks.v1", 6); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("produce while queues were added: %v", err)
	}
	if _, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "new-q", Topic: "Clicks.v1", Queue: 5, Body: []byte("x")}}}); err != nil {
		t.Fatalf("produce to an added queue: %v", err)
	}

	for _, c := range []struct {
		err  error
		is   error
		want string
	}{
		{b.CreateTopic("Clicks.v1", 2), sdk.ErrInvalidArgument, `topic "Clicks.v1" already exists (with 6 queues)`},
		{b.CreateTopic("orders", 2), sdk.ErrInvalidArgument, `topic "orders" already exists`},
		{b.CreateTopic("bad name", 2), sdk.ErrInvalidArgument, `character ' ' at position 4`},
		{b.CreateTopic("%DLQ%billing", 1), sdk.ErrInvalidArgument, `the prefix %DLQ% is reserved`},
		{b.CreateTopic("many", MaxQueues+1), sdk.ErrInvalidArgument, `queues must be between 1 and 1024, got 1025`},
		{b.AddQueues("Clicks.v1", 3), sdk.ErrInvalidArgument, `topic "Clicks.v1" has 6 queues; it cannot shrink to 3`},
		{b.AddQueues("Clicks.v1", 6), sdk.ErrInvalidArgument, `already has 6 queues`},
		{b.AddQueues("nope", 6), sdk.ErrNotFound, `unknown topic "nope"`},
		{b.AddQueues(sdk.RetryTopic("g"), 40), sdk.ErrInvalidArgument, `internal topic`},
	} {
		if !errors.Is(c.err, c.is) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("error %v, want %v containing %q", c.err, c.is, c.want)
		}
	}

	// What was created and added is held by the node: a broker opened on
	// the same data dir serves it.
	b2, err := openTopics(t, dir, Topic{"orders", 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := metadataTopics(t, b2); got["Clicks.v1"] != 6 || got["orders"] != 2 || len(got) != 2 {
		t.Fatalf("reopened node serves %v, want Clicks.v1:6 and orders:2", got)
	}
}
