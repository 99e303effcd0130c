// Command lossystore is a deliberately broken storage plugin, the negative
// control of `ferry plugin test storage`: the in-memory store, except that
// every 10th message it is given is dropped while its append is acknowledged
// with an offset (the one the next message gets). Tests build it; it is not
// part of ferry.
package main

import (
	"context"
	"sync"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

type lossy struct {
	sdk.Storage
	mu sync.Mutex
	n  int
}

func (l *lossy) Append(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	l.mu.Lock()
	var kept []*sdk.Message
	keptAt := make([]int, len(msgs)) // index into kept whose offset msgs[i] is told
	for i, m := range msgs {
		l.n++
		keptAt[i] = len(kept)
		if l.n%10 != 0 {
			kept = append(kept, m)
		}
	}
	l.mu.Unlock()
	if len(kept) == 0 {
		return sdk.Appended(make([]int64, len(msgs))), nil
	}
	wait, err := l.Storage.Append(ctx, kept)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]int64, error) {
		offs, err := wait(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]int64, len(msgs))
		for i, k := range keptAt {
			out[i] = offs[min(k, len(offs)-1)]
		}
		return out, nil
	}, nil
}

func main() { sdk.Serve(sdk.ServeOpts{Storage: &lossy{Storage: memory.New()}}) }
