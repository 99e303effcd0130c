package client

import (
	"go.opentelemetry.io/otel/trace"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Defaults of ProducerOptions.
const (
	DefaultRetries = 2
	DefaultTimeout = 3 * time.Second
	DefaultBackoff = 100 * time.Millisecond
	// DefaultMaxMessageBytes bounds one message's body plus its header keys
	// and values, as the broker's transports do by default.
	DefaultMaxMessageBytes = 4 << 20
	// DefaultMaxHeaderBytes bounds one message's header keys and values, as
	// the broker does.
	DefaultMaxHeaderBytes = 64 << 10
	// NoRetries in ProducerOptions.Retries disables retries (0 means the
	// default).
	NoRetries = -1
	// maxBackoff caps the doubling of ProducerOptions.Backoff.
	maxBackoff = 5 * time.Second
)

// RetryTarget says where a failed send is retried when the client knows
// several brokers.
type RetryTarget string

const (
	// RetryOtherBroker retries on another broker that has the topic (the
	// message goes to one of that broker's queues), so that one broker
	// being down does not stop the producer. Only an attempt that
	// certainly stored nothing moves: once an attempt's outcome is unknown
	// (the connection broke after the request went out, or it timed out)
	// the retries stay on its broker and queue, where the store
	// de-duplicates them; a retry elsewhere could store the message twice.
	RetryOtherBroker RetryTarget = "other"
	// RetrySameBroker retries on the broker and queue of the first
	// attempt, which keeps the order of a queue's messages.
	RetrySameBroker RetryTarget = "same"
)

// ProducerOptions configure a Producer. The zero value is the defaults.
type ProducerOptions struct {
	// ID names the producer in message ids ("<ID>-<seq>"). Default: a
	// random id. Ids must not repeat within the broker's de-duplication
	// window, or the broker takes a new message for a retry of an old one
	// and drops it: with an explicit ID, seq starts at the current Unix
	// time in nanoseconds so that a restarted producer does not reuse ids.
	ID string
	// Retries is how many times a failed send is retried (0: DefaultRetries;
	// NoRetries: none), after Backoff. Retried are: the broker unreachable
	// or the connection broken (sdk.ErrUnavailable, sdk.ErrClosed), and a
	// topic whose queues changed. A retry carries the same message id to
	// the same queue unless it moves to another broker (see SyncRetry), so
	// a retry whose first attempt was stored is de-duplicated by the store
	// and answered with the original offset. Errors the broker reports
	// (sdk.ErrInvalidArgument, sdk.ErrNotFound, sdk.ErrFull, ...) are
	// returned at once.
	Retries int
	// RetryOnTimeout retries an attempt that timed out too. Off by
	// default: a timed-out send may have been stored, and only the
	// broker's de-duplication window (sdk.DedupWindow ids per queue) makes
	// its retry safe.
	RetryOnTimeout bool
	// Timeout bounds each attempt, including waiting for the broker to
	// come back (default DefaultTimeout). The broker gets it too.
	Timeout time.Duration
	// Backoff is the wait before the first retry; it doubles for each
	// further one, up to 5s (default DefaultBackoff). A retry that moves
	// to another broker does not wait.
	Backoff time.Duration
	// Selector picks each message's queue (default RoundRobin()). With
	// several brokers it picks among all the topic's queues on all of
	// them; a queue whose broker is down is skipped for the next one on a
	// broker that is up.
	Selector QueueSelector
	// SyncRetry is where SendSync and SendBatchSync retry when the client
	// knows several brokers (default RetryOtherBroker, RocketMQ's rule).
	SyncRetry RetryTarget
	// AsyncRetry is where SendAsync retries (default RetrySameBroker,
	// RocketMQ's rule: it keeps a queue's order).
	AsyncRetry RetryTarget
	// RequireDurable makes every status weaker than STATUS_OK an error
	// (matching ErrNotDurable and the status's sentinel, such as
	// sdk.ErrFlushTimeout); the Result still carries the offset the
	// message was stored at. Without it such a Result comes with a nil
	// error and its Status says how durable it is.
	RequireDurable bool
	// MaxMessageBytes bounds a message's body plus header keys and values
	// (default DefaultMaxMessageBytes); a larger message fails with
	// sdk.ErrInvalidArgument before anything is sent.
	MaxMessageBytes int
	// MaxHeaderBytes bounds a message's header keys and values (default
	// DefaultMaxHeaderBytes).
	MaxHeaderBytes int

	// Async sends (SendAsync); see its doc.

	// Linger is how long an async batch waits for more messages before it
	// is sent (default DefaultLinger; NoLinger sends as soon as the queue
	// has no batch in flight).
	Linger time.Duration
	// MaxBatchBytes bounds an async batch (default DefaultMaxBatchBytes);
	// a batch that reaches it is sent at once.
	MaxBatchBytes int
	// MaxInflight is the async window: how many messages may be accepted
	// by SendAsync and not yet answered (default DefaultAsyncInflight).
	// SendAsync blocks while it is full.
	MaxInflight int
}

// ErrNotDurable matches the error a send with ProducerOptions.RequireDurable
// returns for a message the broker stored with a status weaker than
// STATUS_OK, and the error of an answer without any status.
var ErrNotDurable = errors.New("not as durable as required")

// Message is what an application sends.
type Message struct {
	// ID, when set, is the message's id instead of one the producer makes
	// up ("<producer id>-<seq>"): an order number, a UUID. Sending a
	// message again with the same ID, to the same queue, within the
	// broker's de-duplication window (sdk.DedupWindow recent ids per
	// queue), stores it once and answers with its first offset, as the
	// client's own retries are: so an application may retry a send whose
	// outcome it does not know. RoundRobin and KeyHash send a message with
	// an ID and no Key to the queue its ID hashes to, so that a retry
	// finds it; a custom Selector must pick the same queue for the same
	// ID for its retries to be de-duplicated. At most MaxIDBytes of
	// printable UTF-8.
	ID    string
	Topic string
	// Key routes the message (see KeyHash) and travels with it.
	Key     string
	Headers map[string]string
	Body    []byte
}

// MaxIDBytes bounds Message.ID.
const MaxIDBytes = 256

// Result is the broker's answer for one message.
type Result struct {
	// ID is the message's id: Message.ID, or the one the producer gave it
	// ("<producer id>-<seq>").
	ID    string
	Topic string
	// Queue is the message's queue on Broker; -1 when none was chosen.
	Queue int32
	// Offset is the message's offset in its queue; -1 when it was not
	// stored (its send failed) or is not known (a oneway send).
	Offset int64
	// Status is how durable the message is. Anything but STATUS_OK is a
	// weaker guarantee than the broker's configured one: FLUSH_TIMEOUT
	// (stored, not flushed in time), REPLICA_TIMEOUT or
	// REPLICA_NOT_AVAILABLE (stored and flushed, not replicated). It is
	// returned with a nil error unless ProducerOptions.RequireDurable.
	// STATUS_UNSPECIFIED means no answer (a failed or oneway send).
	Status ferryv1.Status
	// Broker is the address of the broker the message was sent to.
	Broker string
}

// Producer sends messages through its Client's produce streams (one per
// broker). It is safe for concurrent use; many goroutines sending at once
// share the streams.
type Producer struct {
	c    *Client
	opts ProducerOptions
	id   string
	seq  atomic.Uint64

	asyncMu     sync.Mutex
	async       *accumulator // nil until the first SendAsync
	asyncClosed bool
}

// NewProducer returns a producer with opts, defaults filled in.
func (c *Client) NewProducer(opts ProducerOptions) *Producer {
	p := &Producer{c: c}
	if opts.ID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		opts.ID = "p" + hex.EncodeToString(b[:])
	} else {
		p.seq.Store(uint64(time.Now().UnixNano()))
	}
	if opts.Retries == 0 {
		opts.Retries = DefaultRetries
	} else if opts.Retries < 0 {
		opts.Retries = 0
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	if opts.Selector == nil {
		opts.Selector = RoundRobin()
	}
	if opts.SyncRetry == "" {
		opts.SyncRetry = RetryOtherBroker
	}
	if opts.AsyncRetry == "" {
		opts.AsyncRetry = RetrySameBroker
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.Linger == 0 {
		opts.Linger = DefaultLinger
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	opts.MaxBatchBytes = min(opts.MaxBatchBytes, c.maxRequestBytes/2)
	if opts.MaxInflight <= 0 {
		opts.MaxInflight = DefaultAsyncInflight
	}
	p.opts, p.id = opts, opts.ID
	return p
}

// ID is the producer's id, the prefix of its message ids.
func (p *Producer) ID() string { return p.id }

// SendSync sends one message and waits until the broker stored it (as
// durably as the broker is configured to; see Result.Status), retrying as
// ProducerOptions say. On error the message may still have been stored when
// the error is a timeout (context.DeadlineExceeded) or, after the retries ran
// out, sdk.ErrUnavailable.
func (p *Producer) SendSync(ctx context.Context, m Message) (Result, error) {
	rs, err := p.SendBatchSync(ctx, []Message{m})
	if len(rs) == 0 {
		return Result{Queue: -1, Offset: -1}, err
	}
	return rs[0], err
}

// SendBatchSync sends msgs and waits for all of them. Messages for the same
// topic and broker travel in one request (one retry unit), topics and
// brokers in parallel. It returns one Result per message, in order, and the
// errors of the requests that failed joined (their messages' Results have
// Offset -1, or, for a status weaker than OK under RequireDurable, their
// offsets); the other Results are valid either way. The client does not keep
// msgs after it returns.
func (p *Producer) SendBatchSync(ctx context.Context, msgs []Message) (results []Result, err error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if tracing(ctx) {
		traced := make([]Message, len(msgs))
		spans := make([]trace.Span, len(msgs))
		for i := range msgs {
			traced[i], spans[i] = startSend(ctx, msgs[i])
		}
		msgs = traced
		defer func() {
			for i, span := range spans {
				var e error
				if i < len(results) && results[i].Offset < 0 {
					e = err
				}
				r := Result{Queue: -1, Offset: -1}
				if i < len(results) {
					r = results[i]
				}
				endSend(span, r, e)
			}
		}()
	}
	results = make([]Result, len(msgs))
	var topics []string
	byTopic := map[string][]int{}
	for i, m := range msgs {
		results[i] = Result{ID: p.idOf(&m), Topic: m.Topic, Queue: -1, Offset: -1}
		if _, ok := byTopic[m.Topic]; !ok {
			topics = append(topics, m.Topic)
		}
		byTopic[m.Topic] = append(byTopic[m.Topic], i)
	}
	if len(topics) == 1 {
		return results, p.sendTopic(ctx, topics[0], msgs, byTopic[topics[0]], results)
	}
	errs := make([]error, len(topics))
	var wg sync.WaitGroup
	for i, t := range topics {
		wg.Go(func() { errs[i] = p.sendTopic(ctx, t, msgs, byTopic[t], results) })
	}
	wg.Wait()
	return results, errors.Join(errs...)
}

func (p *Producer) nextID() string {
	return p.id + "-" + strconv.FormatUint(p.seq.Add(1), 10)
}

// idOf is m's id: the caller's, or a new one.
func (p *Producer) idOf(m *Message) string {
	if m.ID != "" {
		return m.ID
	}
	return p.nextID()
}

// check refuses a message the broker would refuse, before anything is sent.
func (p *Producer) check(m *Message) error {
	if m.Topic == "" {
		return fmt.Errorf("ferry producer: %w: empty topic name", sdk.ErrInvalidArgument)
	}
	if err := checkID(m.ID); err != nil {
		return err
	}
	hdr := 0
	for k, v := range m.Headers {
		hdr += len(k) + len(v)
	}
	if hdr > p.opts.MaxHeaderBytes {
		return fmt.Errorf("ferry producer: %w: message headers are %d bytes, over the limit max_header_bytes = %d",
			sdk.ErrInvalidArgument, hdr, p.opts.MaxHeaderBytes)
	}
	if n := len(m.Body) + hdr; n > p.opts.MaxMessageBytes {
		return fmt.Errorf("ferry producer: %w: message is %d bytes (body %d, headers %d), over the limit max_message_bytes = %d",
			sdk.ErrInvalidArgument, n, len(m.Body), hdr, p.opts.MaxMessageBytes)
	}
	return nil
}

// unit is one request's worth of messages: one topic, one broker. It is the
// unit of retries.
type unit struct {
	topic  string
	route  *topicRoute
	broker *brokerConn
	msgs   []*ferryv1.Message // queues set for broker
	idx    []int              // msgs[j] is the caller's message idx[j] (sendTopic)
	resp   *ferryv1.ProduceResponse
}

// sendTopic sends msgs[idx] (all for topic), one request per broker, with
// retries, and fills results[idx].
func (p *Producer) sendTopic(ctx context.Context, topic string, msgs []Message, idx []int, results []Result) error {
	for _, i := range idx {
		if err := p.check(&msgs[i]); err != nil {
			return err
		}
	}
	rt, err := p.route(ctx, topic)
	if err != nil {
		return err
	}
	born := time.Now().UnixNano()
	var units []*unit
	for _, i := range idx {
		m := &msgs[i]
		q := p.pick(rt, m)
		var u *unit
		for _, x := range units {
			if x.broker == q.broker {
				u = x
			}
		}
		if u == nil {
			u = &unit{topic: topic, route: rt, broker: q.broker}
			units = append(units, u)
		}
		u.msgs = append(u.msgs, &ferryv1.Message{Id: results[i].ID, Topic: topic, Queue: q.queue, Key: m.Key, Headers: m.Headers, Body: m.Body, BornUnixNano: born})
		u.idx = append(u.idx, i)
	}
	errs := make([]error, len(units))
	if len(units) == 1 {
		errs[0] = p.deliver(ctx, units[0], p.opts.SyncRetry)
	} else {
		var wg sync.WaitGroup
		for k, u := range units {
			wg.Go(func() { errs[k] = p.deliver(ctx, u, p.opts.SyncRetry) })
		}
		wg.Wait()
	}
	for k, u := range units {
		for j, m := range u.msgs {
			r := &results[u.idx[j]]
			r.Broker = u.broker.addr
			if errs[k] != nil || u.resp == nil {
				continue
			}
			r.Queue, r.Offset, r.Status = m.Queue, u.resp.Offsets[j], u.resp.Status
			if err := p.statusError(*r); err != nil && errs[k] == nil {
				errs[k] = err
			}
		}
	}
	return errors.Join(errs...)
}

// route returns topic's route, bounded by the producer's timeout.
func (p *Producer) route(ctx context.Context, topic string) (*topicRoute, error) {
	// The cache answers almost every send: no timeout context for it (one
	// per message was 5% of an async producer's CPU).
	if rt := p.c.cachedRoute(topic); rt != nil {
		return rt, nil
	}
	actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	rt, err := p.c.route(actx, topic)
	if err != nil {
		if p.c.closed() {
			return nil, errClientClosed
		}
		return nil, fmt.Errorf("ferry producer: %w", err)
	}
	return rt, nil
}

// pick chooses m's queue with the selector, avoiding brokers that are down.
func (p *Producer) pick(rt *topicRoute, m *Message) queueRoute {
	n := int32(len(rt.queues))
	q := p.opts.Selector.Select(m, n)
	if q < 0 || q >= n {
		q = ((q % n) + n) % n
	}
	return rt.healthy(int(q))
}

// statusError is what RequireDurable makes of a status weaker than OK; an
// answer without a status is an error in any case.
func (p *Producer) statusError(r Result) error {
	var sentinel error
	switch r.Status {
	case ferryv1.Status_STATUS_OK:
		return nil
	case ferryv1.Status_STATUS_FLUSH_TIMEOUT:
		sentinel = sdk.ErrFlushTimeout
	case ferryv1.Status_STATUS_REPLICA_TIMEOUT:
		sentinel = sdk.ErrReplicaTimeout
	case ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE:
		sentinel = sdk.ErrReplicaNotAvailable
	default:
		return fmt.Errorf("ferry producer: message %s: broker %s answered offset %d without a status (%v): %w",
			r.ID, r.Broker, r.Offset, r.Status, ErrNotDurable)
	}
	if !p.opts.RequireDurable {
		return nil
	}
	return fmt.Errorf("ferry producer: message %s stored at %s/%d offset %d with status %s, weaker than required (RequireDurable): %w: %w",
		r.ID, r.Topic, r.Queue, r.Offset, StatusName(r.Status), ErrNotDurable, sentinel)
}

// StatusName is a status's short name: "OK", "FLUSH_TIMEOUT",
// "REPLICA_TIMEOUT", "REPLICA_NOT_AVAILABLE" or "UNSPECIFIED".
func StatusName(s ferryv1.Status) string {
	return strings.TrimPrefix(s.String(), "STATUS_")
}

// deliver sends u with retries as the options and target say, and sets
// u.resp.
func (p *Producer) deliver(ctx context.Context, u *unit, target RetryTarget) error {
	tried := []*brokerConn{}
	pinned := false // an attempt of unknown outcome went to u.broker: retries stay there
	for attempt := 0; ; attempt++ {
		if !slices.Contains(tried, u.broker) {
			tried = append(tried, u.broker)
		}
		resp, err := p.attempt(ctx, u)
		if err == nil {
			u.resp = resp
			return nil
		}
		if p.c.closed() {
			return errClientClosed
		}
		maybeStored := !isNotStored(err)
		if ctx.Err() != nil {
			if maybeStored || pinned {
				return fmt.Errorf("ferry producer: send to %s abandoned, outcome unknown: %w", u.broker.addr, ctx.Err())
			}
			return fmt.Errorf("ferry producer: send to %s abandoned (%v): %w", u.broker.addr, err, ctx.Err())
		}
		retry := false
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("ferry producer: send to %s timed out after %s, outcome unknown (the message may be stored): %w", u.broker.addr, p.opts.Timeout, err)
			retry = p.opts.RetryOnTimeout
			// The broker may be frozen or cut off while its group
			// elects another leader: the next send asks the brokers
			// for the route again (waiting out the election, bounded)
			// instead of following this one into the same wait.
			p.c.markStale(u.topic)
		case errors.Is(err, sdk.ErrUnavailable), errors.Is(err, sdk.ErrClosed):
			retry = true
		case errors.Is(err, sdk.ErrNotFound):
			// The topic's queues may have changed: if so, nothing was
			// stored and the batch is routed again.
			maybeStored = false
			retry = p.reroute(ctx, u)
		case errors.Is(err, sdk.ErrNotLeader):
			// A slave or raft follower refused the batch (nothing stored):
			// refresh the routes, which name the new leader once there is
			// one, and try again there after the backoff.
			maybeStored = false
			p.reroute(ctx, u)
			retry = true
		}
		if maybeStored {
			pinned = true
		}
		if !retry || attempt >= p.opts.Retries {
			return err
		}
		if !pinned && target == RetryOtherBroker {
			if next := otherBroker(u, tried); next != nil {
				p.c.log.Debug("ferry producer: retrying on another broker", "from", u.broker.addr, "to", next.addr, "error", err)
				moveTo(u, next)
				continue
			}
		}
		wait := min(p.opts.Backoff<<attempt, maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("ferry producer: send to %s abandoned while retrying (%v): %w", u.topic, err, ctx.Err())
		}
	}
}

// otherBroker picks the broker a retry of u moves to: one of the topic's
// brokers not tried yet, preferring those that are not down; nil if none.
func otherBroker(u *unit, tried []*brokerConn) *brokerConn {
	var fallback *brokerConn
	for _, b := range u.route.brokers() {
		if slices.Contains(tried, b) {
			continue
		}
		if !b.down() {
			return b
		}
		if fallback == nil {
			fallback = b
		}
	}
	return fallback
}

// moveTo routes u's messages to queues of broker b (each to the queue at its
// old queue's index modulo b's queue count).
func moveTo(u *unit, b *brokerConn) {
	qs := u.route.queuesOf(b)
	for _, m := range u.msgs {
		m.Queue = qs[int(m.Queue)%len(qs)]
	}
	u.broker = b
}

// markStale has the next send of topic refresh its route first.
func (c *Client) markStale(topic string) {
	c.routesMu.Lock()
	if r := c.routes[topic]; r != nil && !r.stale {
		c.routes[topic] = &topicRoute{topic: r.topic, queues: r.queues, at: r.at, stale: true}
	}
	c.routesMu.Unlock()
}

// reroute refreshes u's topic after the broker said it lacks it (or one of
// its queues) and reports whether the batch can be sent again: the topic's
// queues on u's broker changed (the messages get new queues there), or the
// broker lost the topic and another one has it.
func (p *Producer) reroute(ctx context.Context, u *unit) bool {
	p.c.routesMu.Lock()
	if r := p.c.routes[u.topic]; r != nil {
		p.c.routes[u.topic] = &topicRoute{topic: r.topic, queues: r.queues, at: r.at, stale: true}
	}
	p.c.routesMu.Unlock()
	rt, err := p.route(ctx, u.topic)
	if err != nil {
		return false
	}
	before, after := u.route.queuesOf(u.broker), rt.queuesOf(u.broker)
	u.route = rt
	if slices.Equal(before, after) {
		return false
	}
	if len(after) == 0 {
		if len(rt.queues) == 0 {
			return false
		}
		u.broker = rt.queues[0].broker
		after = rt.queuesOf(u.broker)
	}
	for _, m := range u.msgs {
		m.Queue = after[int(m.Queue)%len(after)]
	}
	return true
}

// attempt sends u once, bounded by the producer's timeout, and turns an
// error the broker answered with into an error that matches its sentinel.
func (p *Producer) attempt(ctx context.Context, u *unit) (*ferryv1.ProduceResponse, error) {
	actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	resp, err := u.broker.produce(actx, &ferryv1.ProduceRequest{Messages: u.msgs})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		err := fmt.Errorf("ferry producer: broker %s: %w", u.broker.addr, sdk.ErrorFromProto(resp.Error))
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, err // the broker gave up waiting; the append may go on
		}
		return nil, notStored(err) // an error answer means nothing was stored
	}
	if len(resp.Offsets) != len(u.msgs) {
		return nil, fmt.Errorf("ferry producer: broker %s answered %d offsets for %d messages of %s", u.broker.addr, len(resp.Offsets), len(u.msgs), u.topic)
	}
	return resp, nil
}

// checkID refuses a caller's message id that is too long or not printable
// UTF-8 ("" is no id: the producer makes one up).
func checkID(id string) error {
	if len(id) > MaxIDBytes {
		return fmt.Errorf("ferry producer: %w: message id is %d bytes, over the limit of %d", sdk.ErrInvalidArgument, len(id), MaxIDBytes)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("ferry producer: %w: message id %q is not valid UTF-8", sdk.ErrInvalidArgument, id)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("ferry producer: %w: message id %q holds the unprintable character %U", sdk.ErrInvalidArgument, id, r)
		}
	}
	return nil
}
