package client

import (
	"go.opentelemetry.io/otel/trace"

	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Defaults of the async options of ProducerOptions.
const (
	// DefaultLinger is how long an async batch waits for more messages.
	// 5ms, as Kafka's producer: long enough to fill batches under load,
	// short next to a flush to disk.
	DefaultLinger = 5 * time.Millisecond
	// NoLinger in ProducerOptions.Linger sends a queue's batch as soon as
	// the queue has no batch in flight (0 means the default).
	NoLinger time.Duration = -1
	// DefaultMaxBatchBytes bounds one async batch (body and header bytes
	// of its messages plus a small overhead each).
	DefaultMaxBatchBytes = 1 << 20
	// DefaultAsyncInflight is the async window, in messages.
	DefaultAsyncInflight = 256

	// msgOverhead is what a message costs in a batch beyond its body and
	// headers (id, topic, key, framing), for MaxBatchBytes.
	msgOverhead = 64
)

// Callback receives the outcome of an async send: the Result (its Offset is
// -1 when the send failed) and nil, or the error the send failed with, as
// SendSync would have returned it.
type Callback func(Result, error)

// SendAsync sends m in the background and returns at once; cb (which may be
// nil) is called with the outcome on another goroutine, exactly once, unless
// SendAsync returns an error: then m was not accepted and cb is never
// called.
//
// Messages are batched per queue: a batch is sent when it reaches
// MaxBatchBytes, when Linger has passed since its first message, when the
// window is full, or on Flush and Close. Each queue has at most one batch in
// flight, whichever broker holds the queue, and retries it on the same
// broker (AsyncRetry) or, when the queue moved (a new raft leader or
// master), on the queue's new broker while the batches behind it wait, so
// the acknowledged messages of a queue (of one key, with KeyHash) are stored
// in the order SendAsync accepted them, across a failover too
// (docs/producing.md, "Order across a failover"). At most MaxInflight messages are accepted and not yet
// answered; while the window is full SendAsync blocks until there is room or
// ctx ends (then it returns ctx's error). ctx bounds only that wait and the
// first lookup of the topic's queues: the send itself is bounded by Timeout
// and Retries.
//
// Until cb is called the producer holds m.Body and m.Headers: do not modify
// them. Callbacks of one batch are called in order, from one goroutine; a
// slow callback holds up the next ones of its batch, not the window (a
// message leaves the window before its callback).
func (p *Producer) SendAsync(ctx context.Context, m Message, cb Callback) (err error) {
	if err := p.check(&m); err != nil {
		return err
	}
	if tracing(ctx) {
		var span trace.Span
		m, span = startSend(ctx, m)
		if span.IsRecording() { // unsampled (at 1 %, nearly every message): no span to end
			next := cb
			cb = func(r Result, err error) {
				endSend(span, r, err)
				if next != nil {
					next(r, err)
				}
			}
			defer func() {
				if err != nil {
					endSend(span, Result{Queue: -1, Offset: -1}, err) // refused: cb never runs
				}
			}()
		}
	}
	a := p.accumulator(true)
	if a == nil {
		return fmt.Errorf("ferry producer: %w: producer closed", sdk.ErrClosed)
	}
	if err := a.acquire(ctx); err != nil {
		return err
	}
	rt, err := p.route(ctx, m.Topic)
	if err != nil {
		a.release(1)
		return err
	}
	q := p.pick(rt, &m)
	msg := &ferryv1.Message{Id: p.idOf(&m), Topic: m.Topic, Queue: q.queue, Key: m.Key, Headers: m.Headers, Body: m.Body, BornUnixNano: time.Now().UnixNano()}
	size := len(m.Body) + msgOverhead
	for k, v := range m.Headers {
		size += len(k) + len(v)
	}
	k := queueKey{topic: m.Topic, queue: q.queue}
	if linePerBroker {
		k.broker = q.broker // the fault of a test build (faults_on.go)
	}
	if !a.add(k, rt, q.broker, msg, size, cb) {
		a.release(1)
		return fmt.Errorf("ferry producer: %w: producer closed", sdk.ErrClosed)
	}
	return nil
}

// Flush sends every batch now and waits until every message SendAsync
// accepted before the call was answered and its callback returned, or until
// ctx ends (then it returns ctx's error; the sends go on).
func (p *Producer) Flush(ctx context.Context) error {
	a := p.accumulator(false)
	if a == nil {
		return nil
	}
	return a.flush(ctx)
}

// Close stops the producer taking async sends (SendAsync then fails with
// sdk.ErrClosed), sends what is pending and waits for every answer and
// callback, until ctx ends. Then it abandons what is left: batches not yet
// sent and sends in flight get their callbacks with an error (a send in
// flight may still have been stored), and Close returns ctx's error once
// every callback was called. Sync and oneway sends are not affected, and
// the Client stays open. Safe to call more than once.
func (p *Producer) Close(ctx context.Context) error {
	p.asyncMu.Lock()
	p.asyncClosed = true
	a := p.async
	p.asyncMu.Unlock()
	if a == nil {
		return nil
	}
	return a.close(ctx)
}

// accumulator returns the producer's accumulator, creating it if create; nil
// when there is none, or, with create, when the producer is closed.
func (p *Producer) accumulator(create bool) *accumulator {
	p.asyncMu.Lock()
	defer p.asyncMu.Unlock()
	if p.async == nil && create && !p.asyncClosed {
		p.async = newAccumulator(p)
	}
	return p.async
}

// accumulator gathers async sends into per-queue batches and sends them.
type accumulator struct {
	p      *Producer
	window chan struct{} // one token per accepted, unanswered message
	ctx    context.Context
	abort  context.CancelFunc // ends sends in flight (Close past its ctx)

	mu     sync.Mutex
	queues map[queueKey]*queueState
	// answering holds the done channels of batches answered but whose
	// callbacks still run (their queue may be gone): Flush and Close wait
	// for them too.
	answering map[chan struct{}]bool
	closed    bool
	closing   chan struct{} // closed by close: blocked SendAsyncs give up
}

// queueKey names a line of async batches: a topic's queue, whichever broker
// holds it now (a queue has one leader: mergeRoutes). A queue that moves to
// another broker (a raft group's new leader, a promoted slave) keeps its
// line: a batch retried across the move holds back the batches behind it,
// which are sent, in order, to where the queue is when their turn comes.
// Keyed on the broker too, the line split at a move, and the new broker's
// batches overtook the retry.
type queueKey struct {
	topic  string
	queue  int32
	broker *brokerConn // nil, but in a test build's fault (linePerBroker)
}

// queueState is one queue's batches: the one in flight and those waiting
// behind it, the last of which takes new messages.
type queueState struct {
	inflight *asyncBatch
	waiting  []*asyncBatch
}

type asyncBatch struct {
	key    queueKey
	route  *topicRoute
	broker *brokerConn // where route had the queue when the batch began
	msgs   []*ferryv1.Message
	cbs    []Callback
	bytes  int
	ready  bool // full, lingered, or forced out: send when the queue is free
	timer  *time.Timer
	done   chan struct{} // closed once every callback returned
}

func newAccumulator(p *Producer) *accumulator {
	ctx, cancel := context.WithCancel(context.Background())
	return &accumulator{
		p:         p,
		window:    make(chan struct{}, p.opts.MaxInflight),
		ctx:       ctx,
		abort:     cancel,
		queues:    map[queueKey]*queueState{},
		answering: map[chan struct{}]bool{},
		closing:   make(chan struct{}),
	}
}

// acquire takes one window slot, waiting while the window is full; before
// waiting it sends every batch out, since nothing more can join them.
func (a *accumulator) acquire(ctx context.Context) error {
	select {
	case a.window <- struct{}{}:
		return nil
	default:
	}
	a.forceAll()
	select {
	case a.window <- struct{}{}:
		return nil
	case <-a.closing:
		return fmt.Errorf("ferry producer: %w: producer closed", sdk.ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("ferry producer: waiting for room in the async window of %d messages: %w", cap(a.window), ctx.Err())
	}
}

func (a *accumulator) release(n int) {
	for range n {
		<-a.window
	}
}

// add puts msg into its queue's open batch (or a new one) and sends what is
// ready. It reports false when the producer is closed.
func (a *accumulator) add(k queueKey, rt *topicRoute, broker *brokerConn, msg *ferryv1.Message, size int, cb Callback) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	qs := a.queues[k]
	if qs == nil {
		qs = &queueState{}
		a.queues[k] = qs
	}
	var b *asyncBatch
	if n := len(qs.waiting); n > 0 && !qs.waiting[n-1].full(size, a.p.opts.MaxBatchBytes) {
		b = qs.waiting[n-1]
	} else {
		b = &asyncBatch{key: k, route: rt, broker: broker, done: make(chan struct{})}
		qs.waiting = append(qs.waiting, b)
		if a.p.opts.Linger > 0 {
			b.timer = time.AfterFunc(a.p.opts.Linger, func() { a.lingered(b) })
		} else {
			b.ready = true
		}
	}
	b.msgs = append(b.msgs, msg)
	b.cbs = append(b.cbs, cb)
	b.bytes += size
	if b.bytes >= a.p.opts.MaxBatchBytes {
		b.ready = true
	}
	a.kick(qs)
	return true
}

// full reports whether a message of size bytes must start a new batch.
func (b *asyncBatch) full(size, max int) bool {
	return b.bytes > 0 && b.bytes+size > max
}

// lingered marks b ready once its linger time passed.
func (a *accumulator) lingered(b *asyncBatch) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.ready = true
	if qs := a.queues[b.key]; qs != nil {
		a.kick(qs)
	}
}

