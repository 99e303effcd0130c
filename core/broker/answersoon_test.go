package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// slowStore answers every append 20 ms after it was made.
type slowStore struct{ sdk.Storage }

func (s slowStore) Append(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	wait, err := s.Storage.Append(ctx, msgs)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]int64, error) {
		time.Sleep(20 * time.Millisecond)
		return wait(ctx)
	}, nil
}

// A producer's answer is announced as near (sdk.AnswerSoon) once its append
// is with a store whose last answer came within soonWithin; never when the
// store answers slower (an fsync), where a reader woken ahead would spin in
// vain.
func TestAnswerSoonOnlyForFastStores(t *testing.T) {
	for _, slow := range []bool{false, true} {
		t.Run(map[bool]string{false: "fast", true: "slow"}[slow], func(t *testing.T) {
			var st sdk.Storage = newMemory(t)
			within := time.Minute // every answer is fast
			if slow {
				st, within = slowStore{st}, time.Millisecond
			}
			b := newBroker(t, newSource(st))
			b.app.soonWithin = within
			var calls atomic.Int64
			ctx := sdk.WithAnswerSoon(context.Background(), func() { calls.Add(1) })
			for i := range 3 {
				req := &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: fmt.Sprint("m", i), Topic: "orders", Queue: 0, Body: []byte{byte(i)}}}}
				if _, err := b.Produce(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			// The first append has no answer before it to go by.
			want := int64(2)
			if slow {
				want = 0
			}
			if n := calls.Load(); n != want {
				t.Fatalf("answer announced %d times for 3 produces, want %d", n, want)
			}
		})
	}
}
