package engine_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// A message's whole life in one trace in a real Jaeger: sent, received by
// the transport plugin, appended by the broker and by the storage plugin
// (each in its own process), flushed, delivered, processed, failed, retried,
// processed again and acknowledged; and another message that ends in the
// dead-letter queue.
func TestTraceInJaeger(t *testing.T) {
	j := jaegertest.Require(t)
	cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
	cfg.Generators, cfg.Flows = nil, nil
	cfg.Plugins.Storage.Type = "file"
	cfg.Plugins.Storage.Config = map[string]any{"flush": "sync"}
	cfg.Tracing.Exporter = "otlp"
	cfg.Tracing.Endpoint = j.OTLP
	cfg.Tracing.SampleRatio = 1
	cfg.Tracing.ServiceName = fmt.Sprintf("ferry-test-%d", time.Now().UnixNano())
	e := start(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, e.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p := cl.NewProducer(client.ProducerOptions{})
	send := func(body string) (string, string) {
		sctx, span := otel.Tracer("test").Start(ctx, "test.send")
		defer span.End()
		r, err := p.SendSync(sctx, client.Message{Topic: "orders", Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		return r.ID, span.SpanContext().TraceID().String()
	}
	flakyID, flakyTrace := send("fails once")
	poisonID, poisonTrace := send("always fails")

	cons, err := cl.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "traced",
		Retry: client.RetryPolicy{MaxAttempts: 2, Delays: []time.Duration{200 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked, dead := false, false
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- cons.Consume(cctx, func(_ context.Context, d *client.Delivery) error {
			switch {
			case d.ID == flakyID && d.Attempt == 1:
				return errors.New("first attempt fails")
			case d.ID == poisonID:
				mu.Lock()
				dead = d.Attempt == 2
				mu.Unlock()
				return errors.New("poison")
			}
			mu.Lock()
			acked = acked || d.ID == flakyID
			mu.Unlock()
			return nil
		})
	}()
	waitFor(t, 30*time.Second, "the retried message to succeed and the poison to fail twice", func() bool {
		mu.Lock()
		defer mu.Unlock()
		st := cons.Stats()
		return acked && dead && st.DeadLettered >= 1
	})
	stop()
	<-done
	// Closing the node exports the last spans of its plugin processes.
	cctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := e.Close(cctx2); err != nil {
		t.Fatal(err)
	}

	tr := j.WaitTrace(t, flakyTrace, 30*time.Second, func(tr *jaegertest.Trace) bool {
		return len(tr.Named(telemetry.SpanConsumerAck)) > 0 && len(tr.Named(telemetry.SpanStorageFlush)) > 0 &&
			len(tr.Named(telemetry.SpanTransportDeliver)) >= 2 &&
			len(tr.Named(telemetry.SpanConsumerProcess)) >= 2
	})
	t.Log(jaegertest.Describe(tr))
	one := func(name string) *jaegertest.Span {
		t.Helper()
		spans := tr.Named(name)
		if len(spans) == 0 {
			t.Fatalf("no %s span in the trace", name)
		}
		return spans[0]
	}
	parentIs := func(child *jaegertest.Span, parent string) {
		t.Helper()
		if p := tr.Parent(child); p == nil || p.OperationName != parent {
			got := "none"
			if p != nil {
				got = p.OperationName
			}
			t.Errorf("%s: parent is %s, want %s", child.OperationName, got, parent)
		}
	}
	plugin := func(s *jaegertest.Span) string {
		v, _ := tr.Process(s).Tag(string(telemetry.AttrPlugin))
		return v
	}
	// childOf finds the span named name whose parent is parent: the
	// message's first hops, apart from the same hops of its retry.
	childOf := func(parent *jaegertest.Span, name string) *jaegertest.Span {
		t.Helper()
		for _, s := range tr.Named(name) {
			if s.ParentID() == parent.SpanID {
				return s
			}
		}
		t.Fatalf("no %s span under %s", name, parent.OperationName)
		return nil
	}
	send1 := one(telemetry.SpanProducerSend)
	recv := childOf(send1, telemetry.SpanTransportReceive)
	bapp := childOf(recv, telemetry.SpanBrokerAppend)
	sapp := childOf(bapp, telemetry.SpanStorageAppend)
	childOf(sapp, telemetry.SpanStorageFlush)
	// Its delivery: read by the store, handed over by the broker and by
	// the transport.
	sread := childOf(send1, telemetry.SpanStorageRead)
	bdel := childOf(sread, telemetry.SpanBrokerDeliver)
	tdel := childOf(bdel, telemetry.SpanTransportDeliver)
	if plugin(recv) != "transport/grpc" || plugin(sapp) != "storage/file" || plugin(send1) != "" ||
		plugin(sread) != "storage/file" || plugin(bdel) != "" || plugin(tdel) != "transport/grpc" {
		t.Errorf("processes: producer %q, transport %q, storage %q, read %q, deliver %q, transport deliver %q; want the plugins' spans from their own processes",
			plugin(send1), plugin(recv), plugin(sapp), plugin(sread), plugin(bdel), plugin(tdel))
	}
	if v, _ := bapp.Tag(string(telemetry.AttrTopic)); v != "orders" {
		t.Errorf("broker.append topic = %q", v)
	}
	// Semantic-convention names: found by the message's id, and marked as Ferry's.
	for _, s := range []*jaegertest.Span{send1, bapp, sapp} {
		if v, _ := s.Tag(string(telemetry.AttrMessageID)); v != flakyID {
			t.Errorf("%s: %s = %q, want %q", s.OperationName, telemetry.AttrMessageID, v, flakyID)
		}
		if v, _ := s.Tag(string(telemetry.AttrSystem)); v != telemetry.SystemFerry {
			t.Errorf("%s: %s = %q, want %q", s.OperationName, telemetry.AttrSystem, v, telemetry.SystemFerry)
		}
	}
	procs := tr.Named(telemetry.SpanConsumerProcess)
	var first, second *jaegertest.Span
	for _, s := range procs {
		switch v, _ := s.Tag(string(telemetry.AttrAttempt)); v {
		case "1":
			first = s
		case "2":
			second = s
		}
	}
	if first == nil || second == nil {
		t.Fatalf("want consumer.process spans for attempts 1 and 2, got %d spans", len(procs))
	}
	parentIs(first, telemetry.SpanProducerSend)
	if _, ok := first.Event(telemetry.EventRetry); !ok {
		t.Errorf("the failed attempt has no %q event: %v", telemetry.EventRetry, first.Events())
	}
	sched := one(telemetry.SpanRetrySchedule)
	parentIs(sched, telemetry.SpanConsumerProcess)
	parentIs(second, telemetry.SpanRetrySchedule)
	if g, _ := second.Tag(string(telemetry.AttrGroup)); g != "traced" {
		t.Errorf("consumer.process group = %q", g)
	}
	parentIs(one(telemetry.SpanConsumerAck), telemetry.SpanConsumerProcess)

	dl := j.WaitTrace(t, poisonTrace, 30*time.Second, func(tr *jaegertest.Trace) bool {
		return len(tr.Named(telemetry.SpanDLQRoute)) > 0
	})
	route := dl.Named(telemetry.SpanDLQRoute)[0]
	if p := dl.Parent(route); p == nil || p.OperationName != telemetry.SpanConsumerProcess {
		t.Errorf("dlq.route parent: %v", p)
	}
	if r, _ := route.Tag(string(telemetry.AttrReason)); r == "" {
		t.Errorf("dlq.route has no reason")
	}
	found := false
	for _, s := range dl.Named(telemetry.SpanConsumerProcess) {
		if _, ok := s.Event(telemetry.EventDeadLetter); ok {
			found = true
		}
	}
	if !found {
		t.Errorf("no consumer.process span has the %q event", telemetry.EventDeadLetter)
	}
}
