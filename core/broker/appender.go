package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/internal/gopool"
)

// appender groups producers' batches into storage appends. One goroutine
// (run) issues appends in order; the store fixes offsets in that order and
// each append's durability is awaited by its own goroutine, so while one
// append waits for its fsync the next one is already being written: the
// store's group commit covers all of them.
//
// A batch stays in the in-flight list until it is answered. When the storage
// process dies, batches whose outcome is unknown are appended again, in their
// original order, to the next process; the store de-duplicates by message id.
type appender struct {
	b       *Broker
	in      chan *appendReq
	freed   chan struct{} // a batch was answered: room for another
	closing chan struct{}
	done    chan struct{}

	mu       sync.Mutex
	seq      uint64
	inflight []*batch // unanswered, in append order
	closed   bool
}

type appendReq struct {
	msgs   []*sdk.Message
	wires  sdk.MessageWires // msgs' wire forms, as the transport forwarded them (or nil)
	done   chan appendResult
	apply  bool              // a replica applying its master's messages: never replicated
	span   trace.SpanContext // the broker.append span, parent of the storage append
	traced telemetry.Traced  // msgs' sampled messages, each with its broker.append span

	// logDurable: an apply of committed raft entries, durable in the raft
	// log already (sdk.WithLogDurable): the store may take it without an
	// fsync of its own.
	logDurable bool
}

type appendResult struct {
	offsets []int64
	status  sdk.Status
	err     error
}

type batch struct {
	seq     uint64
	reqs    []*appendReq
	msgs    []*sdk.Message
	wires   sdk.MessageWires // msgs' wire forms where they have one; nil if none has
	attempt int              // how often the batch was sent; answers of older attempts are ignored
	gen     uint64           // storage generation of the latest attempt
	early   *earlyState      // handed to replication before its flush was done (under replicator.mu)
}

func newAppender(b *Broker) *appender {
	return &appender{
		b:       b,
		in:      make(chan *appendReq, 4096),
		freed:   make(chan struct{}, 1),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// append hands msgs to the appender and waits for their outcome. If ctx ends
// first the outcome is unknown to the caller, but the append goes on; a
// retried produce with the same ids is de-duplicated by the store.
//
// traced names msgs' sampled messages, each with the span of its
// broker.append (telemetry.Hop.Traced), for their storage spans.
func (a *appender) append(ctx context.Context, msgs []*sdk.Message, traced telemetry.Traced) ([]int64, sdk.Status, error) {
	r := &appendReq{msgs: msgs, wires: sdk.MessageWiresOf(ctx, msgs), done: make(chan appendResult, 1), span: trace.SpanContextFromContext(ctx), traced: traced}
	select {
	case a.in <- r:
	case <-a.closing:
		return nil, 0, fmt.Errorf("%w: broker is shutting down", sdk.ErrClosed)
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.offsets, res.status, res.err
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

func (a *appender) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.inflight)
}

// run is the appender's one goroutine.
func (a *appender) run() {
	defer close(a.done)
	var sentGen uint64 // generation the in-flight batches were last sent to
	for {
		impl, gen, changed := a.b.storage.Current()
		if impl == nil {
			// The storage process is being replaced.
			select {
			case <-changed:
			case <-a.closing:
				if a.pending() == 0 {
					return
				}
				<-changed
			}
			continue
		}
		st := impl.(sdk.Storage)
		if gen != sentGen {
			if sentGen != 0 {
				a.replay(st, gen)
			}
			sentGen = gen
			continue
		}
		in := a.in
		if a.pending() >= maxInflightAppends {
			in = nil // wait for room
		}
		select {
		case r := <-in:
			a.send(st, gen, a.collect(r))
		case <-a.freed:
		case <-changed:
		case <-a.closing:
			// Take what was queued before closing, then wait for answers.
			for {
				select {
				case r := <-a.in:
					a.send(st, gen, a.collect(r))
					continue
				default:
				}
				break
			}
			if a.pending() == 0 {
				return
			}
			select {
			case <-a.freed:
			case <-changed:
			}
		}
	}
}

// collect builds one batch from r and whatever else is queued, up to the
// batch limits.
func (a *appender) collect(r *appendReq) *batch {
	b := &batch{reqs: []*appendReq{r}, msgs: r.msgs, wires: r.wires}
	size := msgBytes(r.msgs)
	for len(b.msgs) < maxBatchMessages && size < maxBatchBytes {
		select {
		case r := <-a.in:
			b.reqs = append(b.reqs, r)
			if r.wires != nil || b.wires != nil {
				if b.wires == nil {
					b.wires = make(sdk.MessageWires, len(b.msgs), len(b.msgs)+len(r.msgs))
				}
				b.wires = append(b.wires[:len(b.wires):len(b.wires)], r.wires...)
				if r.wires == nil {
					b.wires = append(b.wires, make(sdk.MessageWires, len(r.msgs))...)
				}
			}
			b.msgs = append(b.msgs[:len(b.msgs):len(b.msgs)], r.msgs...)
			size += msgBytes(r.msgs)
			continue
		default:
		}
		break
	}
	a.mu.Lock()
	a.seq++
	b.seq = a.seq
	a.inflight = append(a.inflight, b)
	a.mu.Unlock()
	return b
}

// traceContext returns ctx with what the storage plugin's spans of b
// need: the batch's trace context, that of its first request whose
// broker.append span is sampled (else its first request's), and every
// sampled message with its own broker.append span (telemetry.Traced), so
// that each message's trace gets its storage spans also when the batch
// groups the batches of several producers (before, only the first
// request's trace had them).
//
// For replication (replicated), only the producers' requests count, as
// only their messages are replicated (replicatedMessages).
func (b *batch) traceContext(ctx context.Context, replicated bool) context.Context {
	if !telemetry.Enabled() {
		return ctx
	}
	var sc trace.SpanContext
	var traced telemetry.Traced
	n := 0
	for _, r := range b.reqs {
		if replicated && r.apply {
			continue
		}
		if !sc.IsValid() || (!sc.IsSampled() && r.span.IsSampled()) {
			sc = r.span
		}
		if len(b.reqs) == 1 {
			traced = r.traced
		} else {
			traced = r.traced.Append(traced, n)
		}
		n += len(r.msgs)
	}
	if sc.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, sc)
	}
	return telemetry.ContextWithTraced(ctx, traced)
}

