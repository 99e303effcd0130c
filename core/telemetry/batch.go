package telemetry

import (
	"context"
	"encoding/binary"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// A batch's hops (docs/tracing.md, "Batches"). Each hop that handles a
// batch of messages (transport.receive, broker.append, storage.append,
// storage.flush, storage.read, broker.deliver, transport.deliver) records:
//
//   - for each sampled message, a span in that message's own trace, a
//     child of the message's span of the previous hop, with the batch's
//     timing, the message's id and the batch's size, and a link to the
//     batch span;
//   - for a batch of more than one message, one batch span, in a trace of
//     the batch's own that runs from the transport to the storage plugin,
//     so that the batch is still seen as one unit.
//
// Which messages are sampled, and the id of each one's span of the previous
// hop, travel from hop to hop beside the batch as Traced (the proto fields
// traced_index and traced_span): a hop never parses the trace context of a
// message that is not sampled, and only the first hop of a batch looks at
// every message's header at all (Sampled: a map lookup and a byte).

// Traced names a batch's sampled messages and, for each, the span of the
// previous hop in the message's own trace: Index[i] is the message's index
// in the batch, Span[i] that span's id (the 8 bytes of trace.SpanID, big
// endian). It mirrors the proto fields traced_index and traced_span.
type Traced struct {
	Index []uint32
	Span  []uint64
}

// Len is the number of sampled messages.
func (t Traced) Len() int { return min(len(t.Index), len(t.Span)) }

// Append adds t's messages to dst, their indexes moved by offset (the
// position of t's batch in a larger one, as when the broker groups
// producers' batches into one storage append).
func (t Traced) Append(dst Traced, offset int) Traced {
	for i := range t.Len() {
		dst.Index = append(dst.Index, t.Index[i]+uint32(offset))
		dst.Span = append(dst.Span, t.Span[i])
	}
	return dst
}

// Cut keeps the messages of t below n (a batch cut to its first n).
func (t Traced) Cut(n int) Traced {
	var out Traced
	for i := range t.Len() {
		if int(t.Index[i]) < n {
			out.Index = append(out.Index, t.Index[i])
			out.Span = append(out.Span, t.Span[i])
		}
	}
	return out
}

type headered interface {
	GetHeaders() map[string]string
	GetId() string
}

// Sampled returns the messages of msgs whose trace context (traceparent
// header) is sampled, each with its own span (the producer's) as the
// previous hop: the Traced of a batch's first hop, or of a hop that no
// traced hop came before (a store's read). With tracing off it returns
// nothing and looks at nothing; otherwise it costs a header lookup per
// message and allocates only for sampled ones.
func Sampled[M headered](msgs []M) Traced {
	var t Traced
	if !Enabled() {
		return t
	}
	for i, m := range msgs {
		tp, ok := m.GetHeaders()[HeaderTraceparent]
		if !ok || !sampledTraceparent(tp) {
			continue
		}
		sid, ok := hexSpanID(tp[36:52])
		if !ok {
			continue
		}
		t.Index = append(t.Index, uint32(i))
		t.Span = append(t.Span, sid)
	}
	return t
}

// SampledTraceparent reports whether tp, the value of a message's
// HeaderTraceparent, is a W3C traceparent with its sampled flag set.
func SampledTraceparent(tp string) bool { return sampledTraceparent(tp) }

// UnsampledTraceparent reports whether tp is a valid W3C traceparent
// (version 00, lowercase hex, trace and span ids not zero) with its sampled
// flag clear: a message whose trace was decided against, which no hop
// records.
func UnsampledTraceparent(tp string) bool {
	if len(tp) != 55 || tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	trace, ok1 := hexDigits(tp[3:35])
	span, ok2 := hexDigits(tp[36:52])
	_, ok3 := hexDigits(tp[53:55])
	flags, _ := unhex(tp[54])
	return ok1 && ok2 && ok3 && trace && span && flags&1 == 0
}

// hexDigits reports whether s is all lowercase hex digits, and whether
// one of them is not zero.
func hexDigits(s string) (nonzero, ok bool) {
	var any, bad byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		bad |= notHex[c]
		any |= c ^ '0'
	}
	return any != 0, bad == 0
}

