package client_test

import (
	"context"
	"errors"
	"log"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
)

// An application retries a send whose outcome it does not know with the same
// ID: the broker stores the message once.
func ExampleMessage_ID() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7070")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{})
	m := client.Message{ID: "order-4711", Topic: "orders", Body: []byte(`{"total": 42}`)}
	res, err := p.SendSync(ctx, m)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sdk.ErrUnavailable) {
		res, err = p.SendSync(ctx, m) // stored once, whatever became of the first
	}
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("order-4711 at %d/%d", res.Queue, res.Offset)
}

// Launch joins the group before it returns, so a wrong topic is an error at
// start; Close stops the consumer and waits for its last commit.
func ExampleConsumer_Launch() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:7070")
	if err != nil {
		log.Fatal(err)
	}
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	busy := func() bool { return false }
	done, err := cons.Launch(ctx, func(ctx context.Context, d *client.Delivery) error {
		if busy() {
			return d.Release() // delivered again now; the attempt is not counted
		}
		return nil // acknowledged
	})
	if err != nil {
		log.Fatal(err) // sdk.ErrNotFound: the broker has no topic "orders"
	}
	// ... at shutdown:
	if err := c.Close(); err != nil { // cancels cons, waits for its final commit
		log.Print(err)
	}
	if err := <-done; err != nil {
		log.Print(err)
	}
}
