package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
)

// Fetch answers a consumer's long-poll: messages from the requested queues at
// or past their offsets, or an empty answer when none arrive within max_wait.
// Queues are read concurrently, each with an equal share of the limits. A
// queue whose record at its position is damaged is named in the answer's
// errors (at once, without waiting), beside the other queues' messages.
func (b *Broker) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	resp, _, err := b.fetch(ctx, req, false)
	return resp, err
}

var _ sdk.ProducePreparer = (*Broker)(nil)

// PrepareProduce wakes the storage plugin's reader if it sleeps
// (sdk.ProducePreparer): the append that follows finds it awake.
func (b *Broker) PrepareProduce() {
	impl, _, _ := b.storage.Current()
	if p, ok := impl.(interface{ Poke() }); ok {
		p.Poke()
	}
}

var _ sdk.WireFetcher = (*Broker)(nil)

// FetchWire is Fetch, with the messages of the answer in their wire form,
// as the store encoded them (sdk.WireFetcher): the answer goes to a
// transport plugin, whose client decodes it, so the broker neither decodes
// the messages it read nor encodes them again. Only with a store in its
// own process (sdk.EncodedReader), and not for a retry topic (whose
// messages are held back by a header); while tracing, a queue's messages
// are decoded when one of them is in a sampled trace (its spans read it).
// Otherwise the answer is Fetch's.
func (b *Broker) FetchWire(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, []sdk.EncodedMessages, error) {
	return b.fetch(ctx, req, !strings.HasPrefix(req.Topic, sdk.RetryTopic("")))
}

func (b *Broker) fetch(ctx context.Context, req *sdk.FetchRequest, encoded bool) (*sdk.FetchResponse, []sdk.EncodedMessages, error) {
	if req.Group != "" && !strings.HasPrefix(req.Topic, "%") {
		b.fetchers.add(req.Group) // its retry topic may be used before it commits
	}
	t, err := b.clientTopic(ctx, req.Topic, req.Group)
	if err != nil {
		return nil, nil, err
	}
	if len(req.Positions) == 0 {
		return nil, nil, fmt.Errorf("%w: fetch names no queue", sdk.ErrInvalidArgument)
	}
	for _, p := range req.Positions {
		if err := b.checkQueue(t, p.Queue); err != nil {
			return nil, nil, err
		}
		if p.Offset < 0 {
			return nil, nil, fmt.Errorf("%w: negative offset %d for queue %d", sdk.ErrInvalidArgument, p.Offset, p.Queue)
		}
	}
	maxMsgs := int(req.MaxMessages)
	if maxMsgs <= 0 {
		maxMsgs = defaultFetchMessages
	}
	maxBytes := req.MaxBytes
	if maxBytes <= 0 {
		maxBytes = defaultFetchBytes
	}
	wait := min(time.Duration(req.MaxWaitNanos), maxFetchWait)
	deadline := time.Now().Add(wait)
	waiting := false
	defer func() {
		if waiting {
			b.opts.Metrics.FetchWaiting(-1)
		}
	}()
	for {
		signal := t.wait() // taken before reading, so no append is missed
		resp, parts, n, due, err := b.read(ctx, req, maxMsgs, maxBytes, encoded)
		if err != nil || n > 0 || len(resp.Errors) > 0 {
			if err == nil && telemetry.Enabled() && len(resp.Messages) > 0 {
				b.traceDeliveries(req, resp)
			}
			if err == nil && req.Group != "" {
				b.opts.Metrics.Consumed(req.Topic, req.Group, n)
			}
			return resp, parts, err
		}
		left := time.Until(deadline)
		if left <= 0 || b.isDraining() {
			return resp, nil, nil
		}
		wake := left
		if !due.IsZero() {
			wake = min(wake, max(time.Until(due), time.Millisecond))
		}
		if !waiting {
			waiting = true
			b.opts.Metrics.FetchWaiting(1)
		}
		timer := time.NewTimer(wake)
		select {
		case <-signal:
		case <-timer.C:
		case <-b.draining:
			// The node stops: answer now (read once more, so that what
			// arrived meanwhile goes out rather than waiting for the
			// restart).
		case <-ctx.Done():
			timer.Stop()
			return resp, nil, nil
		}
		timer.Stop()
	}
}

