package client

import (
	"github.com/ferrymq/ferry/core/telemetry"

	"go.opentelemetry.io/otel/trace"

	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Delivery is one message handed to a consumer: to a DeliveryHandler (push)
// or returned by Fetch (pull). It is settled exactly once: acknowledged,
// scheduled for a retry, or dead-lettered; the first of these wins and the
// others are no-ops. A delivery that is never settled (the consumer stopped,
// or its queue moved to another member) is delivered again later: the group
// never commits past it.
//
// Its methods are safe from any goroutine.
type Delivery struct {
	// Message is the message as stored where it was fetched from. A retried
	// message is a copy in the group's retry topic: Message.Topic, Queue,
	// Offset and Id are the copy's; its key, body and headers are the
	// original's, plus Ferry's bookkeeping headers (sdk.HeaderAttempt, …).
	Message *ferryv1.Message
	// ID, Topic, Queue and Offset name the original message, the same on
	// every attempt.
	ID     string
	Topic  string
	Queue  int32
	Offset int64
	// Attempt is 1 on a message's first delivery to the group, 2 on its
	// first retry, and so on.
	Attempt int
	// Group is the consumer group (in broadcast mode, the member's own
	// group "<group>@<member>").
	Group string

	rt    *runtime
	lane  *lane
	state atomic.Int32 // deliveryOpen, deliverySettled, deliveryAbandoned
	done  bool         // settled; guarded by rt.mu (the lane's commit window)

	tctx context.Context // the attempt's consumer.process span; set before the handler runs

	mu        sync.Mutex
	inPlace   *time.Duration // orderly: a retry in place was asked for, after this delay
	released  bool           // orderly: that retry is a Release: no attempt counted
	lastErr   error
	firstFail time.Time // when an attempt first failed
}

// takeInPlace returns and clears a retry in place asked for by Retry.
func (d *Delivery) takeInPlace() (*time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.inPlace, d.lastErr
	d.inPlace = nil
	return p, err
}

// takeReleased returns and clears whether the retry in place is a Release.
func (d *Delivery) takeReleased() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.released
	d.released = false
	return r
}

const (
	deliveryOpen int32 = iota
	deliverySettled
	deliveryAbandoned // its queue was revoked before it was processed
)

// Settled reports whether d was acknowledged, retried or dead-lettered.
func (d *Delivery) Settled() bool { return d.state.Load() == deliverySettled }

// Ack settles d as processed: its offset may be committed once every earlier
// message of its queue is settled too. Acking a settled delivery does
// nothing.
func (d *Delivery) Ack() {
	if d.state.Load() == deliveryOpen && traced(d.traceContext()) {
		_, span := consumerTracer.Start(d.traceContext(), telemetry.SpanConsumerAck,
			trace.WithAttributes(telemetry.AttrOperationType.String(telemetry.OpSettle), telemetry.AttrMessageID.String(d.ID),
				telemetry.AttrGroup.String(d.Group), telemetry.AttrOffset.Int64(d.Offset)))
		defer span.End()
	}
	d.rt.settle(d, outcomeAcked)
}

// traceContext is the context of d's consumer.process span, or, outside the
// push loop, the trace its message carries.
func (d *Delivery) traceContext() context.Context {
	if d.tctx != nil {
		return d.tctx
	}
	return telemetry.Extract(context.Background(), d.Message.GetHeaders())
}

// failureSpan starts the retry.schedule or dlq.route span of d, marks the
// attempt's span with the event, and returns the span and the headers of the
// copy with the new span's trace context: the next attempt continues the
// message's trace from there.
func (d *Delivery) failureSpan(name, event string, attempt int, cause error, h map[string]string) trace.Span {
	pctx := d.traceContext()
	if !traced(pctx) {
		return noSpan // a message that carries no trace, nor will its copy
	}
	attrs := trace.WithAttributes(telemetry.AttrGroup.String(d.Group), telemetry.AttrAttempt.Int(attempt),
		telemetry.AttrTopic.String(d.Topic), telemetry.AttrQueue.Int(int(d.Queue)), telemetry.AttrOffset.Int64(d.Offset),
		telemetry.AttrReason.String(cause.Error()))
	trace.SpanFromContext(pctx).AddEvent(event, attrs)
	sctx, span := consumerFailureTracer(name).Start(pctx, name, attrs,
		trace.WithAttributes(telemetry.AttrOperationType.String(telemetry.OpSend), telemetry.AttrMessageID.String(d.ID)))
	telemetry.Inject(sctx, h)
	return span
}

// ErrNacked is the cause recorded for a message its handler gave back with
// Nack.
var ErrNacked = errors.New("nacked by the handler")

