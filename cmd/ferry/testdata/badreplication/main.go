// Command badreplication is a deliberately broken replication plugin, the
// negative control of `ferry plugin test replication`: the sync master–slave
// plugin, except that every batch is answered OK at once, before any slave
// has it. Tests build it; it is not part of ferry.
package main

import (
	"context"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/replication/masterslave"
)

type okEarly struct{ *masterslave.Plugin }

func (p okEarly) Replicate(ctx context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	if _, err := p.Plugin.Replicate(ctx, msgs); err != nil {
		return nil, err
	}
	return func(context.Context) (sdk.Status, []int64, error) { return 1, nil, nil }, nil // STATUS_OK
}

func main() { sdk.Serve(sdk.ServeOpts{Replication: okEarly{masterslave.New(masterslave.ModeSync)}}) }
