package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/sdk"
)

// wireRecorder is a store that checks, for each append, the wire forms that
// come with its messages (sdk.MessageWiresOf).
type wireRecorder struct {
	sdk.Storage
	mu      sync.Mutex
	appends int
	carried int // messages with a wire form
	errs    []error
}

func (w *wireRecorder) Append(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	wires := sdk.MessageWiresOf(ctx, msgs)
	w.mu.Lock()
	w.appends++
	for i, b := range wires {
		if b == nil {
			continue
		}
		w.carried++
		var m sdk.Message
		if err := proto.Unmarshal(b, &m); err != nil {
			w.errs = append(w.errs, err)
			continue
		}
		// The broker sets these after decoding; the core writes them
		// after the wire form.
		m.Queue, m.BornUnixNano = msgs[i].Queue, msgs[i].BornUnixNano
		if !proto.Equal(&m, msgs[i]) {
			w.errs = append(w.errs, fmt.Errorf("message %q: wire form is of %q", msgs[i].Id, m.Id))
		}
	}
	w.mu.Unlock()
	return w.Storage.Append(ctx, msgs)
}

// TestAppendsCarryTheProducersWireForms: the wire forms a produce came with
// reach the store with its messages, also when the appender joins the
// batches of several producers, some of which have none.
func TestAppendsCarryTheProducersWireForms(t *testing.T) {
	rec := &wireRecorder{Storage: newMemory(t)}
	b := newBroker(t, newSource(rec))
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				req := &sdk.ProduceRequest{}
				var wires sdk.MessageWires
				for j := range 3 {
					m := &sdk.Message{Id: fmt.Sprintf("p%d-%d-%d", p, i, j), Topic: "orders", Queue: int32(j % 2), Body: []byte("x")}
					w, err := m.MarshalVT()
					if err != nil {
						t.Error(err)
						return
					}
					req.Messages, wires = append(req.Messages, m), append(wires, w)
				}
				ctx := context.Background()
				if p%2 == 0 { // half the producers' requests come with their wire forms
					ctx = sdk.WithMessageWires(ctx, req.Messages, wires)
				}
				if _, err := b.Produce(ctx, req); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, err := range rec.errs {
		t.Error(err)
	}
	if rec.carried != 4*50*3 {
		t.Fatalf("%d messages reached the store with their wire form, want %d (in %d appends)", rec.carried, 4*50*3, rec.appends)
	}
}