// forceAll marks every waiting batch ready and sends what it can; it returns
// the done channels of every batch waiting or in flight.
func (a *accumulator) forceAll() []chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	var dones []chan struct{}
	for _, qs := range a.queues {
		for _, b := range qs.waiting {
			b.ready = true
			dones = append(dones, b.done)
		}
		if qs.inflight != nil {
			dones = append(dones, qs.inflight.done)
		}
		a.kick(qs)
	}
	for done := range a.answering {
		dones = append(dones, done)
	}
	return dones
}

// kick sends the queue's first waiting batch if it is ready and the queue has
// nothing in flight. Called with a.mu held.
func (a *accumulator) kick(qs *queueState) {
	if qs.inflight != nil || len(qs.waiting) == 0 || !qs.waiting[0].ready {
		return
	}
	b := qs.waiting[0]
	qs.waiting = qs.waiting[1:]
	qs.inflight = b
	if b.timer != nil {
		b.timer.Stop()
	}
	go a.send(qs, b)
}

// send delivers one batch with retries, frees its queue for the next batch
// and its window slots, and calls its callbacks.
func (a *accumulator) send(qs *queueState, b *asyncBatch) {
	p := a.p
	u := a.target(b)
	err := a.ctx.Err()
	if err != nil {
		err = fmt.Errorf("ferry producer: %w: producer closed before the batch was sent: %v", sdk.ErrClosed, err)
	} else {
		err = p.deliver(a.ctx, u, p.opts.AsyncRetry)
	}

	a.mu.Lock()
	qs.inflight = nil
	a.answering[b.done] = true
	if len(qs.waiting) == 0 {
		delete(a.queues, b.key)
	} else {
		a.kick(qs)
	}
	a.mu.Unlock()
	a.release(len(b.msgs))

	for j, m := range u.msgs {
		r := Result{ID: m.Id, Topic: m.Topic, Queue: m.Queue, Offset: -1, Broker: u.broker.addr}
		rerr := err
		if err == nil {
			r.Offset, r.Status = u.resp.Offsets[j], u.resp.Status
			rerr = p.statusError(r)
		}
		if cb := b.cbs[j]; cb != nil {
			cb(r, rerr)
		}
	}
	a.mu.Lock()
	delete(a.answering, b.done)
	a.mu.Unlock()
	close(b.done)
}

