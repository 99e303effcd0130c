package httptransport

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/telemetry"
)

// traceCore records the traced messages the transport hands it and answers
// a fetch with one sampled message whose broker.deliver span is given.
type traceCore struct {
	marshalCore
	mu      sync.Mutex
	produce *ferryv1.ProduceRequest
	deliver uint64 // the broker.deliver span id of the fetched message
}

func (c *traceCore) Produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	c.mu.Lock()
	c.produce = req
	c.mu.Unlock()
	return c.marshalCore.Produce(ctx, req)
}

func (c *traceCore) Fetch(context.Context, *ferryv1.FetchRequest) (*ferryv1.FetchResponse, error) {
	return &ferryv1.FetchResponse{
		Messages: []*ferryv1.Message{
			{Id: "plain", Topic: "orders", Headers: map[string]string{}},
			{Id: "traced", Topic: "orders", Offset: 1, Headers: map[string]string{telemetry.HeaderTraceparent: "00-" + tracedTrace + "-00f067aa0ba902b7-01"}},
		},
		TracedIndex: []uint32{1}, TracedSpan: []uint64{c.deliver},
	}, nil
}

const tracedTrace = "4bf92f3577b34da6a3ce929d0e0e4736"

// The http transport takes part in a message's trace as the grpc transport
// does: a produced message whose traceparent header is sampled gets a
// transport.receive span under its producer's span, named to the core with
// the request (traced_index, traced_span), and a pulled message the core
// names gets a transport.deliver span under its broker.deliver span. An
// unsampled message gets none.
func TestHTTPTransportTracesMessages(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer telemetry.UseSpanProcessor(rec)()
	cfg := NewDefaultConfig()
	core := &traceCore{marshalCore: marshalCore{t}, deliver: 0x1122334455667788}
	a := newAPI(core, cfg, context.Background())

	body := fmt.Sprintf(`{"messages":[{"body":"a","headers":{"traceparent":"00-%s-00f067aa0ba902b7-00"}},{"body":"b","headers":{"traceparent":"00-%s-00f067aa0ba902b7-01"}}]}`,
		strings.Repeat("1", 32), tracedTrace)
	req := httptest.NewRequest("POST", "/v1/topics/orders/messages", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	a.routes().ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("produce: %d %s", w.Code, w.Body)
	}
	var receive []string
	var receiveSpan uint64
	for _, s := range rec.Ended() {
		if s.Name() == telemetry.SpanTransportReceive && s.SpanContext().TraceID().String() == tracedTrace {
			receive = append(receive, s.Parent().SpanID().String())
			sid := s.SpanContext().SpanID()
			receiveSpan = binary.BigEndian.Uint64(sid[:])
		}
	}
	if len(receive) != 1 || receive[0] != "00f067aa0ba902b7" {
		t.Fatalf("transport.receive spans in the sampled message's trace under: %v; want one under its producer span 00f067aa0ba902b7", receive)
	}
	core.mu.Lock()
	p := core.produce
	core.mu.Unlock()
	if len(p.TracedIndex) != 1 || p.TracedIndex[0] != 1 || len(p.TracedSpan) != 1 || p.TracedSpan[0] != receiveSpan {
		t.Fatalf("the core got traced %v %x; want index 1 with the transport.receive span %x", p.TracedIndex, p.TracedSpan, receiveSpan)
	}

	rec2 := len(rec.Ended())
	w = httptest.NewRecorder()
	a.routes().ServeHTTP(w, httptest.NewRequest("GET", "/v1/topics/orders/messages?queue=0&offset=0", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("pull: %d %s", w.Code, w.Body)
	}
	var deliver []string
	for _, s := range rec.Ended()[rec2:] {
		if s.Name() == telemetry.SpanTransportDeliver && s.SpanContext().TraceID().String() == tracedTrace {
			deliver = append(deliver, s.Parent().SpanID().String())
		}
	}
	if len(deliver) != 1 || deliver[0] != "1122334455667788" {
		t.Fatalf("transport.deliver spans in the pulled message's trace under: %v; want one under its broker.deliver span 1122334455667788", deliver)
	}
}
