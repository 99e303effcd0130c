package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// The service's operation list in Jaeger holds a message's hops and no
// plugin plumbing (Configure, health, stdio, controller, offset lookups and
// commits), also after the node sat idle with a consumer committing, on
// both data planes; with tracing.debug_plumbing: true the plumbing shows
// (the negative control: the check sees plumbing when there is some).
func TestNoPlumbingSpansInJaeger(t *testing.T) {
	j := jaegertest.Require(t)
	for _, c := range []struct {
		dataPlane string
		debug     bool
	}{{"ring", false}, {"grpc", false}, {"grpc", true}} {
		t.Run(fmt.Sprintf("%s/debug_plumbing=%v", c.dataPlane, c.debug), func(t *testing.T) {
			ops := plumbingRun(t, j, c.dataPlane, c.debug)
			var plumbing []string
			for _, op := range ops {
				if plumbingOp(op) {
					plumbing = append(plumbing, op)
				}
			}
			if c.debug {
				if len(plumbing) == 0 {
					t.Errorf("debug_plumbing: true, but no plumbing operation in %v", ops)
				}
				return
			}
			if len(plumbing) > 0 {
				t.Errorf("plumbing operations in the service's list: %v (all: %v)", plumbing, ops)
			}
		})
	}
}

// plumbingRun runs a node with subprocess plugins on dataPlane, sends one
// message, consumes it with a committing group, lets the node idle, closes
// it (which exports every process's last spans) and returns the service's
// operation list once the message's storage hop is in it.
func plumbingRun(t *testing.T, j jaegertest.Jaeger, dataPlane string, debug bool) []string {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
	cfg.Generators, cfg.Flows = nil, nil
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
	cons, err := cl.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Consume(cctx, func(context.Context, *client.Delivery) error { return nil }) }()
	waitFor(t, 30*time.Second, "the message to be consumed", func() bool {
		return cons.Stats().Acked >= 1
	})
	// Idle with the consumer polling and committing: a few of the
	// exporters' intervals (500 ms), no assertion on time.
	idle := time.Now().Add(3 * time.Second)
	waitFor(t, 30*time.Second, "an idle while", func() bool { return time.Now().After(idle) })
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
	return ops
}

// plumbingOp reports whether a Jaeger operation is a plumbing RPC's span
// (otelgrpc names them "package.Service/Method").
func plumbingOp(op string) bool { return telemetry.IsPlumbing("/" + strings.TrimPrefix(op, "/")) }