// target is the unit b is sent as: to the broker that holds b's queue in
// the topic's newest route (the queue may have moved since b began: b
// waited behind a batch retried across a failover), or where it began when
// the newest route does not have the queue. b has not been sent yet, so
// nothing of it can be stored where it was first routed.
func (a *accumulator) target(b *asyncBatch) *unit {
	rt, broker := b.route, b.broker
	if b.key.broker != nil { // the fault of a test build: the line's broker, as before
		return &unit{topic: b.key.topic, route: rt, broker: broker, msgs: b.msgs}
	}
	a.p.c.routesMu.Lock()
	newest := a.p.c.routes[b.key.topic]
	a.p.c.routesMu.Unlock()
	if newest != nil && newest != rt {
		var holders []*brokerConn
		for _, q := range newest.queues {
			if q.queue == b.key.queue {
				holders = append(holders, q.broker)
			}
		}
		if len(holders) > 0 {
			rt = newest
			if !slices.Contains(holders, broker) {
				broker = holders[0]
			}
		}
	}
	return &unit{topic: b.key.topic, route: rt, broker: broker, msgs: b.msgs}
}

func (a *accumulator) flush(ctx context.Context) error {
	for _, done := range a.forceAll() {
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("ferry producer: flush: %w", ctx.Err())
		}
	}
	return nil
}

func (a *accumulator) close(ctx context.Context) error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.closing)
	}
	a.mu.Unlock()
	err := a.flush(ctx)
	if err == nil {
		return nil
	}
	// Out of time: abandon what is left, and wait for its callbacks,
	// which now come at once.
	a.abort()
	for _, done := range a.forceAll() {
		<-done
	}
	return fmt.Errorf("ferry producer: close: pending sends abandoned: %w", ctx.Err())
}
