package sdk_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
)

// oneProduce is a transport whose Serve makes one produce and reports
// whether its core can be woken ahead (sdk.CoreWaker), then waits for ctx.
type oneProduce struct {
	waker chan bool
	err   chan error
}

func (o *oneProduce) Validate([]byte) sdk.Problems { return nil }
func (o *oneProduce) Configure(context.Context, []byte, *sdk.Environment) error {
	return nil
}
func (o *oneProduce) Close() error { return nil }
func (o *oneProduce) Serve(ctx context.Context, core sdk.Core) error {
	w, ok := core.(sdk.CoreWaker)
	if ok {
		w.WakeCore()
	}
	o.waker <- ok
	_, err := core.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "m", Topic: "t"}}})
	o.err <- err
	<-ctx.Done()
	return nil
}

// announcingCore answers produces and reports whether each one's context
// let it announce the answer (sdk.AnswerSoon), calling it when it did.
type announcingCore struct {
	sdk.Core
	soon chan bool
}

func (c announcingCore) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	f := sdk.AnswerSoon(ctx)
	if f != nil {
		f()
	}
	c.soon <- f != nil
	return &sdk.ProduceResponse{Offsets: []int64{0}, Status: ferryv1.Status_STATUS_OK}, nil
}

// On the ring data plane the transport's Core can wake the core ahead of a
// request (CoreWaker), and a produce's context lets the core wake the
// transport ahead of its answer (AnswerSoon), both by a poke of the ring. On
// the gRPC data plane (the control) neither exists.
func TestRingWakesAheadBothWays(t *testing.T) {
	for _, withRing := range []bool{true, false} {
		t.Run(map[bool]string{true: "ring", false: "grpc"}[withRing], func(t *testing.T) {
			impl := &oneProduce{waker: make(chan bool, 1), err: make(chan error, 1)}
			c, stop := sdktest.ServeTransport(t, impl, withRing)
			defer stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := c.Configure(ctx, nil, &sdk.Environment{Pipeline: "p", Node: "n", DataDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			core := announcingCore{soon: make(chan bool, 1)}
			sctx, scancel := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- c.Serve(sctx, core) }()
			if got := <-impl.waker; got != withRing {
				t.Errorf("the transport's core has WakeCore: %v, want %v", got, withRing)
			}
			if got := <-core.soon; got != withRing {
				t.Errorf("the produce's context has AnswerSoon: %v, want %v", got, withRing)
			}
			if err := <-impl.err; err != nil {
				t.Fatalf("produce: %v", err)
			}
			scancel()
			if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("Serve: %v", err)
			}
		})
	}
}
