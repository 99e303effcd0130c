package grpctransport_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/internal/freeport"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// wiresMatch says whether wires are the wire forms of msgs: one each, and
// each decoding to its message.
func wiresMatch(msgs []*ferryv1.Message, wires sdk.MessageWires) error {
	if len(wires) != len(msgs) {
		return fmt.Errorf("%d wire forms for %d messages", len(wires), len(msgs))
	}
	for i, w := range wires {
		var m ferryv1.Message
		if err := proto.Unmarshal(w, &m); err != nil {
			return fmt.Errorf("message %d: wire form does not decode: %v", i, err)
		}
		if !proto.Equal(&m, msgs[i]) {
			return fmt.Errorf("message %d: wire form decodes to %v, the core got %v", i, &m, msgs[i])
		}
	}
	return nil
}

// TestRingProduceCarriesWireForms: over the ring data plane, a produce
// reaches the core with each message's wire form beside it (what the core
// then writes into the store's ring as it is), and each is exactly the
// message the core decoded.
func TestRingProduceCarriesWireForms(t *testing.T) {
	addrs, err := freeport.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	tc, stop := sdktest.ServeTransport(t, grpctransport.New(), true)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := tc.Configure(ctx, fmt.Appendf(nil, `{"listen": %q}`, addrs[0]), &sdk.Environment{Pipeline: "p", Node: "n", DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if tc.DataPlane() != sdk.DataPlaneRing {
		t.Fatalf("data plane %s, want the ring", tc.DataPlane())
	}
	var (
		mu      sync.Mutex
		checked []error
	)
	core := &fakeCore{produce: func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
		err := wiresMatch(req.Messages, sdk.MessageWiresOf(ctx, req.Messages))
		mu.Lock()
		checked = append(checked, err)
		mu.Unlock()
		return &ferryv1.ProduceResponse{Offsets: make([]int64, len(req.Messages)), Status: ferryv1.Status_STATUS_OK}, nil
	}}
	sctx, scancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tc.Serve(sctx, core) }()
	defer func() { scancel(); <-done }()

	cc, err := grpc.NewClient(addrs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := ferryv1.NewBrokerClient(cc).Produce(ctx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	sent := []*ferryv1.ProduceRequest{
		{Seq: 1, Messages: []*ferryv1.Message{
			{Id: "a", Topic: "orders", Key: "k", Headers: map[string]string{"h": "v", "é": "ß"}, Body: bytes.Repeat([]byte("b"), 3000), BornUnixNano: 5},
			{Id: "b", Topic: "orders", Queue: 2, Body: []byte("two")},
		}},
		{Seq: 2, Messages: []*ferryv1.Message{{Id: "c", Topic: "orders"}}},
	}
	for _, req := range sent {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	for range sent {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Error != nil {
			t.Fatalf("produce %d: %v", resp.Seq, resp.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(checked) != len(sent) {
		t.Fatalf("the core got %d produces, want %d", len(checked), len(sent))
	}
	for i, err := range checked {
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}

	// The checker's negative controls: it fails wire forms that are not
	// the messages', or missing.
	w0, _ := sent[0].Messages[0].MarshalVT()
	w1, _ := sent[0].Messages[1].MarshalVT()
	if wiresMatch(sent[0].Messages, sdk.MessageWires{w1, w0}) == nil {
		t.Fatal("control: swapped wire forms passed")
	}
	if wiresMatch(sent[0].Messages, nil) == nil {
		t.Fatal("control: no wire forms passed")
	}
}