func (b *Broker) isDraining() bool {
	select {
	case <-b.draining:
		return true
	default:
		return false
	}
}

// holdBack cuts msgs of a retry queue at the first message that is not due
// yet and returns when that one is due (zero when all are due).
func holdBack(msgs []*sdk.Message, now time.Time) ([]*sdk.Message, time.Time) {
	for i, m := range msgs {
		v, ok := m.Headers[sdk.HeaderDeliverAt]
		if !ok {
			continue
		}
		at, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue // unreadable: deliver rather than hold forever
		}
		if due := time.Unix(0, at); due.After(now) {
			return msgs[:i], due
		}
	}
	return msgs, time.Time{}
}

// read reads the requested queues once. For a group's retry topic it returns
// only messages that are due, and the time the next held-back one is due.
//
// With encoded, the messages stay in their wire form where the store gives
// them so (sdk.EncodedReader): parts holds them, one a queue, after the
// answer's own Messages (any the store sent decoded); n counts them all.
func (b *Broker) read(ctx context.Context, req *sdk.FetchRequest, maxMsgs int, maxBytes int64, encoded bool) (_ *sdk.FetchResponse, parts []sdk.EncodedMessages, n int, _ time.Time, _ error) {
	queues := len(req.Positions)
	perMsgs := max(maxMsgs/queues, 1)
	perBytes := max(maxBytes/int64(queues), 1)
	results := make([]*sdk.ReadResponse, queues)
	wires := make([]sdk.EncodedMessages, queues)
	errs := make([]error, queues)
	var wg sync.WaitGroup
	for i, p := range req.Positions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := &sdk.ReadRequest{Topic: req.Topic, Queue: p.Queue, Offset: p.Offset, MaxMessages: int32(perMsgs), MaxBytes: perBytes}
			errs[i] = b.storageCall(ctx, func(s sdk.Storage) (err error) {
				if er, ok := s.(sdk.EncodedReader); ok && encoded {
					results[i], wires[i], err = er.ReadEncoded(ctx, rr)
					return err
				}
				results[i], err = s.Read(ctx, rr)
				return err
			})
		}()
	}
	wg.Wait()
	resp := &sdk.FetchResponse{}
	retry := strings.HasPrefix(req.Topic, sdk.RetryTopic(""))
	now := time.Now()
	var next time.Time
	for i := range results {
		if errs[i] != nil && errors.Is(errs[i], sdk.ErrCorrupt) {
			// A damaged record holds up its own queue only: the
			// others' messages go out, and the consumer's policy
			// decides about this one (see FetchResponse.errors).
			p := req.Positions[i]
			b.log.Error("fetch: stored record damaged; its queue is held up at this offset", "topic", req.Topic,
				"queue", p.Queue, "offset", p.Offset, "group", req.Group, "error", errs[i])
			b.opts.Metrics.CorruptRead(req.Topic)
			resp.Errors = append(resp.Errors, &ferryv1.QueueError{Queue: p.Queue, Offset: p.Offset, Error: sdk.ErrorToProto(errs[i])})
			continue
		}
		if errs[i] != nil {
			return nil, nil, 0, time.Time{}, errs[i]
		}
		if encoded && telemetry.Enabled() && (wires[i].Sampled > 0 || len(results[i].TracedIndex) > 0 || telemetry.Sampled(results[i].Messages).Len() > 0) {
			// A sampled message: this queue's spans read its messages.
			msgs, err := wires[i].Decode()
			if err != nil {
				return nil, nil, 0, time.Time{}, err
			}
			results[i].Messages = append(results[i].Messages, msgs...)
		} else if encoded {
			// Messages the store sent encoded keep their bytes; any it
			// sent decoded (the gRPC data plane) are encoded here.
			if len(results[i].Messages) > 0 {
				parts = append(parts, sdk.EncodedMessages{Records: appendMessageRecords(nil, readMessages, results[i].Messages), N: len(results[i].Messages)})
			}
			if wires[i].N > 0 {
				parts = append(parts, wires[i])
			}
			n += wires[i].N + len(results[i].Messages)
			if results[i].Offsets != nil {
				resp.Offsets = append(resp.Offsets, b.epochs.stamp("", results[i].Offsets))
			}
			continue
		}
		msgs := results[i].Messages
		if retry {
			var due time.Time
			if msgs, due = holdBack(msgs, now); !due.IsZero() && (next.IsZero() || due.Before(next)) {
				next = due
			}
		}
		if len(results[i].TracedIndex) > 0 {
			// The store's storage.read spans of the sampled messages,
			// parents of their broker.deliver spans.
			t := telemetry.Traced{Index: results[i].TracedIndex, Span: results[i].TracedSpan}
			if len(msgs) < len(results[i].Messages) {
				t = t.Cut(len(msgs))
			}
			t = t.Append(telemetry.Traced{Index: resp.TracedIndex, Span: resp.TracedSpan}, len(resp.Messages))
			resp.TracedIndex, resp.TracedSpan = t.Index, t.Span
		}
		resp.Messages = append(resp.Messages, msgs...)
		if results[i].Offsets != nil {
			resp.Offsets = append(resp.Offsets, b.epochs.stamp("", results[i].Offsets))
		}
	}
	return resp, parts, n + len(resp.Messages), next, nil
}

