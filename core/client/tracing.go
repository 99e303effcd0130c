package client

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/telemetry"
)

// The client's tracers. They use the application's global OpenTelemetry
// provider (or the node's, inside ferry run).
var (
	producerTracer = telemetry.Tracer(telemetry.ComponentProducer)
	consumerTracer = telemetry.Tracer(telemetry.ComponentConsumer)
	retryTracer    = telemetry.Tracer(telemetry.ComponentRetry)
	dlqTracer      = telemetry.Tracer(telemetry.ComponentDLQ)
)

func consumerFailureTracer(span string) trace.Tracer {
	if span == telemetry.SpanDLQRoute {
		return dlqTracer
	}
	return retryTracer
}

// startProcess starts the consumer.process span of one attempt at d, a child
// of the span that sent (or last retried) its message, and keeps its context
// in d for the ack, retry and dead-letter spans.
func startProcess(ctx context.Context, d *Delivery) (context.Context, trace.Span) {
	pctx := telemetry.Extract(ctx, d.Message.GetHeaders())
	if !traced(pctx) {
		return ctx, noSpan // a message that carries no trace: none starts here
	}
	sctx, span := consumerTracer.Start(pctx, telemetry.SpanConsumerProcess,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(telemetry.AttrOperationType.String(telemetry.OpProcess), telemetry.AttrMessageID.String(d.ID),
			telemetry.AttrGroup.String(d.Group), telemetry.AttrTopic.String(d.Topic), telemetry.AttrQueue.Int(int(d.Queue)), telemetry.AttrOffset.Int64(d.Offset), telemetry.AttrAttempt.Int(d.Attempt)))
	d.tctx = sctx
	return sctx, span
}

var noSpan = trace.SpanFromContext(context.Background())

// tracing reports whether sends from ctx are traced: Ferry's tracing is on,
// or the caller's context carries a trace to pass on.
func tracing(ctx context.Context) bool {
	return telemetry.Enabled() || trace.SpanContextFromContext(ctx).IsValid()
}

// traced reports whether ctx carries a trace for a message's spans to go
// on in. A trace starts only where a message is produced (startSend); a
// message that carries none (its producer's trace was decided against and
// so not propagated, or its producer traces nothing) gets no consumer,
// ack, retry or dead-letter span.
func traced(ctx context.Context) bool { return trace.SpanContextFromContext(ctx).IsValid() }

// startSend starts the producer.send span of m and returns m with headers
// that carry it: a copy, the caller's map is left alone. The span covers the
// send's retries; endSend ends it.
//
// An unsampled message (at 1 %, nearly every one) gets only its traceparent
// (telemetry.StartMessage): no span, context or span options.
func startSend(ctx context.Context, m Message) (Message, trace.Span) {
	var span trace.Span
	span, m.Headers = telemetry.StartMessage(ctx, producerTracer, telemetry.SpanProducerSend, func() []trace.SpanStartOption {
		return []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(telemetry.AttrOperationType.String(telemetry.OpSend), telemetry.AttrTopic.String(m.Topic))}
	}, m.Headers)
	return m, span
}

// endSend ends a producer.send span with the send's outcome.
func endSend(span trace.Span, r Result, err error) {
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrQueue.Int(int(r.Queue)), telemetry.AttrOffset.Int64(r.Offset))
		if r.ID != "" {
			span.SetAttributes(telemetry.AttrMessageID.String(r.ID))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}
