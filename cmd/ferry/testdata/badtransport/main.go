// Command badtransport is a deliberately broken transport plugin, the
// negative control of `ferry plugin test transport`: the grpc transport,
// except that it forwards every produce to the core twice and goes on
// serving after the host asked it to drain. Tests build it; it is not part
// of ferry.
package main

import (
	"context"

	"github.com/ferrymq/ferry/core/sdk"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

type bad struct{ *grpctransport.Transport }

func (b bad) Serve(ctx context.Context, core sdk.Core) error {
	return b.Transport.Serve(context.WithoutCancel(ctx), twice{core})
}

type twice struct{ sdk.Core }

func (c twice) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	_, _ = c.Core.Produce(ctx, req)
	return c.Core.Produce(ctx, req)
}

func main() { sdk.Serve(sdk.ServeOpts{Transport: bad{grpctransport.New()}}) }