// Nack gives d back for a later attempt, after delay: 0 redelivers it now
// (due at once), a negative delay waits what the consumer's RetryPolicy
// gives this attempt. It counts as a failed attempt: at
// RetryPolicy.MaxAttempts the message goes to the group's dead-letter queue
// instead. To give a message back without counting an attempt, Release it.
//
// In concurrent mode (and pull mode) Nack settles d before it returns: it
// stores the retry copy (or the dead letter) and returns nil, or the error
// that kept it from doing so (then d stays unsettled and is delivered again
// later). In orderly mode it only asks for a retry in place: the handler
// should return, and the consumer calls it again with the same message after
// delay.
func (d *Delivery) Nack(delay time.Duration) error {
	var cause error = ErrNacked
	if delay >= 0 {
		cause = RetryAfter(delay, ErrNacked)
	}
	return d.Fail(cause)
}

// Release gives d back unprocessed, to be delivered again now, without
// counting an attempt (Delivery.Attempt stays as it is, and no retry or
// dead letter follows from it): for a handler that cannot take the message
// now (it is shutting down, a resource it needs is busy). It is counted in
// ConsumerStats.Released.
//
// In concurrent mode (and pull mode) Release settles d before it returns: it
// stores a copy, due at once, in the group's retry topic, and returns nil or
// the error that kept it from doing so (then d stays unsettled and is
// delivered again later). In orderly mode it asks for a redelivery in place:
// the handler should return, and the consumer calls it again with the same
// message, first in its queue.
func (d *Delivery) Release() error {
	if d.state.Load() != deliveryOpen {
		return nil
	}
	if d.rt.orderly {
		var now time.Duration
		d.mu.Lock()
		d.inPlace, d.lastErr, d.released = &now, errReleased, true
		d.mu.Unlock()
		return nil
	}
	now := time.Now()
	m := d.copyTo(sdk.RetryTopic(d.Group), sdk.DelayLevel(0), "l", errReleased, now)
	m.Headers[sdk.HeaderAttempt] = strconv.Itoa(d.Attempt)
	m.Headers[sdk.HeaderDeliverAt] = strconv.FormatInt(now.UnixNano(), 10)
	if err := d.rt.sender.send(d.rt.ctx, m); err != nil {
		return fmt.Errorf("ferry consumer: storing the release of %s: %w", d.ID, err)
	}
	d.rt.settle(d, outcomeReleased)
	return nil
}

// errReleased is the cause recorded in the headers of a released message.
var errReleased = errors.New("released by the handler")

// Fail settles d after an attempt that failed with err, as the consumer does
// with a handler's error: retried as its RetryPolicy says (after the delay of
// a RetryAfter error), or dead-lettered when err is Permanent or the
// attempts ran out. It is Nack with the error recorded in the message's
// headers; the same remarks on orderly mode apply.
func (d *Delivery) Fail(err error) error {
	if d.state.Load() != deliveryOpen {
		return nil
	}
	err = d.Retry(d.rt.ctx, err, d.rt.opts.Retry)
	if isDead(err) {
		return d.DeadLetter(d.rt.ctx, err)
	}
	return err
}

