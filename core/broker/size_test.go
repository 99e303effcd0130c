package broker

import (
	"context"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// GetOffsets with with_bytes reports each queue's bytes from a store that
// sizes its queues (sdk.QueueSizer), and none (unknown, not 0) from one
// that cannot; without with_bytes, none.
func TestGetOffsetsWithBytes(t *testing.T) {
	refs := []*sdk.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}}
	for _, tc := range []struct {
		name  string
		store sdk.Storage
		sized bool
	}{{"sizer", newMemory(t), true}, {"no sizer", plainStore{newMemory(t)}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(Options{Node: "n1", Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(tc.store))
			b.Start()
			defer b.Close(context.Background())
			produce(t, b, 0, "a-0123456789", "b-0123456789")
			resp, err := b.GetOffsets(context.Background(), &sdk.GetOffsetsRequest{Queues: refs, WithBytes: true})
			if err != nil {
				t.Fatal(err)
			}
			q0, q1 := resp.Offsets[0].Bytes, resp.Offsets[1].Bytes
			if !tc.sized {
				if q0 != nil || q1 != nil {
					t.Fatalf("a store that cannot size its queues: bytes %v, %v; want unknown (nil)", q0, q1)
				}
				return
			}
			if q0 == nil || *q0 < 24 || q1 == nil || *q1 != 0 {
				t.Fatalf("bytes of queue 0 (two 12-byte bodies) and queue 1 (empty): %v, %v", q0, q1)
			}
			plain, err := b.GetOffsets(context.Background(), &sdk.GetOffsetsRequest{Queues: refs})
			if err != nil || plain.Offsets[0].Bytes != nil {
				t.Fatalf("GetOffsets without with_bytes: %v, %v; want no bytes", plain, err)
			}
		})
	}
}
