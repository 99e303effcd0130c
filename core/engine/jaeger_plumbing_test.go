package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// The service's operation list in Jaeger holds a message's hops and no
// plugin plumbing (Configure, health, stdio, controller, offset lookups and
// commits), on both data planes; and a node that sits idle exports no trace
// at all, while every periodic timer of an idle node fires many times: the
// engine's lag measurement (GetOffsets, every 100 ms here against 5 s by
// default), a consumer's heartbeats and commits (every 50 ms against 1 s and
// 100 ms), the fetch long polls and the exporters' intervals. A 3 s idle
// thus holds more rounds of each timer than an idle minute does by default.
// With tracing.debug_plumbing: true the plumbing shows, also within the idle
// window, where the lag timer's GetOffsets must appear several times (the
// negative control: the checks see plumbing and idle traces when there are
// some).
func TestNoPlumbingSpansInJaeger(t *testing.T) {
	j := jaegertest.Require(t)
	for _, c := range []struct {
		dataPlane string
		debug     bool
	}{{"ring", false}, {"grpc", false}, {"grpc", true}} {
		t.Run(fmt.Sprintf("%s/debug_plumbing=%v", c.dataPlane, c.debug), func(t *testing.T) {
			ops, idle := plumbingRun(t, j, c.dataPlane, c.debug)
			var plumbing []string
			for _, op := range ops {
				if plumbingOp(op) {
					plumbing = append(plumbing, op)
				}
			}
			idleOps := map[string]int{}
			for _, sp := range idle {
				idleOps[sp.OperationName]++
			}
			t.Logf("spans started while the node sat idle: %v", idleOps)
			if c.debug {
				if len(plumbing) == 0 {
					t.Errorf("debug_plumbing: true, but no plumbing operation in %v", ops)
				}
				if n := idleOps["ferry.v1.Storage/GetOffsets"]; n < 5 {
					t.Errorf("debug_plumbing: true, but the idle window holds %d GetOffsets spans, want 5 or more (the lag timer fires every 100 ms): %v", n, idleOps)
				}
				return
			}
			if len(plumbing) > 0 {
				t.Errorf("plumbing operations in the service's list: %v (all: %v)", plumbing, ops)
			}
			if len(idle) > 0 {
				t.Errorf("the idle node exported %d span(s) started while it sat idle: %v", len(idle), idleOps)
			}
		})
	}
}

// plumbingRun runs a node with subprocess plugins on dataPlane, sends one
// message, consumes it with a committing group, lets the node idle with its
// timers fast, closes it (which exports every process's last spans) and
// returns the service's operation list once the message's storage hop is in
// it, and the spans that started while the node sat idle. The pipeline's
// flow is not run (no Run): it is there for the engine's lag timer.
func plumbingRun(t *testing.T, j jaegertest.Jaeger, dataPlane string, debug bool) ([]string, []jaegertest.Span) {
	t.Cleanup(engine.SetLagInterval(100 * time.Millisecond))
	cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
	cfg.Generators = nil
	cfg.Plugins.DataPlane = dataPlane
	cfg.Tracing.Exporter = "otlp"
	cfg.Tracing.Endpoint = j.OTLP
	cfg.Tracing.SampleRatio = 1
	cfg.Tracing.DebugPlumbing = debug
	service := fmt.Sprintf("ferry-plumbing-test-%d", time.Now().UnixNano())
	cfg.Tracing.ServiceName = service
	e := start(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, e.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.NewProducer(client.ProducerOptions{}).SendSync(ctx, client.Message{Topic: "orders", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	cons, err := cl.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "idle",
		HeartbeatInterval: 50 * time.Millisecond, CommitInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Consume(cctx, func(context.Context, *client.Delivery) error { return nil }) }()
	waitFor(t, 30*time.Second, "the message to be consumed", func() bool {
		return cons.Stats().Acked >= 1
	})
	// Let the consumer's commit of the message and its exports settle
	// (the exporters send every 500 ms), then idle with the consumer
	// polling, heartbeating and committing: a few of the exporters'
	// intervals, no assertion on time.
	settled := time.Now().Add(1500 * time.Millisecond)
	waitFor(t, 30*time.Second, "the message's spans to settle", func() bool { return time.Now().After(settled) })
	idleFrom := time.Now()
	idleTo := idleFrom.Add(3 * time.Second)
	waitFor(t, 30*time.Second, "an idle while", func() bool { return time.Now().After(idleTo) })
	stop()
	<-done
	cctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := e.Close(cctx2); err != nil {
		t.Fatal(err)
	}
	var ops []string
	waitFor(t, 30*time.Second, "the storage plugin's spans in Jaeger", func() bool {
		ops, err = j.Operations(ctx, service)
		return err == nil && slices.Contains(ops, telemetry.SpanStorageAppend) && slices.Contains(ops, telemetry.SpanProducerSend)
	})
	if debug {
		// The plumbing of the plugins' last moments (controller
		// Shutdown) comes with their last export; wait for some.
		waitFor(t, 30*time.Second, "plumbing spans in Jaeger", func() bool {
			ops, err = j.Operations(ctx, service)
			return err == nil && slices.ContainsFunc(ops, plumbingOp)
		})
	}
	// Every process exported its last spans at the close; Jaeger has had
	// them since the storage hop showed.
	traces, err := j.FindTraces(ctx, service, map[string]string{}, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(traces) == 0 {
		t.Fatalf("Jaeger's search found no trace of %s: the idle window's check would see nothing", service)
	}
	var idle []jaegertest.Span
	for _, tr := range traces {
		for _, sp := range tr.Spans {
			if at := time.UnixMicro(sp.StartTime); !at.Before(idleFrom) && at.Before(idleTo) {
				idle = append(idle, sp)
			}
		}
	}
	return ops, idle
}

// plumbingOp reports whether a Jaeger operation is a plumbing RPC's span
// (otelgrpc names them "package.Service/Method").
func plumbingOp(op string) bool { return telemetry.IsPlumbing("/" + strings.TrimPrefix(op, "/")) }
