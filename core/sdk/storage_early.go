package sdk

import "context"

// EarlyOffsets is an optional capability of a Storage: telling the offsets of
// an appended batch as soon as they are fixed and the batch is written, before
// it is as durable as the flush policy demands. The broker uses it to overlap
// the flush with the replication of the batch (RocketMQ's SYNC_MASTER with
// SYNC_FLUSH submits the flush and the replication at the same time): with
// master–slave replication it ships the batch to the slaves as soon as its
// offsets are known, and answers the producers once both the flush and the
// replication are done. A store without it keeps working: the broker then
// replicates a batch once AppendWait returned, as before.
//
// Who calls what, when, from how many goroutines:
//
//   - AppendEarly replaces Append for a batch (never both for one batch). Like
//     Append it is called from the broker's one appender goroutine, in order,
//     fixes the order of the batch and returns without waiting for the disk.
//     An error means nothing of msgs was stored, as for Append.
//   - The AppendWritten it returns is called at most once, later, from the
//     goroutine that then calls the AppendWait (one such goroutine per batch;
//     many batches wait at once). It may be skipped; the AppendWait is always
//     called. It blocks until the batch's offsets are fixed and the batch is
//     written where a crash of the store's process alone does not lose it (the
//     OS page cache, for a store on files), then returns one offset per
//     message, in order.
//   - The offsets it returns MUST equal the ones AppendWait returns for the
//     batch (when AppendWait returns offsets: no error, or ErrFlushTimeout).
//     Written data may still be lost by an OS crash or a power failure until
//     AppendWait reports it durable; a batch announced early whose flush then
//     fails is answered to the producer with the flush's error or
//     FLUSH_TIMEOUT, never OK.
//   - When AppendWritten returns an error (ctx ended, the store failed), the
//     outcome of the batch is the AppendWait's: the broker calls it anyway.
//
// A store that only knows its offsets once the batch is durable may return an
// AppendWritten that waits for the AppendWait's offsets, or not implement the
// capability at all.
//
// Over gRPC (StorageClient), AppendEarly asks the plugin for an early answer
// on the Append stream (AppendRequest.want_written); a plugin that implements
// EarlyOffsets sends one (AppendResponse.written) before the final answer, and
// one that does not, or an older plugin, sends only the final answer, which
// then also ends the AppendWritten.
type EarlyOffsets interface {
	AppendEarly(ctx context.Context, msgs []*Message) (AppendWritten, AppendWait, error)
}

// AppendWritten blocks until an appended batch is written and returns its
// offsets, one per message, in order: the offsets its AppendWait will return.
// See EarlyOffsets.
type AppendWritten func(ctx context.Context) ([]int64, error)

// Written returns an AppendWritten for a batch whose offsets are known.
func Written(offsets []int64) AppendWritten {
	return func(context.Context) ([]int64, error) { return offsets, nil }
}
