package grpctransport_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// wakingCore is a core on the ring data plane as the transport sees it: it
// has WakeCore (sdk.CoreWaker).
type wakingCore struct {
	fakeCore
	wakes       atomic.Int64
	mu          sync.Mutex
	wokenAtCall []int64 // wakes counted when each produce reached the core
}

func (c *wakingCore) WakeCore() { c.wakes.Add(1) }

// A client's bytes wake the core before its request reaches the core: the
// core's wake-up overlaps the transport's decoding of the request. (Without
// wakeOnRead, the core is never woken ahead: the test fails with 0 wakes.)
func TestClientBytesWakeTheCore(t *testing.T) {
	core := &wakingCore{}
	core.produce = func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
		core.mu.Lock()
		core.wokenAtCall = append(core.wokenAtCall, core.wakes.Load())
		core.mu.Unlock()
		return &ferryv1.ProduceResponse{Offsets: []int64{0}, Status: ferryv1.Status_STATUS_OK}, nil
	}
	var _ sdk.CoreWaker = core
	s := serve(t, core, "")
	stream, err := s.rpc.Produce(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if err := stream.Send(&ferryv1.ProduceRequest{Seq: seq, Messages: []*ferryv1.Message{{Id: "m", Topic: "t"}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	core.mu.Lock()
	got := append([]int64(nil), core.wokenAtCall...)
	core.mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("%d produces reached the core, want 3", len(got))
	}
	for i, w := range got {
		// Each send is a read of its own bytes, after the previous answer.
		if w < int64(i+1) {
			t.Fatalf("produce %d reached the core after %d wakes, want at least %d (wakes at each call: %v)", i+1, w, i+1, got)
		}
	}
}
