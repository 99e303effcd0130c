package sdk

import "context"

// TimeSeeker is an optional capability of a Storage: finding offsets by time,
// for Broker.ResetOffsets to a timestamp (`ferry group reset-offsets
// --to-datetime`). A store without it keeps working; the broker then answers
// a reset by time with errors.ErrUnsupported.
//
// The time compared is each message's StoredUnixNano: when the store
// accepted it, from the broker node's clock. Not BornUnixNano, the
// producer's: producers' clocks differ and a retried or late message may be
// stored long after it was born, while "where was this queue at 10:00" is a
// question about the log. Stored times need not grow with offsets (a clock
// set back), so the answer is defined by the messages, not by order:
//
// OffsetsForTime returns, for each queue in queues (in order), the first
// offset, from the queue's start to its end as GetOffsets reports them,
// whose message has StoredUnixNano >= unixNano. It is the queue's end when
// no message is that new, and so the start when all are (t before the
// queue's first message) and 0 for an unknown queue. A message whose stored
// data is damaged is not considered (its time cannot be known). Only
// messages a Read could return count: nothing past the visible end.
//
// Called rarely (by administrators), from any goroutine, while appends,
// reads and commits go on.
//
// Over gRPC (StorageClient) the client always has it; a plugin without the
// capability answers UNIMPLEMENTED: errors.ErrUnsupported. It is a control
// call, made over gRPC even when the data plane is on the rings.
type TimeSeeker interface {
	OffsetsForTime(ctx context.Context, unixNano int64, queues []*QueueRef) ([]int64, error)
}