// notHex[c] is 1 unless c is a lowercase hex digit.
var notHex = func() (t [256]byte) {
	for c := range t {
		if _, ok := unhex(byte(c)); !ok {
			t[c] = 1
		}
	}
	return t
}()

// sampledTraceparent reports whether a W3C traceparent of version 00
// ("00-<trace id>-<span id>-<flags>") has its sampled flag set, without
// parsing the rest.
func sampledTraceparent(tp string) bool {
	if len(tp) != 55 || tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return false
	}
	v, ok := unhex(tp[54])
	return ok && v&1 == 1
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func hexSpanID(s string) (uint64, bool) {
	var v uint64
	for i := 0; i < len(s); i++ {
		d, ok := unhex(s[i])
		if !ok {
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, v != 0
}

// messageParent is the span context, in message m's own trace, of the
// span with id span: the parent of a hop's span for m.
func messageParent(headers map[string]string, span uint64) (trace.SpanContext, bool) {
	tp := headers[HeaderTraceparent]
	if !sampledTraceparent(tp) {
		return trace.SpanContext{}, false
	}
	tid, err := trace.TraceIDFromHex(tp[3:35])
	if err != nil {
		return trace.SpanContext{}, false
	}
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], span)
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}
	if ts, ok := headers[HeaderTracestate]; ok {
		if st, err := trace.ParseTraceState(ts); err == nil {
			cfg.TraceState = st
		}
	}
	sc := trace.NewSpanContext(cfg)
	return sc, sc.IsValid()
}

// Hop is one hop of a batch: its batch span and a span for each sampled
// message. Started by StartHop, ended by End; used by one goroutine. The
// zero Hop records nothing.
type Hop struct {
	// Ctx is the context of the hop's batch span (for a batch of one, of
	// the message's span): what the next hop of the batch is started
	// under (its trace field).
	Ctx   context.Context
	span  trace.Span   // the batch span, or the one message's span
	msgs  []trace.Span // one per sampled message (Traced order); nil for a batch of one
	index []uint32
	n     int
}

