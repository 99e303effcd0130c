package client

import (
	"go.opentelemetry.io/otel/trace"

	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// SendOneway sends m without waiting for the broker's answer (RocketMQ's
// oneway send). It returns once the message was handed to the connection of
// its broker, with a Result that has the message's id, broker and queue but
// no offset (-1) and no status; the broker's answer, even an error, is
// dropped. It returns an error only when the message could not be sent: it
// is invalid (empty or unknown topic, too large), or no broker of its topic
// could be reached within Timeout (then it is tried on each of the topic's
// brokers, up to Retries more times; such a retry cannot store a duplicate,
// since nothing was sent).
//
// A oneway send can lose messages without anyone noticing: when the
// connection breaks before the broker read the message, or when the broker
// refuses or fails to store it. Use it only for data whose loss is
// acceptable (metrics, logs); SendSync and SendAsync report every outcome.
func (p *Producer) SendOneway(ctx context.Context, m Message) (res Result, err error) {
	if tracing(ctx) {
		var span trace.Span
		m, span = startSend(ctx, m)
		defer func() { endSend(span, res, err) }()
	}
	r := Result{ID: p.idOf(&m), Topic: m.Topic, Queue: -1, Offset: -1}
	if err := p.check(&m); err != nil {
		return r, err
	}
	rt, err := p.route(ctx, m.Topic)
	if err != nil {
		return r, err
	}
	q := p.pick(rt, &m)
	msg := &ferryv1.Message{Id: r.ID, Topic: m.Topic, Queue: q.queue, Key: m.Key, Headers: m.Headers, Body: m.Body, BornUnixNano: time.Now().UnixNano()}
	u := &unit{topic: m.Topic, route: rt, broker: q.broker, msgs: []*ferryv1.Message{msg}}
	var tried []*brokerConn
	for attempt := 0; ; attempt++ {
		tried = append(tried, u.broker)
		actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
		err = u.broker.produceOneway(actx, &ferryv1.ProduceRequest{Messages: u.msgs, TimeoutNanos: int64(p.opts.Timeout)})
		cancel()
		r.Broker, r.Queue = u.broker.addr, msg.Queue
		if err == nil {
			return r, nil
		}
		if p.c.closed() {
			return r, errClientClosed
		}
		if !isNotStored(err) || attempt >= p.opts.Retries || ctx.Err() != nil || !errors.Is(err, sdk.ErrUnavailable) {
			return r, fmt.Errorf("ferry producer: oneway send: %w", err)
		}
		if next := otherBroker(u, tried); next != nil {
			moveTo(u, next)
			continue
		}
		t := time.NewTimer(min(p.opts.Backoff<<attempt, maxBackoff))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return r, fmt.Errorf("ferry producer: oneway send abandoned while retrying (%v): %w", err, ctx.Err())
		}
	}
}
