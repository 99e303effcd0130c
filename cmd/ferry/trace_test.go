package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// ferry trace ID finds a message's trace in a real Jaeger by the span
// attribute messaging.message.id and prints its hops as a tree; another
// message's id finds nothing (a clear error).
func TestTraceCommand(t *testing.T) {
	j := jaegertest.Require(t)
	ctx := context.Background()
	service := fmt.Sprintf("ferry-trace-cmd-%d", time.Now().UnixNano())
	shutdown, err := telemetry.Setup(ctx, telemetry.Tracing{Exporter: telemetry.ExporterOTLP, Endpoint: j.OTLP, SampleRatio: 1, ServiceName: service})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	id := "ptest-" + fmt.Sprint(time.Now().UnixNano())
	tr := telemetry.Tracer(telemetry.ComponentProducer)
	sctx, send := tr.Start(ctx, telemetry.SpanProducerSend, trace.WithAttributes(telemetry.AttrMessageID.String(id), telemetry.AttrTopic.String("orders")))
	actx, app := tr.Start(sctx, telemetry.SpanBrokerAppend, trace.WithAttributes(telemetry.AttrMessageID.String(id)))
	_, st := tr.Start(actx, telemetry.SpanStorageAppend, trace.WithAttributes(telemetry.AttrOffset.Int64(7)))
	st.End()
	app.End()
	_, del := tr.Start(sctx, telemetry.SpanBrokerDeliver)
	del.End()
	send.End()
	if err := telemetry.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	j.WaitTrace(t, send.SpanContext().TraceID().String(), 30*time.Second, func(tr *jaegertest.Trace) bool { return len(tr.Spans) == 4 })

	out, errOut, code := runFerry(t, nil, "trace", id, "--service", service, "--query", j.Query)
	if code != 0 {
		t.Fatalf("ferry trace: exit %d\n%s%s", code, out, errOut)
	}
	t.Log("\n" + out)
	for _, want := range []string{
		"trace " + send.SpanContext().TraceID().String() + " (4 spans)",
		"\nproducer.send  [" + service + "]",
		"\n├─ broker.append  [",
		"\n│  └─ storage.append  [",
		" offset=7",
		"\n└─ broker.deliver  [",
		"messaging.destination.name=orders",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ferry trace output lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := runFerry(t, nil, "trace", id+"-other", "--service", service, "--query", j.Query); code == 0 || !strings.Contains(errOut, "no trace of message") {
		t.Errorf("an unknown id: exit %d, stderr %q; want an error naming it", code, errOut)
	}
	if _, errOut, code := runFerry(t, nil, "trace", id); code == 0 || !strings.Contains(errOut, "--service is required") {
		t.Errorf("no --service: exit %d, stderr %q", code, errOut)
	}
}