// StartHop starts a hop named name of a batch of msgs under ctx (the
// batch's context from the previous hop, or none), with in the batch's
// sampled messages and their previous hop's spans (Sampled for a first
// hop). opts apply to every span of the hop (attributes common to the
// batch: topic, queue, span kind).
//
// A batch of one message gets one span, as a message sent alone always had:
// a child of the message's span of the previous hop when in names it, else
// of ctx, else of the message's own trace context; none when there is no
// trace context at all (a hop never starts a message's trace: that is its
// producer's). A larger batch gets a batch span (child of ctx when that is
// sampled, else, when a message is sampled, the root of the batch's own
// trace; with no message sampled and no sampled ctx, nothing is recorded
// and no message is looked at) and a span for each message in in.
//
// With tracing off StartHop returns at once, ctx unchanged.
func StartHop[M headered](ctx context.Context, tr trace.Tracer, name string, msgs []M, in Traced, opts ...trace.SpanStartOption) Hop {
	h := Hop{Ctx: ctx, span: noopSpan, n: len(msgs)}
	if !Enabled() || len(msgs) == 0 {
		return h
	}
	if len(msgs) == 1 {
		pctx := ctx
		if in.Len() > 0 && in.Index[0] == 0 {
			if sc, ok := messageParent(msgs[0].GetHeaders(), in.Span[0]); ok {
				pctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			}
		} else if !trace.SpanContextFromContext(ctx).IsValid() {
			pctx = Extract(ctx, msgs[0].GetHeaders())
		}
		if sc := trace.SpanContextFromContext(pctx); !sc.IsValid() {
			// A message that carries no trace (its producer's was decided
			// against, or its producer traces nothing): a trace starts
			// only where a message is produced, never at a later hop.
			return h
		} else if !sc.IsSampled() {
			// Its trace is not sampled: the parent-based sampler would
			// make a span that records nothing. Starting none saves most
			// of what tracing costs an unsampled message (at 1 %, nearly
			// every one); the context carries the decision on.
			h.Ctx = pctx
			return h
		}
		h.Ctx, h.span = tr.Start(pctx, name, append(opts, trace.WithAttributes(AttrMessageID.String(msgs[0].GetId())))...)
		if h.span.SpanContext().IsSampled() && sampledTraceparent(msgs[0].GetHeaders()[HeaderTraceparent]) &&
			h.span.SpanContext().TraceID() == SpanContext(msgs[0].GetHeaders()).TraceID() {
			h.index = []uint32{0}
		}
		return h
	}
	count := AttrMessages.Int(len(msgs))
	common := opts[:len(opts):len(opts)]
	parent := trace.SpanContextFromContext(ctx)
	bctx := ctx
	switch {
	case in.Len() > 0 && !parent.IsSampled():
		// The batch's own trace, recorded whatever the sampling ratio:
		// its messages' spans link to it.
		bctx = context.WithValue(ctx, forceSample{}, true)
		opts = append(opts, trace.WithNewRoot())
	case in.Len() == 0 && !parent.IsSampled():
		// No message sampled, and no sampled batch context: nothing to
		// record, and no message is looked at. A trace starts only where
		// a message is produced, never at a later hop.
		return h
	}
	h.Ctx, h.span = tr.Start(bctx, name, append(opts, trace.WithAttributes(count))...)
	if bctx.Value(forceSample{}) != nil {
		h.Ctx = context.WithValue(h.Ctx, forceSample{}, nil)
	}
	if in.Len() == 0 {
		return h
	}
	start := time.Now()
	if ro, ok := h.span.(sdktrace.ReadOnlySpan); ok {
		start = ro.StartTime() // the batch's, also when the caller set it
	}
	h.msgs = make([]trace.Span, 0, in.Len())
	h.index = make([]uint32, 0, in.Len())
	t, ours := tr.(*tracer)
	sink := active.Load()
	if !ours || sink == nil {
		// Another tracer (an application's provider): the SDK's spans.
		link := trace.WithLinks(trace.Link{SpanContext: h.span.SpanContext()})
		mopts := append(common, trace.WithTimestamp(start), link, trace.WithAttributes(count))
		for i := range in.Len() {
			x := int(in.Index[i])
			if x >= len(msgs) {
				continue
			}
			sc, ok := messageParent(msgs[x].GetHeaders(), in.Span[i])
			if !ok {
				continue
			}
			_, s := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), sc), name,
				append(mopts, trace.WithAttributes(AttrMessageID.String(msgs[x].GetId())))...)
			h.msgs = append(h.msgs, s)
			h.index = append(h.index, in.Index[i])
		}
		return h
	}
	// Ferry's own spans (span.go), sharing what the batch's messages have
	// in common: the attributes, the link to the batch span, the start.
	cfg := trace.NewSpanStartConfig(common...)
	base := append(append(make([]attribute.KeyValue, 0, len(cfg.Attributes())+2), systemAttr), cfg.Attributes()...)
	base = append(base, count)
	links := []trace.Link{{SpanContext: h.span.SpanContext()}}
	kind := trace.ValidateSpanKind(cfg.SpanKind())
	spans := make([]span, in.Len()) // one allocation for the hop's spans
	for i := range in.Len() {
		x := int(in.Index[i])
		if x >= len(msgs) {
			continue
		}
		sc, ok := messageParent(msgs[x].GetHeaders(), in.Span[i])
		if !ok {
			continue
		}
		s := &spans[len(h.msgs)]
		sink.initSpan(s, t.name, name, sc, kind, start, base)
		s.links = links
		s.own = []attribute.KeyValue{AttrMessageID.String(msgs[x].GetId())}
		h.msgs = append(h.msgs, s)
		h.index = append(h.index, in.Index[i])
	}
	return h
}

