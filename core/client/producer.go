package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Defaults of ProducerOptions.
const (
	DefaultRetries = 2
	DefaultTimeout = 3 * time.Second
	DefaultBackoff = 100 * time.Millisecond
	// NoRetries in ProducerOptions.Retries disables retries (0 means the
	// default).
	NoRetries = -1
	// maxBackoff caps the doubling of ProducerOptions.Backoff.
	maxBackoff = 5 * time.Second
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
	// NoRetries: none). Only failures whose message was certainly not
	// stored, or whose retry the broker de-duplicates, are retried: the
	// broker unreachable or the connection broken (sdk.ErrUnavailable,
	// sdk.ErrClosed). Errors the broker reports (sdk.ErrInvalidArgument,
	// sdk.ErrNotFound, sdk.ErrFull, ...) are returned at once.
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
	// further one, up to 5s (default DefaultBackoff).
	Backoff time.Duration
	// Selector picks each message's queue (default RoundRobin()).
	Selector QueueSelector
}

// Message is what an application sends.
type Message struct {
	Topic string
	// Key routes the message (see KeyHash) and travels with it.
	Key     string
	Headers map[string]string
	Body    []byte
}

// Result is the broker's answer for one message.
type Result struct {
	// ID is the message id the producer gave it ("<producer id>-<seq>").
	ID    string
	Topic string
	Queue int32
	// Offset is the message's offset in its queue; -1 when it was not
	// stored (its send failed).
	Offset int64
	// Status is how durable the message is. Anything but STATUS_OK is a
	// weaker guarantee than the broker's configured one (flush or
	// replication did not complete in time) and is still returned with a
	// nil error.
	Status ferryv1.Status
}

// Producer sends messages through its Client's produce stream. It is safe for
// concurrent use; many goroutines sending at once share the one stream.
type Producer struct {
	c    *Client
	opts ProducerOptions
	id   string
	seq  atomic.Uint64
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
		return Result{Offset: -1}, err
	}
	return rs[0], err
}

// SendBatchSync sends msgs and waits for all of them. Messages for the same
// topic travel in one request (one retry unit), topics in parallel. It
// returns one Result per message, in order, and the errors of the topics that
// failed joined (their messages' Results have Offset -1); the other topics'
// Results are valid either way. The client does not keep msgs after it
// returns.
func (p *Producer) SendBatchSync(ctx context.Context, msgs []Message) ([]Result, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	results := make([]Result, len(msgs))
	var topics []string
	byTopic := map[string][]int{}
	for i, m := range msgs {
		results[i] = Result{ID: p.nextID(), Topic: m.Topic, Queue: -1, Offset: -1}
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

// sendTopic sends msgs[idx] (all for topic) as one request, with retries, and
// fills results[idx].
func (p *Producer) sendTopic(ctx context.Context, topic string, msgs []Message, idx []int, results []Result) error {
	if topic == "" {
		return fmt.Errorf("ferry producer: %w: message without a topic", sdk.ErrInvalidArgument)
	}
	born := time.Now().UnixNano()
	batch := make([]*ferryv1.Message, len(idx))
	for j, i := range idx {
		m := &msgs[i]
		batch[j] = &ferryv1.Message{Id: results[i].ID, Topic: topic, Key: m.Key, Headers: m.Headers, Body: m.Body, BornUnixNano: born}
	}

	queues := int32(0) // the queue count the batch's queues were chosen for
	for attempt := 0; ; attempt++ {
		if queues == 0 {
			n, err := p.selectQueues(ctx, topic, msgs, idx, batch)
			if err != nil {
				return err
			}
			queues = n
		}
		resp, err := p.attempt(ctx, batch)
		if err == nil {
			if len(resp.Offsets) != len(batch) {
				return fmt.Errorf("ferry producer: topic %s: the broker answered %d offsets for %d messages", topic, len(resp.Offsets), len(batch))
			}
			for j, i := range idx {
				results[i].Queue = batch[j].Queue
				results[i].Offset = resp.Offsets[j]
				results[i].Status = resp.Status
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ferry producer: send to %s abandoned, outcome unknown: %w", topic, ctx.Err())
		}
		retry := false
		switch {
		case p.c.closed():
			return errClientClosed
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("ferry producer: send to %s timed out after %s, outcome unknown (the message may be stored): %w", topic, p.opts.Timeout, err)
			retry = p.opts.RetryOnTimeout
		case errors.Is(err, sdk.ErrUnavailable), errors.Is(err, sdk.ErrClosed):
			retry = true
		case errors.Is(err, sdk.ErrNotFound):
			// The topic's queues may have changed: if so, nothing was
			// stored and the batch is routed again.
			p.c.forgetTopic(topic)
			mctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
			n, nerr := p.c.queueCount(mctx, topic)
			cancel()
			retry = nerr == nil && n != queues
			if retry {
				queues = 0
			}
		}
		if !retry || attempt >= p.opts.Retries {
			return err
		}
		wait := min(p.opts.Backoff<<attempt, maxBackoff)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("ferry producer: send to %s abandoned while retrying (%v): %w", topic, err, ctx.Err())
		}
	}
}

// selectQueues sets the queue of every message in batch and returns the queue
// count it chose them for.
func (p *Producer) selectQueues(ctx context.Context, topic string, msgs []Message, idx []int, batch []*ferryv1.Message) (int32, error) {
	actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	n, err := p.c.queueCount(actx, topic)
	if err != nil {
		return 0, fmt.Errorf("ferry producer: %w", err)
	}
	for j, i := range idx {
		q := p.opts.Selector.Select(&msgs[i], n)
		if q < 0 || q >= n {
			return 0, fmt.Errorf("ferry producer: %w: selector chose queue %d of topic %s, which has %d", sdk.ErrInvalidArgument, q, topic, n)
		}
		batch[j].Queue = q
	}
	return n, nil
}

// attempt sends the batch once, bounded by the producer's timeout, and turns
// an error the broker answered with into an error that matches its sentinel.
func (p *Producer) attempt(ctx context.Context, batch []*ferryv1.Message) (*ferryv1.ProduceResponse, error) {
	actx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req := &ferryv1.ProduceRequest{Messages: batch}
	resp, err := p.c.produce(actx, req)
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("ferry producer: broker: %w", sdk.ErrorFromProto(resp.Error))
	}
	return resp, nil
}
