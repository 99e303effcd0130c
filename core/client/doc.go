// Package client is the Go library applications use to produce to and consume
// from a Ferry broker over its grpc transport
// (plugins/transport/grpc, the ferry.v1.Broker service).
//
//	c, err := client.Dial(ctx, "127.0.0.1:7070")
//	...
//	defer c.Close()
//	p := c.NewProducer(client.ProducerOptions{Selector: client.KeyHash()})
//	res, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: "42", Body: b})
//
//	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "billing"})
//	err = cons.Run(ctx, func(ctx context.Context, m *ferryv1.Message) error { ... })
//
// # Reliability
//
// A send is retried, with the same message id, when the broker could not be
// reached or the connection broke: the broker's storage de-duplicates by id,
// so a retried message whose first attempt was stored keeps its first offset
// and is stored once. A send that times out is not retried by default,
// because its outcome is unknown (see ProducerOptions.RetryOnTimeout). Errors
// the broker reports match the SDK's sentinels with errors.Is
// (sdk.ErrInvalidArgument, sdk.ErrNotFound, ...) and are not retried.
//
// A broker that stops gracefully (SIGTERM of ferry run) answers every request
// it took with its true outcome, and refuses later ones with
// sdk.ErrUnavailable, storing nothing of them; the client retries those with
// the same ids, so a restart under load neither loses nor duplicates a send,
// and no stored message is answered with an error.
//
// Consumption is at-least-once: a message's offset is committed only after
// the handler returned nil for it and for every earlier message of its queue,
// so a restarted consumer sees again what was not committed, never less.
//
// # Message ids
//
// Message.ID sets a message's id (an order number, a UUID): sending it again
// with the same ID is de-duplicated like the client's own retries, so an
// application may retry a send whose outcome it does not know (see
// ExampleMessage_ID).
//
// # Consumer groups and lifecycle
//
// One group may be used on several topics: each topic's queues are split
// among the group's members that consume it (the broker tells them apart).
// Launch starts push consumption synchronously and returns start errors
// (an unknown topic, a refused membership); Client.Close cancels the
// client's consumers and waits for their final commits before it closes the
// connections (see ExampleConsumer_Launch). That wait is bounded
// (WithCloseTimeout, CloseContext): a handler that does not return in time
// is left running and its delivery is not committed, so the group gets it
// again. A handler settles a delivery by
// returning, or with Ack, Nack(delay) (Nack(0): again now, counted as an
// attempt) or Release (again now, not counted).
//
// # Ephemeral groups
//
// ConsumerOptions.Ephemeral joins an ephemeral group, which the broker
// deletes (offsets, %RETRY% and %DLQ% topics) once its last member has been
// gone for the node's ephemeral_group_ttl (default 30 s); with no Group the
// consumer gets one of its own (Consumer.Group names it):
//
//	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Ephemeral: true})
//
// # Errors
//
// Errors from this package match the sentinels of core/sdk: a broker that
// cannot be reached gives sdk.ErrUnavailable, a closed Client sdk.ErrClosed,
// a timed-out send context.DeadlineExceeded.
package client