// forceSample, as a value in a span's parent context, makes the sampler
// record the span (the root of a batch's own trace when one of its
// messages is sampled).
type forceSample struct{}

// batchSampler is the process's sampler: parent-based by ratio, except for
// batch spans that must be recorded because a message of theirs is.
type batchSampler struct{ sdktrace.Sampler }

func (s batchSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if v, _ := p.ParentContext.Value(forceSample{}).(bool); v {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample,
			Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.Sampler.ShouldSample(p)
}

func (s batchSampler) Description() string { return "BatchSampler{" + s.Sampler.Description() + "}" }

// Recording reports whether any span of the hop records: whether
// attributes set after the work are worth building.
func (h *Hop) Recording() bool {
	if h.span == nil {
		return false
	}
	return h.span.IsRecording() || len(h.msgs) > 0
}

// Traced is what the next hop of the batch needs: the batch's sampled
// messages, each with this hop's span for it.
func (h *Hop) Traced() Traced {
	if len(h.index) == 0 {
		return Traced{}
	}
	t := Traced{Index: h.index, Span: make([]uint64, 0, len(h.index))}
	if h.msgs == nil {
		sid := h.span.SpanContext().SpanID()
		t.Span = append(t.Span, binary.BigEndian.Uint64(sid[:]))
		return t
	}
	for _, s := range h.msgs {
		sid := s.SpanContext().SpanID()
		t.Span = append(t.Span, binary.BigEndian.Uint64(sid[:]))
	}
	return t
}

// SetAttributes sets kv on every span of the hop.
func (h *Hop) SetAttributes(kv ...attribute.KeyValue) {
	if h.span == nil {
		return
	}
	h.span.SetAttributes(kv...)
	for _, s := range h.msgs {
		s.SetAttributes(kv...)
	}
}

// SetOffsets sets each message span's ferry.offset from offsets (one per
// message of the batch, in batch order), and the batch span's to the first.
func (h *Hop) SetOffsets(offsets []int64) {
	if h.span == nil {
		return
	}
	if len(offsets) != h.n || h.n == 0 {
		return
	}
	h.span.SetAttributes(AttrOffset.Int64(offsets[0]))
	for i, s := range h.msgs {
		s.SetAttributes(AttrOffset.Int64(offsets[h.index[i]]))
	}
}

// ForMessages calls fn with each message span of the hop and the message's
// index in the batch (for a batch of one, its one span), to set what
// differs between messages.
func (h *Hop) ForMessages(fn func(index int, span trace.Span)) {
	if h.span == nil {
		return
	}
	if h.msgs == nil {
		if h.n == 1 && h.span.IsRecording() {
			fn(0, h.span)
		}
		return
	}
	for i, s := range h.msgs {
		fn(int(h.index[i]), s)
	}
}

// RecordError records err on every span of the hop.
func (h *Hop) RecordError(err error) {
	if h.span == nil {
		return
	}
	h.span.RecordError(err)
	for _, s := range h.msgs {
		s.RecordError(err)
	}
}

// End ends every span of the hop at the same moment.
func (h *Hop) End() {
	if h.span == nil {
		return
	}
	if len(h.msgs) == 0 {
		h.span.End()
		return
	}
	now := time.Now()
	at := trace.WithTimestamp(now)
	h.span.End(at)
	for _, s := range h.msgs {
		if fs, ok := s.(*span); ok {
			fs.endAt(now)
		} else {
			s.End(at)
		}
	}
}

type tracedKey struct{}

// ContextWithTraced returns ctx carrying t, for a call whose interface
// passes no more than a context and the messages (sdk.Storage.Append): the
// SDK's client puts it in the request (traced_index, traced_span).
func ContextWithTraced(ctx context.Context, t Traced) context.Context {
	if t.Len() == 0 {
		return ctx
	}
	return context.WithValue(ctx, tracedKey{}, t)
}

// TracedFromContext returns what ContextWithTraced put in ctx.
func TracedFromContext(ctx context.Context) Traced {
	t, _ := ctx.Value(tracedKey{}).(Traced)
	return t
}
