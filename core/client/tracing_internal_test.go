package client

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/telemetry"
)

// TestNoTraceStartsAtTheConsumer: a trace starts only where a message is
// produced. With every trace recorded, a delivered message that carries no
// trace context (its producer's trace was decided against and so not
// propagated, or its producer traces nothing) gets no consumer.process,
// retry.schedule or dlq.route span, and its retry copy no trace context.
// The control: a message with a sampled traceparent gets each of them,
// and its copy carries the retry's span on.
func TestNoTraceStartsAtTheConsumer(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer telemetry.UseSpanProcessor(rec)()
	for _, c := range []struct {
		name    string
		headers map[string]string
		spans   int
	}{
		{"no trace", nil, 0},
		{"sampled", map[string]string{telemetry.HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, 3},
	} {
		before := len(rec.Ended())
		d := &Delivery{Message: &ferryv1.Message{Id: "m", Topic: "orders", Headers: c.headers}, ID: "m", Topic: "orders", Attempt: 1, Group: "g"}
		ctx, span := startProcess(context.Background(), d)
		for _, name := range []string{telemetry.SpanRetrySchedule, telemetry.SpanDLQRoute} {
			h := map[string]string{}
			d.failureSpan(name, telemetry.EventRetry, 1, errors.New("failed"), h).End()
			if _, ok := h[telemetry.HeaderTraceparent]; ok != (c.spans > 0) {
				t.Errorf("%s: the %s copy's headers %v", c.name, name, h)
			}
		}
		span.End()
		if got := len(rec.Ended()) - before; got != c.spans || traced(ctx) != (c.spans > 0) {
			t.Errorf("%s: %d spans recorded (traced context %v), want %d", c.name, got, traced(ctx), c.spans)
		}
	}
}
