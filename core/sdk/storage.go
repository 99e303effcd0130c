package sdk

import "context"

// Storage is an append-only log per (topic, queue) plus the committed offsets
// of consumer groups. The broker is its only caller.
//
// Offsets are per queue, start at 0 and grow by one per message. A store
// de-duplicates by Message.Id within a window of recent messages per queue
// (at least the last DedupWindow ids): appending an id it holds returns the
// original offset and stores nothing. That is what makes the broker's retries
// after a plugin crash safe.
type Storage interface {
	Plugin
	// Append stores msgs (any mix of queues; order within a queue is kept).
	// Calls come from one goroutine, in the order the broker issued them,
	// so Append must fix the messages' order and return without waiting for
	// the disk. The returned AppendWait, called once, later, from another
	// goroutine (the waits of many batches run at once), waits for
	// durability and gives the offsets.
	// An error from Append itself means nothing of msgs was stored.
	// The broker still holds msgs: a store must not change them, and
	// copies what it keeps past the call.
	Append(ctx context.Context, msgs []*Message) (AppendWait, error)
	// Read returns messages of one queue from req.Offset on, at most
	// req.MaxMessages and about req.MaxBytes (at least one message when
	// any is there). Only messages as durable as the flush policy demands
	// are visible. A message whose stored data is damaged is never
	// delivered: the read stops before it, and a read from its offset
	// answers ErrCorrupt naming the offset (the broker then holds up that
	// queue alone). Its offset is never given to another message. Called
	// concurrently. The broker may use the messages returned after the
	// call: a store must not change them afterwards.
	Read(ctx context.Context, req *ReadRequest) (*ReadResponse, error)
	// CommitOffsets durably records a group's next offsets.
	CommitOffsets(ctx context.Context, group string, offsets []*GroupOffset) error
	// GetOffsets reports start, end and the group's committed offset (-1
	// when none) of each queue. An unknown queue has start = end = 0.
	// start is the oldest readable offset and end one past the newest
	// readable message (docs/plugins.md, "Offsets"): for a store that
	// answers appends only once durable, the durable end and the offset
	// the next append gets.
	GetOffsets(ctx context.Context, group string, queues []*QueueRef) ([]*QueueOffsets, error)
}

// DedupWindow is the least number of recent message ids per queue a store
// must remember for de-duplication.
const DedupWindow = 10000

// AppendWait blocks until an appended batch is as durable as the store's flush
// policy demands and returns one offset per message, in order. When ctx ends
// before the flush it returns the offsets with ErrFlushTimeout: the data is
// written but not known to be flushed.
type AppendWait func(ctx context.Context) ([]int64, error)

// Appended returns an AppendWait for a batch that is already durable.
func Appended(offsets []int64) AppendWait {
	return func(context.Context) ([]int64, error) { return offsets, nil }
}
