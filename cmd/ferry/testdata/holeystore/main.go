// Command holeystore is a deliberately broken storage plugin, the negative
// control of ferry verify's read-back from every node of a cluster: the
// in-memory store, except that it loses every 5th message of a queue (the
// offsets 1, 6, 11, ...) after acknowledging it, unless it is the queue's
// last (a read before a queue's end must answer something). The append is kept (the offsets stay the ones
// the store told, so a slave's replication sees nothing wrong), but no read
// ever returns it again. Tests build it and give it to one follower only: a
// loss a read-back from the leader alone cannot see. It is not part of
// ferry.
package main

import (
	"context"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

type holey struct{ sdk.Storage }

func lost(offset int64) bool { return offset%5 == 1 }

// Read answers as the memory store, without the lost messages; when a read
// would then answer nothing although more is stored, it reads on past them.
func (h *holey) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	for {
		resp, err := h.Storage.Read(ctx, req)
		if err != nil || resp == nil || len(resp.Messages) == 0 {
			return resp, err
		}
		end := int64(-1)
		if resp.Offsets != nil {
			end = resp.Offsets.End
		}
		kept := resp.Messages[:0]
		for _, m := range resp.Messages {
			if !lost(m.Offset) || m.Offset == end-1 {
				kept = append(kept, m)
			}
		}
		if len(kept) > 0 {
			resp.Messages = kept
			resp.TracedIndex, resp.TracedSpan = nil, nil // indexes into the messages before the loss
			return resp, nil
		}
		req = &sdk.ReadRequest{Id: req.Id, Topic: req.Topic, Queue: req.Queue, Offset: resp.Messages[len(resp.Messages)-1].Offset + 1,
			MaxMessages: req.MaxMessages, MaxBytes: req.MaxBytes, Trace: req.Trace}
	}
}

func main() { sdk.Serve(sdk.ServeOpts{Storage: &holey{Storage: memory.New()}}) }
