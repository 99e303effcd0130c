package broker

import (
	"context"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
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
