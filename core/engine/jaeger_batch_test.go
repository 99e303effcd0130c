package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
)

// batchMessages is how many messages the batch tests send asynchronously.
const batchMessages = 200

// Every message of an async batch has its whole life in its own trace in a
// real Jaeger, not only the batch's first (docs/tracing.md, "Batches"):
// fetched by its messaging.message.id, each message's trace holds its
// transport.receive (transport plugin), broker.append (node),
// storage.append and storage.flush (storage plugin) in a parent chain under
// its producer.send, and, from a consumer's batch fetch, its storage.read
// (storage plugin), broker.deliver (node) and transport.deliver (transport
// plugin); every per-message span of a batch links to the batch's span, and
// the batch's own trace runs through the three processes. With plugins in
// their own processes, on the ring data plane and on gRPC.
func TestBatchTracesInJaeger(t *testing.T) {
	j := jaegertest.Require(t)
	for _, dp := range []string{pluginhost.DataPlaneRing, pluginhost.DataPlaneGRPC} {
		t.Run(dp, func(t *testing.T) { batchTraces(t, j, dp) })
	}
}

func batchTraces(t *testing.T, j jaegertest.Jaeger, dataPlane string) {
	cfg := quickstart(t, pluginhost.ModeSubprocess, 1)
	cfg.Generators, cfg.Flows = nil, nil
	cfg.Plugins.DataPlane = dataPlane
	cfg.Plugins.Storage.Type = "file"
	cfg.Tracing.Exporter = "otlp"
	cfg.Tracing.Endpoint = j.OTLP
	cfg.Tracing.SampleRatio = 1
	service := fmt.Sprintf("ferry-batch-%s-%d", dataPlane, time.Now().UnixNano())
	cfg.Tracing.ServiceName = service
	lost0, _ := telemetry.Lost()
	e := start(t, cfg)
	want := map[string]string{pluginhost.DataPlaneRing: sdk.DataPlaneRing, pluginhost.DataPlaneGRPC: "grpc"}[dataPlane]
	for _, inst := range []*pluginhost.Instance{e.Storage(), e.Transport()} {
		if got := inst.DataPlane(); got != want {
			t.Fatalf("%s plugin on data plane %q, want %s", inst.Kind(), got, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := client.Dial(ctx, e.Address())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A linger long enough that the messages travel in batches of many.
	p := cl.NewProducer(client.ProducerOptions{Linger: 50 * time.Millisecond})
	var (
		mu   sync.Mutex
		ids  []string
		errs []error
		sent sync.WaitGroup
	)
	for i := range batchMessages {
		sent.Add(1)
		err := p.SendAsync(ctx, client.Message{Topic: "orders", Body: fmt.Appendf(nil, "m%d", i)}, func(r client.Result, err error) {
			defer sent.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ids = append(ids, r.ID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sent.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d sends failed, first: %v", len(errs), errs[0])
	}

	// A consumer's batch fetch: all of them are stored before it starts.
	cons, err := cl.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "batch"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- cons.Consume(cctx, func(_ context.Context, d *client.Delivery) error {
			mu.Lock()
			seen[d.ID] = true
			mu.Unlock()
			return nil
		})
	}()
	waitFor(t, time.Minute, "every message consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == batchMessages
	})
	stop()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// Closing the node exports the last spans of its plugin processes.
	cctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := e.Close(cctx2); err != nil {
		t.Fatal(err)
	}
	// An export of this process's spans that failed (Jaeger too slow on a
	// loaded machine) is said as such, not as a trace that lacks a span.
	if lost, err := telemetry.Lost(); lost > lost0 {
		t.Fatalf("the node's exporter could not deliver %d spans to Jaeger: %v", lost-lost0, err)
	}

	// Spans reach Jaeger from three processes, each in its own time: wait
	// for each message's trace to be whole, up to one deadline for all.
	// The queries get a time of their own, not what the sends and the
	// consumer left of theirs (on a loaded machine that was too little).
	ctx, cancelQueries := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancelQueries()
	deadline := time.Now().Add(3 * time.Minute)
	batched := 0
	batchSpans := map[string]string{} // a batch's own trace → its transport.receive span
	var whole *jaegertest.Trace
	for _, id := range ids {
		var tr *jaegertest.Trace
		var last error
		for {
			tr, last = findMessageTrace(ctx, j, service, id)
			if last == nil {
				last = checkMessageTrace(tr, id)
			}
			if last == nil || time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("message %s: %v", id, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
		if last != nil {
			t.Fatalf("message %s: %v\n%s", id, last, jaegertest.Describe(tr))
		}
		whole = tr
		for _, s := range tr.Named(telemetry.SpanTransportReceive) {
			if n, _ := s.Tag(string(telemetry.AttrMessages)); n != "" && n != "1" {
				batched++
				for _, r := range s.References {
					if r.RefType == jaegertest.RefFollowsFrom {
						batchSpans[r.TraceID] = r.SpanID
					}
				}
			}
		}
	}
	if batched < batchMessages/2 {
		t.Fatalf("only %d of %d messages travelled in a batch of more than one: the test did not test batches", batched, batchMessages)
	}
	if len(batchSpans) == 0 {
		t.Fatal("no per-message transport.receive span links to its batch's span")
	}
	// The batch as one unit: its own trace from the transport to the store.
	// Every batch's trace holds its transport.receive and broker.append; the
	// broker may merge several batches into one storage append, whose spans
	// are in the trace of the batch that leads it (docs/tracing.md), so at
	// least one batch's trace goes on to storage.append and storage.flush.
	var bt *jaegertest.Trace
	var problems []string
	for until := time.Now().Add(time.Minute); ; {
		bt, problems = nil, problems[:0]
		for traceID, span := range batchSpans {
			tr, err := j.GetTrace(ctx, traceID)
			if err != nil || tr == nil {
				problems = append(problems, fmt.Sprintf("batch trace %s: not in Jaeger (%v)", traceID, err))
				continue
			}
			recv := tr.Span(span)
			if recv == nil || recv.OperationName != telemetry.SpanTransportReceive || pluginOf(tr, recv) != "transport/grpc" {
				problems = append(problems, fmt.Sprintf("the link from a message's transport.receive leads to %v, want its batch's transport.receive\n%s", recv, jaegertest.Describe(tr)))
				continue
			}
			bapp := childNamed(tr, recv, telemetry.SpanBrokerAppend, "")
			if bapp == nil {
				problems = append(problems, fmt.Sprintf("the batch's trace has no broker.append under its transport.receive\n%s", jaegertest.Describe(tr)))
				continue
			}
			if sapp := childNamed(tr, bapp, telemetry.SpanStorageAppend, "storage/file"); sapp != nil && childNamed(tr, sapp, telemetry.SpanStorageFlush, "storage/file") != nil {
				bt = tr
			}
		}
		if bt == nil && len(problems) == 0 {
			problems = append(problems, "no batch's trace has storage.append and storage.flush under its broker.append")
		}
		if len(problems) == 0 || time.Now().After(until) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if len(problems) > 0 {
		t.Fatalf("%d batch traces after 1m0s:\n%s", len(batchSpans), strings.Join(problems, "\n"))
	}
	// The negative control on a real trace: without its storage.append
	// the check fails, naming it.
	cut := *whole
	cut.Spans = nil
	for _, s := range whole.Spans {
		if s.OperationName != telemetry.SpanStorageAppend {
			cut.Spans = append(cut.Spans, s)
		}
	}
	if err := checkMessageTrace(&cut, ids[len(ids)-1]); err == nil || !strings.Contains(err.Error(), "no storage.append") {
		t.Errorf("the check of a trace without its storage.append says %v", err)
	}
	t.Logf("%d messages' traces complete; %d sent in batches of more than one; a batch's trace:\n%s", len(ids), batched, jaegertest.Describe(bt))
}

// findMessageTrace returns the trace whose producer.send carries the
// message id, nil when Jaeger has none yet.
func findMessageTrace(ctx context.Context, j jaegertest.Jaeger, service, id string) (*jaegertest.Trace, error) {
	trs, err := j.FindTraces(ctx, service, map[string]string{string(telemetry.AttrMessageID): id}, 20)
	if err != nil {
		return nil, err
	}
	for i := range trs {
		for _, s := range trs[i].Named(telemetry.SpanProducerSend) {
			if v, _ := s.Tag(string(telemetry.AttrMessageID)); v == id {
				return &trs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("no trace with a producer.send of message %s (yet)", id)
}

// checkMessageTrace reports what a message's trace lacks of its hops: each
// a span of the message (its messaging.message.id) reported by the right
// process, a child of the hop before.
func checkMessageTrace(tr *jaegertest.Trace, id string) error {
	if tr == nil {
		return errors.New("no trace")
	}
	var send *jaegertest.Span
	for _, s := range tr.Named(telemetry.SpanProducerSend) {
		if v, _ := s.Tag(string(telemetry.AttrMessageID)); v == id {
			send = s
		}
	}
	if send == nil {
		return fmt.Errorf("no producer.send of %s", id)
	}
	var problems []string
	chain := func(parent *jaegertest.Span, hops ...[2]string) {
		for _, h := range hops {
			name, plugin := h[0], h[1]
			next := messageChild(tr, parent, name, id, plugin)
			if next == nil {
				where := "the node"
				if plugin != "" {
					where = "plugin " + plugin
				}
				problems = append(problems, fmt.Sprintf("no %s of the message from %s under its %s", name, where, parent.OperationName))
				return
			}
			parent = next
		}
	}
	chain(send,
		[2]string{telemetry.SpanTransportReceive, "transport/grpc"},
		[2]string{telemetry.SpanBrokerAppend, ""},
		[2]string{telemetry.SpanStorageAppend, "storage/file"},
		[2]string{telemetry.SpanStorageFlush, "storage/file"})
	chain(send,
		[2]string{telemetry.SpanStorageRead, "storage/file"},
		[2]string{telemetry.SpanBrokerDeliver, ""},
		[2]string{telemetry.SpanTransportDeliver, "transport/grpc"})
	chain(send, [2]string{telemetry.SpanConsumerProcess, ""})
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// messageChild is the span named name of message id under parent,
// reported by plugin ("" for the node), nil if there is none.
func messageChild(tr *jaegertest.Trace, parent *jaegertest.Span, name, id, plugin string) *jaegertest.Span {
	for _, s := range tr.Named(name) {
		if v, _ := s.Tag(string(telemetry.AttrMessageID)); v == id && s.ParentID() == parent.SpanID && pluginOf(tr, s) == plugin {
			return s
		}
	}
	return nil
}

// childNamed is the span named name under parent reported by plugin.
func childNamed(tr *jaegertest.Trace, parent *jaegertest.Span, name, plugin string) *jaegertest.Span {
	for _, s := range tr.Named(name) {
		if s.ParentID() == parent.SpanID && pluginOf(tr, s) == plugin {
			return s
		}
	}
	return nil
}

func pluginOf(tr *jaegertest.Trace, s *jaegertest.Span) string {
	v, _ := tr.Process(s).Tag(string(telemetry.AttrPlugin))
	return v
}

// The check above fails where a hop is missing: the negative control, on
// a message's whole trace from a real run with one hop taken out at a time.
func TestCheckMessageTraceFails(t *testing.T) {
	tr, id := wholeMessageTrace()
	if err := checkMessageTrace(tr, id); err != nil {
		t.Fatalf("a whole trace fails the check: %v\n%s", err, jaegertest.Describe(tr))
	}
	for _, c := range []struct{ drop, plugin, want string }{
		{telemetry.SpanStorageAppend, "", "no storage.append"},
		{telemetry.SpanTransportReceive, "", "no transport.receive"},
		{telemetry.SpanStorageRead, "", "no storage.read"},
		{telemetry.SpanTransportDeliver, "", "no transport.deliver"},
		{"", "storage/file", "no storage.append of the message from plugin storage/file"}, // the storage's spans reported by the node
	} {
		cut, _ := wholeMessageTrace()
		if c.drop != "" {
			kept := cut.Spans[:0]
			for _, s := range cut.Spans {
				if s.OperationName != c.drop {
					kept = append(kept, s)
				}
			}
			cut.Spans = kept
		} else {
			for i := range cut.Spans {
				if pluginOf(cut, &cut.Spans[i]) == c.plugin {
					cut.Spans[i].ProcessID = "p1"
				}
			}
		}
		err := checkMessageTrace(cut, id)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("drop %q / move %q: check says %v, want %q", c.drop, c.plugin, err, c.want)
		}
	}
}

// wholeMessageTrace builds the trace of one message as a run records it,
// in Jaeger's form: three processes, every hop.
func wholeMessageTrace() (*jaegertest.Trace, string) {
	const id = "p1-7"
	tr := &jaegertest.Trace{TraceID: "t", Processes: map[string]jaegertest.Process{
		"p1": {ServiceName: "ferry"},
		"p2": {ServiceName: "ferry", Tags: []jaegertest.KeyValue{{Key: string(telemetry.AttrPlugin), Value: "transport/grpc"}}},
		"p3": {ServiceName: "ferry", Tags: []jaegertest.KeyValue{{Key: string(telemetry.AttrPlugin), Value: "storage/file"}}},
	}}
	add := func(span, parent, name, proc string) {
		s := jaegertest.Span{TraceID: "t", SpanID: span, OperationName: name, ProcessID: proc,
			Tags: []jaegertest.KeyValue{{Key: string(telemetry.AttrMessageID), Value: id}}}
		if parent != "" {
			s.References = []jaegertest.Reference{{RefType: jaegertest.RefChildOf, TraceID: "t", SpanID: parent}}
		}
		tr.Spans = append(tr.Spans, s)
	}
	add("s1", "", telemetry.SpanProducerSend, "p1")
	add("s2", "s1", telemetry.SpanTransportReceive, "p2")
	add("s3", "s2", telemetry.SpanBrokerAppend, "p1")
	add("s4", "s3", telemetry.SpanStorageAppend, "p3")
	add("s5", "s4", telemetry.SpanStorageFlush, "p3")
	add("s6", "s1", telemetry.SpanStorageRead, "p3")
	add("s7", "s6", telemetry.SpanBrokerDeliver, "p1")
	add("s8", "s7", telemetry.SpanTransportDeliver, "p2")
	add("s9", "s1", telemetry.SpanConsumerProcess, "p1")
	return tr, id
}
