package sdk

import "context"

// QueueSizer is an optional capability of a Storage: telling how many bytes
// it holds for each queue, for `ferry topic describe` (GetOffsetsRequest
// with_bytes). A store without it keeps working; the broker then reports
// the bytes as unknown, never as 0.
//
// QueueBytes returns, for each queue in queues (in order), the bytes the
// store holds for the queue's messages from its start to its end as
// GetOffsets reports them (the store's own measure: the file store's
// records in its log, the memory store's encoded messages), 0 for an
// unknown queue, or -1 for a queue the store cannot size.
//
// Called rarely (by administrators), from any goroutine, while appends,
// reads and commits go on.
//
// Over gRPC (StorageClient) the client always has it; a plugin without the
// capability answers UNIMPLEMENTED: errors.ErrUnsupported. It is a control
// call, made over gRPC even when the data plane is on the rings.
type QueueSizer interface {
	QueueBytes(ctx context.Context, queues []*QueueRef) ([]int64, error)
}