// logDurable says whether every request of b is durable elsewhere (a
// batch mixing others is appended as the flush policy says).
func (b *batch) logDurable() bool {
	for _, r := range b.reqs {
		if !r.logDurable {
			return false
		}
	}
	return true
}

func msgBytes(msgs []*sdk.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Body) + 64
	}
	return n
}

// send appends b to st (generation gen) and starts waiting for its outcome.
func (a *appender) send(st sdk.Storage, gen uint64, b *batch) bool {
	a.mu.Lock()
	b.attempt++
	b.gen = gen
	attempt := b.attempt
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), storageCallTimeout)
	ctx = b.traceContext(ctx, false)
	ctx = sdk.WithMessageWires(ctx, b.msgs, b.wires)
	if b.logDurable() {
		ctx = sdk.WithLogDurable(ctx)
	}
	// With master–slave replication and a store that tells offsets once a
	// batch is written, replication starts then, alongside the flush
	// (replicate_early.go).
	var (
		written sdk.AppendWritten
		wait    sdk.AppendWait
		err     error
	)
	if es, ok := st.(sdk.EarlyOffsets); ok && a.b.repl != nil && a.b.repl.overlaps() {
		written, wait, err = es.AppendEarly(ctx, b.msgs)
	} else {
		wait, err = st.Append(ctx, b.msgs)
	}
	if err != nil {
		cancel()
		if errors.Is(err, sdk.ErrUnavailable) {
			// Outcome unknown: the batch stays in flight for replay.
			a.b.log.Warn("storage append failed; will retry on the restarted plugin", "error", err)
			a.b.storage.Broken(gen)
			return false
		}
		a.answer(b, attempt, nil, err)
		return true
	}
	sent := time.Now()
	gopool.Go(func() { // a parked goroutine: its stack is grown already
		defer cancel()
		if written != nil {
			// On an error the AppendWait tells the outcome.
			if offsets, err := written(ctx); err == nil && len(offsets) == len(b.msgs) {
				a.b.repl.written(b, offsets)
			}
		}
		offsets, err := wait(ctx)
		if err == nil {
			a.b.opts.Metrics.Flushed(time.Since(sent)) // append until durable, as the store's policy demands
		}
		if err != nil && errors.Is(err, sdk.ErrUnavailable) {
			a.b.storage.Broken(gen)
			return // replayed by run on the next generation
		}
		a.answer(b, attempt, offsets, err)
	})
	return true
}

// replay appends every unanswered batch again, in order, to a new storage
// generation.
func (a *appender) replay(st sdk.Storage, gen uint64) {
	a.mu.Lock()
	batches := append([]*batch(nil), a.inflight...)
	a.mu.Unlock()
	if len(batches) == 0 {
		return
	}
	msgs := 0
	for _, b := range batches {
		msgs += len(b.msgs)
	}
	a.b.log.Warn("re-sending appends of unknown outcome to the restarted storage plugin", "batches", len(batches), "messages", msgs, "generation", gen)
	for _, b := range batches {
		if !a.send(st, gen, b) {
			return
		}
	}
}

// answer completes a batch's requests, unless a newer attempt of the batch
// is under way.
func (a *appender) answer(b *batch, attempt int, offsets []int64, err error) {
	a.mu.Lock()
	if attempt != b.attempt {
		a.mu.Unlock()
		return
	}
	for i, x := range a.inflight {
		if x == b {
			a.inflight = append(a.inflight[:i], a.inflight[i+1:]...)
			break
		}
	}
	a.mu.Unlock()
	select {
	case a.freed <- struct{}{}:
	default:
	}
	a.b.noteAppend(err)
	status := ferryv1.Status_STATUS_OK
	if errors.Is(err, sdk.ErrFlushTimeout) && len(offsets) == len(b.msgs) {
		status, err = ferryv1.Status_STATUS_FLUSH_TIMEOUT, nil
	}
	if err == nil && len(offsets) != len(b.msgs) {
		err = fmt.Errorf("storage answered %d offsets for %d messages", len(offsets), len(b.msgs))
		a.b.log.Error("storage plugin broke the contract", "error", err)
	}
	if a.b.repl != nil {
		a.b.repl.stored(b, offsets, status, err)
	} else {
		deliver(b, offsets, status, err)
	}
	if err == nil {
		seen := map[string]bool{}
		for _, m := range b.msgs {
			if !seen[m.Topic] {
				seen[m.Topic] = true
				if t, _ := a.b.topic(m.Topic); t != nil {
					t.notify()
				}
			}
		}
	}
}

// deliver answers a batch's requests.
func deliver(b *batch, offsets []int64, status sdk.Status, err error) {
	i := 0
	for _, r := range b.reqs {
		res := appendResult{status: status, err: err}
		if err == nil {
			res.offsets = offsets[i : i+len(r.msgs)]
		}
		i += len(r.msgs)
		r.done <- res
	}
}

// close stops accepting appends and waits for in-flight ones, up to ctx.
func (a *appender) close(ctx context.Context) error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.closing)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("broker: %d appends still in flight at shutdown: %w", a.pending(), ctx.Err())
	}
}
