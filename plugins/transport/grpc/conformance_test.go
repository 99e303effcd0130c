package grpctransport_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/internal/ferrytest"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// features configures the transport on a free port for the suite, with a
// drain bound longer than DrainInFlight holds a request.
func features(t *testing.T) sdktest.TransportFeatures {
	addr := ferrytest.FreeAddr(t)
	return sdktest.TransportFeatures{
		Config: []byte(`{"listen": "` + addr + `", "shutdown_timeout": "30s"}`),
		Client: sdktest.BrokerClient(addr),
	}
}

// The grpc transport passes the transport suite, called directly and through
// the plugin boundary on gRPC and on the rings.
func TestConformance(t *testing.T) {
	sdktest.TestTransport(t, func(*testing.T) sdk.Transport { return grpctransport.New() }, features(t))
}

// Broken transports, the suite's negative controls: each wraps the grpc
// transport and breaks one part of the contract.
type broken struct {
	*grpctransport.Transport
	core     func(sdk.Core) sdk.Core               // wraps the core the transport is given
	serveCtx func(context.Context) context.Context // replaces Serve's context
	validate func(sdk.Problems) sdk.Problems       // replaces Validate's answer
}

func (b *broken) Serve(ctx context.Context, core sdk.Core) error {
	if b.core != nil {
		core = b.core(core)
	}
	if b.serveCtx != nil {
		ctx = b.serveCtx(ctx)
	}
	return b.Transport.Serve(ctx, core)
}

func (b *broken) Validate(config []byte) sdk.Problems {
	ps := b.Transport.Validate(config)
	if b.validate != nil {
		return b.validate(ps)
	}
	return ps
}

// twice forwards every produce to the core twice.
type twice struct{ sdk.Core }

func (c twice) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	_, _ = c.Core.Produce(ctx, req)
	return c.Core.Produce(ctx, req)
}

// opaque loses what the core's errors are: the client gets a bare message.
type opaque struct{ sdk.Core }

func (c opaque) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	resp, err := c.Core.Produce(ctx, req)
	if err != nil {
		return nil, errors.New(err.Error())
	}
	return resp, nil
}

func (c opaque) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	resp, err := c.Core.Fetch(ctx, req)
	if err != nil {
		return nil, errors.New(err.Error())
	}
	return resp, nil
}

// detached calls the core with a context the client's end does not reach.
type detached struct{ sdk.Core }

func (c detached) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	return c.Core.Fetch(context.WithoutCancel(ctx), req)
}

// serial makes one call to the core at a time.
type serial struct {
	sdk.Core
	mu *sync.Mutex
}

func (c serial) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Core.Produce(ctx, req)
}

func (c serial) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Core.Fetch(ctx, req)
}

// Each broken transport fails the case that checks what it breaks, across
// the plugin boundary (mode grpc), saying what went wrong.
func TestConformanceNegativeControls(t *testing.T) {
	for _, c := range []struct {
		name, cases, want string
		b                 *broken
	}{
		{"forwards twice", "ProduceExactlyOnce", "reached the core 2 times",
			&broken{core: func(c sdk.Core) sdk.Core { return twice{c} }}},
		{"ignores the drain", "TransportDrainIdle,DrainInFlight", "did not",
			&broken{serveCtx: context.WithoutCancel}},
		{"loses error codes", "ErrorsMapped", "the client got",
			&broken{core: func(c sdk.Core) sdk.Core { return opaque{c} }}},
		{"drops deadlines and cancellation", "DeadlineCrosses,CancelCrosses", "in the core",
			&broken{core: func(c sdk.Core) sdk.Core { return detached{c} }}},
		{"one request at a time", "SlowDoesNotBlock", "while another request was held",
			&broken{core: func(c sdk.Core) sdk.Core { return serial{c, &sync.Mutex{}} }}},
		{"accepts any config", "TransportBadConfig", "want a problem at key",
			&broken{validate: func(sdk.Problems) sdk.Problems { return nil }}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := features(t)
			f.Bound = 2 * time.Second
			for _, tc := range sdktest.TransportCases() {
				if !sdktest.Selected(tc.Name, c.cases) {
					continue
				}
				h := sdktest.NewGoTransportHarness(t, "grpc", func(*testing.T) sdk.Transport {
					b := *c.b
					b.Transport = grpctransport.New()
					return &b
				}, f)
				err := sdktest.RunTransportCase(tc, h)
				if err == nil {
					t.Fatalf("%s passed a transport that %s", tc.Name, c.name)
				}
				if _, skipped := sdktest.Skipped(err); skipped || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("%s: %v, want a failure saying %q", tc.Name, err, c.want)
				}
			}
		})
	}
}