// Retry applies policy to a failed attempt of d (cause is why it failed; a
// zero policy means the consumer's). When the policy allows another attempt,
// Retry schedules it and returns nil: in concurrent mode it stores a copy of
// the message in the group's retry topic, due after the policy's delay for
// this attempt (or the delay of a RetryAfter cause), and settles d once the
// broker has it; in orderly mode it asks for a retry in place. When the
// policy gives up (cause is Permanent, or d is on its last attempt), Retry
// returns a dead-letter error wrapping cause, for DeadLetter; d stays
// unsettled. Other errors mean the copy could not be stored (ctx ended, or
// the broker refused it); d stays unsettled.
//
// Stages call Retry; handlers return errors and let the consumer call it.
func (d *Delivery) Retry(ctx context.Context, cause error, policy RetryPolicy) error {
	if d.state.Load() != deliveryOpen {
		return nil
	}
	if cause == nil {
		cause = errors.New("failed")
	}
	if isDead(cause) {
		return cause
	}
	p := policy.withDefaults(d.rt.orderly)
	if d.Attempt >= p.MaxAttempts {
		return GiveUp(fmt.Sprintf("max attempts (%d) reached", p.MaxAttempts), cause)
	}
	delay := p.Delay(d.Attempt)
	if ra := (*retryAfterError)(nil); errors.As(cause, &ra) {
		delay = ra.delay
	}
	now := time.Now()
	d.mu.Lock()
	if d.firstFail.IsZero() {
		d.firstFail = now
	}
	if d.rt.orderly {
		d.inPlace, d.lastErr = &delay, cause
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	m := d.copyTo(sdk.RetryTopic(d.Group), sdk.DelayLevel(delay), "r", cause, now)
	m.Headers[sdk.HeaderAttempt] = strconv.Itoa(d.Attempt + 1)
	m.Headers[sdk.HeaderDeliverAt] = strconv.FormatInt(now.Add(delay).UnixNano(), 10)
	span := d.failureSpan(telemetry.SpanRetrySchedule, telemetry.EventRetry, d.Attempt, cause, m.Headers)
	defer span.End()
	if err := d.rt.sender.send(ctx, m); err != nil {
		span.RecordError(err)
		return fmt.Errorf("ferry consumer: storing the retry of %s: %w", d.ID, err)
	}
	d.rt.settle(d, outcomeRetried)
	return nil
}

// DeadLetter stores d in the group's dead-letter topic and settles it. The
// dead letter's headers say why (sdk.HeaderDeadReason: the reason of a
// GiveUp or Permanent cause, else "failed"), the last error, the attempts
// made, where the message was first stored and when it first and last
// failed. An error means it could not be stored (ctx ended, or the broker
// refused it); d stays unsettled.
func (d *Delivery) DeadLetter(ctx context.Context, cause error) error {
	if d.state.Load() != deliveryOpen {
		return nil
	}
	reason, last := "failed", cause
	if de := (*deadError)(nil); errors.As(cause, &de) {
		reason, last = de.reason, de.err
	}
	if last == nil {
		last = errors.New(reason)
	}
	now := time.Now()
	m := d.copyTo(sdk.DLQTopic(d.Group), 0, "d", last, now)
	m.Headers[sdk.HeaderDeadReason] = reason
	m.Headers[sdk.HeaderAttempt] = strconv.Itoa(d.Attempt)
	delete(m.Headers, sdk.HeaderDeliverAt)
	span := d.failureSpan(telemetry.SpanDLQRoute, telemetry.EventDeadLetter, d.Attempt, last, m.Headers)
	defer span.End()
	if err := d.rt.sender.send(ctx, m); err != nil {
		span.RecordError(err)
		return fmt.Errorf("ferry consumer: storing the dead letter of %s: %w", d.ID, err)
	}
	d.rt.log.Warn("ferry consumer: message dead-lettered", "group", d.Group, "id", d.ID, "topic", d.Topic,
		"queue", d.Queue, "offset", d.Offset, "attempts", d.Attempt, "reason", reason, "error", last)
	d.rt.settle(d, outcomeDead)
	return nil
}

// maxErrorHeader bounds the last error recorded in a message's headers.
const maxErrorHeader = 1024

// copyTo returns a copy of d's message for topic/queue with the bookkeeping
// headers of a failure now, and an id derived from where d's message is
// stored: sending the copy again (after a crash before the commit) gives the
// same id, which the broker de-duplicates.
func (d *Delivery) copyTo(topic string, queue int32, kind string, cause error, now time.Time) *ferryv1.Message {
	m := d.Message
	h := make(map[string]string, len(m.Headers)+8)
	maps.Copy(h, m.Headers)
	h[sdk.HeaderOriginTopic] = d.Topic
	h[sdk.HeaderOriginQueue] = strconv.Itoa(int(d.Queue))
	h[sdk.HeaderOriginOffset] = strconv.FormatInt(d.Offset, 10)
	h[sdk.HeaderOriginID] = d.ID
	msg := cause.Error()
	if len(msg) > maxErrorHeader {
		msg = msg[:maxErrorHeader] + "…"
	}
	h[sdk.HeaderLastError] = msg
	d.mu.Lock()
	first := d.firstFail
	d.mu.Unlock()
	if first.IsZero() {
		first = now
	}
	if _, ok := h[sdk.HeaderFirstFailure]; !ok {
		h[sdk.HeaderFirstFailure] = first.UTC().Format(time.RFC3339Nano)
	}
	h[sdk.HeaderLastFailure] = now.UTC().Format(time.RFC3339Nano)
	where := "t"
	if m.Topic != d.Topic {
		where = "r"
	}
	id := fmt.Sprintf("%s~%s.%s%d.%d", d.ID, kind, where, m.Queue, m.Offset)
	return &ferryv1.Message{Id: id, Topic: topic, Queue: queue, Key: m.Key, Headers: h, Body: m.Body, BornUnixNano: m.BornUnixNano}
}

// newDelivery describes m, fetched from lane l, to its handler. A message of
// the group's retry topic names its original in its headers; a message of
// the consumer's topic is its own original, on attempt 1, whatever headers it
// carries.
func newDelivery(rt *runtime, l *lane, m *ferryv1.Message) *Delivery {
	d := &Delivery{Message: m, ID: m.Id, Topic: m.Topic, Queue: m.Queue, Offset: m.Offset, Attempt: 1, Group: rt.group, rt: rt, lane: l}
	if !l.retry {
		if hasBookkeeping(m.Headers) {
			// Someone re-published a retried message: it starts afresh.
			h := maps.Clone(m.Headers)
			for _, k := range bookkeepingHeaders {
				delete(h, k)
			}
			m.Headers = h
		}
		return d
	}
	h := m.Headers
	if v := h[sdk.HeaderOriginID]; v != "" {
		d.ID = v
	}
	if v := h[sdk.HeaderOriginTopic]; v != "" {
		d.Topic = v
	}
	if v, err := strconv.ParseInt(h[sdk.HeaderOriginQueue], 10, 32); err == nil {
		d.Queue = int32(v)
	}
	if v, err := strconv.ParseInt(h[sdk.HeaderOriginOffset], 10, 64); err == nil {
		d.Offset = v
	}
	if v, err := strconv.Atoi(h[sdk.HeaderAttempt]); err == nil && v > 1 {
		d.Attempt = v
	}
	if v, err := time.Parse(time.RFC3339Nano, h[sdk.HeaderFirstFailure]); err == nil {
		d.firstFail = v
	}
	return d
}

var bookkeepingHeaders = []string{
	sdk.HeaderAttempt, sdk.HeaderDeliverAt, sdk.HeaderOriginTopic, sdk.HeaderOriginQueue,
	sdk.HeaderOriginOffset, sdk.HeaderOriginID, sdk.HeaderLastError, sdk.HeaderDeadReason,
	sdk.HeaderFirstFailure, sdk.HeaderLastFailure,
}

func hasBookkeeping(h map[string]string) bool {
	for _, k := range bookkeepingHeaders {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// RetryPolicy says how often and when a failed message is tried again.
type RetryPolicy struct {
	// MaxAttempts is how many times a message is delivered at most, the
	// first time included; then it goes to the group's dead-letter queue.
	// 0 means DefaultMaxAttempts; 1 means no retries.
	MaxAttempts int
	// Delays: the n-th retry waits Delays[n-1]; the last one repeats. nil
	// means sdk.DelayLevels (RocketMQ's 1s 5s 10s 30s 1m 2m … 2h) in
	// concurrent mode and OrderlyDelays in orderly mode.
	Delays []time.Duration
}

// DefaultMaxAttempts is RetryPolicy.MaxAttempts unless set: RocketMQ's 16.
const DefaultMaxAttempts = 16

// OrderlyDelays are the default waits before retries in place in orderly
// mode, where a failing message holds up its queue: short, doubling.
var OrderlyDelays = []time.Duration{
	100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
	1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second,
}

func (p RetryPolicy) withDefaults(orderly bool) RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if len(p.Delays) == 0 {
		p.Delays = sdk.DelayLevels
		if orderly {
			p.Delays = OrderlyDelays
		}
	}
	return p
}

// Delay is how long the retry after attempt waits (attempt ≥ 1).
func (p RetryPolicy) Delay(attempt int) time.Duration {
	if len(p.Delays) == 0 {
		return 0
	}
	return p.Delays[min(max(attempt, 1), len(p.Delays))-1]
}

// deadError marks a failure that is not retried: the message goes to the
// dead-letter queue with reason.
type deadError struct {
	reason string
	err    error
}

func (e *deadError) Error() string {
	if e.err == nil {
		return e.reason
	}
	return e.reason + ": " + e.err.Error()
}
func (e *deadError) Unwrap() error { return e.err }

// Permanent marks err as a failure that retrying cannot fix (a malformed
// message, a 4xx answer): the message goes straight to the dead-letter queue,
// with reason "permanent error". Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &deadError{reason: "permanent error", err: err}
}

// GiveUp is a failure after which the message goes to the dead-letter queue
// with the given reason (what a retry stage returns when it gives up).
func GiveUp(reason string, err error) error { return &deadError{reason: reason, err: err} }

// IsPermanent reports whether err was made by Permanent or GiveUp: the
// message is not retried.
func IsPermanent(err error) bool { return isDead(err) }

func isDead(err error) bool {
	de := (*deadError)(nil)
	return errors.As(err, &de)
}

type retryAfterError struct {
	delay time.Duration
	err   error
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.err, e.delay)
}
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter is a failure whose next attempt should come after delay instead
// of the policy's (a webhook's 429 with Retry-After). It still counts as an
// attempt.
func RetryAfter(delay time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &retryAfterError{delay: max(delay, 0), err: err}
}