// readMessages is ReadResponse.messages' field number.
const readMessages protowire.Number = 2

// appendMessageRecords appends msgs to dst encoded, as records of the
// repeated Message field num.
func appendMessageRecords(dst []byte, num protowire.Number, msgs []*sdk.Message) []byte {
	for _, m := range msgs {
		size := m.SizeVT()
		dst = protowire.AppendTag(dst, num, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		dst = append(dst, make([]byte, size)...)
		if _, err := m.MarshalToSizedBufferVT(dst[len(dst)-size:]); err != nil {
			panic(err) // a size just computed: cannot fail
		}
	}
	return dst
}

// traceDeliveries records a broker.deliver span in the trace of each
// sampled message handed to a consumer, a child of the message's
// storage.read span (resp's traced fields; without them, of the message's
// producer span), with a batch span for more than one message; the
// transport's spans of the delivery are children of these (resp's traced
// fields, replaced).
func (b *Broker) traceDeliveries(req *sdk.FetchRequest, resp *sdk.FetchResponse) {
	msgs := resp.Messages
	in := telemetry.Traced{Index: resp.TracedIndex, Span: resp.TracedSpan}
	if in.Len() == 0 {
		in = telemetry.Sampled(msgs) // a store that does not trace its reads
	}
	resp.TracedIndex, resp.TracedSpan = nil, nil
	if in.Len() == 0 {
		return
	}
	hop := telemetry.StartHop(context.Background(), tracer, telemetry.SpanBrokerDeliver, msgs, in,
		trace.WithAttributes(telemetry.AttrOperationType.String(telemetry.OpReceive),
			telemetry.AttrPipeline.String(b.opts.Pipeline), telemetry.AttrTopic.String(req.Topic), telemetry.AttrGroup.String(req.Group)))
	hop.ForMessages(func(i int, s trace.Span) {
		s.SetAttributes(telemetry.AttrQueue.Int(int(msgs[i].Queue)), telemetry.AttrOffset.Int64(msgs[i].Offset))
	})
	t := hop.Traced()
	resp.TracedIndex, resp.TracedSpan = t.Index, t.Span
	hop.End()
}
