package telemetry

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// envChild makes the test binary act as a plugin process: it traces with
// the settings EnvFor gave it, continuing the trace in this variable's
// traceparent.
const envChild = "FERRY_TELEMETRY_TEST_CHILD"

func TestMain(m *testing.M) {
	if tp := os.Getenv(envChild); tp != "" {
		if err := child(tp); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a plugin process's share of a message's trace: a storage.append
// span under the producer's span, with a retry event.
func child(traceparent string) error {
	ctx := context.Background()
	shutdown, err := SetupFromEnv(ctx)
	if err != nil {
		return err
	}
	if !Enabled() {
		return fmt.Errorf("tracing not enabled from the environment")
	}
	mctx := Extract(ctx, map[string]string{HeaderTraceparent: traceparent})
	_, span := Tracer(ComponentStorage).Start(mctx, SpanStorageAppend, trace.WithAttributes(AttrTopic.String("orders"), AttrOffset.Int64(7)))
	span.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(2), AttrReason.String("handler failed")))
	span.End()
	return shutdown(ctx) // exports before the process exits
}

// One message's trace, across two processes that each export to Jaeger
// (the host over OTLP/gRPC, its plugin over OTLP/HTTP when Jaeger offers
// it), reads back from Jaeger's query API with names, parent links across
// the processes, attributes, events and batch links.
func TestJaegerTraceAcrossProcesses(t *testing.T) {
	j := jaegertest.Require(t)
	ctx := context.Background()
	service := fmt.Sprintf("ferry-telemetry-test-%d", time.Now().UnixNano())
	cfg := Tracing{Exporter: ExporterOTLP, Endpoint: j.OTLP, SampleRatio: 1, ServiceName: service}
	shutdown, err := Setup(ctx, cfg, AttrPipeline.String("telemetry-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)

	sctx, send := Tracer(ComponentProducer).Start(ctx, SpanProducerSend, trace.WithAttributes(AttrTopic.String("orders"), AttrQueue.Int(1)))
	headers := Inject(sctx, nil)

	// The plugin process, given the host's settings as a plugin host does.
	pcfg := cfg
	if j.OTLPHTTP != "" {
		pcfg.Endpoint = j.OTLPHTTP
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), EnvFor(pcfg, "storage/test")...), envChild+"="+headers[HeaderTraceparent])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugin process: %v\n%s", err, out)
	}

	// A batch operation of the host links to the message it carries.
	_, flush := Tracer(ComponentStorage).Start(ctx, SpanStorageFlush, trace.WithNewRoot(), trace.WithLinks(Links([]msg{{headers}})...))
	flush.End()
	send.End()
	if err := Flush(ctx); err != nil {
		t.Fatal(err)
	}

	sendID := send.SpanContext().SpanID().String()
	tr := j.WaitTrace(t, send.SpanContext().TraceID().String(), 20*time.Second, func(tr *jaegertest.Trace) bool {
		return len(tr.Named(SpanProducerSend)) == 1 && len(tr.Named(SpanStorageAppend)) == 1
	})
	ps, as := tr.Named(SpanProducerSend)[0], tr.Named(SpanStorageAppend)[0]
	if ps.SpanID != sendID {
		t.Errorf("producer.send span id %s, want %s", ps.SpanID, sendID)
	}
	if p := tr.Parent(as); p == nil || p.SpanID != sendID {
		t.Errorf("storage.append's parent is %s, want producer.send %s\n%s", as.ParentID(), sendID, jaegertest.Describe(tr))
	}
	hostProc, pluginProc := tr.Process(ps), tr.Process(as)
	if as.ProcessID == ps.ProcessID {
		t.Errorf("both spans reported by process %s: want the plugin's own process", as.ProcessID)
	}
	if hostProc.ServiceName != service || pluginProc.ServiceName != service {
		t.Errorf("services %q and %q, want %q for both", hostProc.ServiceName, pluginProc.ServiceName, service)
	}
	if v, _ := pluginProc.Tag(string(AttrPlugin)); v != "storage/test" {
		t.Errorf("plugin process tag plugin=%q, want storage/test", v)
	}
	if v, _ := hostProc.Tag(string(AttrPipeline)); v != "telemetry-test" {
		t.Errorf("host process tag pipeline=%q, want telemetry-test", v)
	}
	for _, c := range []struct {
		s         *jaegertest.Span
		key, want string
	}{{ps, string(AttrTopic), "orders"}, {ps, string(AttrQueue), "1"}, {as, string(AttrTopic), "orders"}, {as, string(AttrOffset), "7"}, {ps, string(AttrSystem), SystemFerry}} {
		if v, _ := c.s.Tag(c.key); v != c.want {
			t.Errorf("%s: %s=%q, want %q", c.s.OperationName, c.key, v, c.want)
		}
	}
	if ev, ok := as.Event(EventRetry); !ok || ev[string(AttrAttempt)] != "2" || ev[string(AttrReason)] != "handler failed" {
		t.Errorf("storage.append events %v; retry event %v, want attempt 2 and a reason", as.Events(), ev)
	}

	ftr := j.WaitTrace(t, flush.SpanContext().TraceID().String(), 20*time.Second, func(tr *jaegertest.Trace) bool {
		return len(tr.Named(SpanStorageFlush)) == 1
	})
	if links := ftr.Named(SpanStorageFlush)[0].Links(); !slices.Contains(links, sendID) {
		t.Errorf("storage.flush links to %v, want the message's span %s", links, sendID)
	}
}

type msg struct{ h map[string]string }

func (m msg) GetHeaders() map[string]string { return m.h }
