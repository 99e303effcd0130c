package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

// encodingStore is a memory store that answers ReadEncoded as a store
// over the ring does: its messages as ReadResponse.messages records.
type encodingStore struct {
	*memory.Store
	encoded atomic.Int32 // reads answered encoded (queues are read at once)
}

func (s *encodingStore) ReadEncoded(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, sdk.EncodedMessages, error) {
	resp, err := s.Read(ctx, req)
	if err != nil {
		return nil, sdk.EncodedMessages{}, err
	}
	s.encoded.Add(1)
	msgs := sdk.EncodedMessages{Records: appendMessageRecords(nil, 2, resp.Messages), N: len(resp.Messages)}
	for _, m := range resp.Messages {
		if telemetry.SampledTraceparent(m.Headers[telemetry.HeaderTraceparent]) {
			msgs.Sampled++ // as the SDK's check of each message counts them
		}
	}
	resp.Messages = nil
	return resp, msgs, nil
}

// onTheWire is what a transport's client decodes of resp and parts.
func onTheWire(t *testing.T, resp *sdk.FetchResponse, parts []sdk.EncodedMessages) *ferryv1.FetchResponse {
	t.Helper()
	b, err := resp.MarshalVT()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		b = p.AppendRetagged(b, 1)
	}
	got := &ferryv1.FetchResponse{}
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestFetchWireSameAnswer: FetchWire's answer, on the wire, is Fetch's,
// whether the store answers encoded or decoded.
func TestFetchWireSameAnswer(t *testing.T) {
	for _, enc := range []bool{true, false} {
		var store sdk.Storage = newMemory(t)
		es := &encodingStore{Store: store.(*memory.Store)}
		if enc {
			store = es
		}
		b := newBroker(t, newSource(store))
		produce(t, b, 0, "a", "b", "c")
		produce(t, b, 1, "d")
		ctx := context.Background()
		req := &sdk.FetchRequest{Topic: "orders", Positions: []*sdkPos{{Queue: 0, Offset: 1}, {Queue: 1, Offset: 0}}}
		want, err := b.Fetch(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(want.Messages) != 3 {
			t.Fatalf("fetch: %d messages, want 3", len(want.Messages))
		}
		got, parts, err := b.FetchWire(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Messages) != 0 || len(parts) != 2 {
			t.Fatalf("encoded=%v: %d messages decoded and %d parts in the wire answer, want 0 and 2", enc, len(got.Messages), len(parts))
		}
		if wire := onTheWire(t, got, parts); !proto.Equal(wire, onTheWire(t, want, nil)) {
			t.Fatalf("encoded=%v: on the wire\n%v\nwant\n%v", enc, wire, want)
		}
		if enc && es.encoded.Load() != 2 {
			t.Fatalf("%d reads answered encoded, want 2 (one a queue)", es.encoded.Load())
		}
		// The control: without its parts the answer has lost its
		// messages.
		if len(onTheWire(t, got, nil).Messages) != 0 {
			t.Fatal("control: messages without the parts")
		}
	}
}

// TestFetchWireWhileTracing: with tracing on, a queue holding a message in
// a sampled trace is decoded, so that it gets its broker.deliver span; a
// queue whose messages are all unsampled stays encoded and records
// nothing. The control: Fetch of the same queues records the same span.
func TestFetchWireWhileTracing(t *testing.T) {
	const sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const unsampled = "00-11111111111111111111111111111111-00f067aa0ba902b7-00"
	rec := tracetest.NewSpanRecorder()
	defer telemetry.UseSpanProcessor(rec)()
	es := &encodingStore{Store: newMemory(t)}
	b := newBroker(t, newSource(es))
	ctx := context.Background()
	for q, tp := range []string{sampled, unsampled} {
		req := &sdk.ProduceRequest{Messages: []*sdk.Message{
			{Id: fmt.Sprint("a", q), Topic: "orders", Queue: int32(q), Body: []byte("x"), Headers: map[string]string{"traceparent": unsampled}},
			{Id: fmt.Sprint("b", q), Topic: "orders", Queue: int32(q), Body: []byte("y"), Headers: map[string]string{"traceparent": tp}},
		}}
		if _, err := b.Produce(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	deliveries := func() int {
		n := 0
		for _, s := range rec.Ended() {
			if s.Name() == telemetry.SpanBrokerDeliver && s.SpanContext().TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
				n++
			}
		}
		return n
	}
	req := &sdk.FetchRequest{Topic: "orders", Positions: []*sdkPos{{Queue: 0, Offset: 0}, {Queue: 1, Offset: 0}}}
	resp, parts, err := b.FetchWire(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Messages) != 2 || resp.Messages[0].Queue != 0 || len(parts) != 1 || parts[0].N != 2 {
		t.Fatalf("decoded %d messages, %d parts; want queue 0's two decoded and queue 1's in one part", len(resp.Messages), len(parts))
	}
	if got := deliveries(); got != 1 {
		t.Fatalf("%d broker.deliver spans in the sampled trace, want 1", got)
	}
	if _, err := b.Fetch(ctx, req); err != nil {
		t.Fatal(err)
	}
	if got := deliveries(); got != 2 {
		t.Fatalf("control: Fetch made %d spans in all, want 2", got)
	}
}
