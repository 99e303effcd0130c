package sdk

import (
	"context"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

type (
	// TopicSettings are a topic's own settings (retention by size and by
	// age, max message bytes); 0 is unset. docs/admin.md, "Per-topic
	// settings".
	TopicSettings = ferryv1.TopicSettings
	// TopicRetention is one topic's own retention, as the broker hands it
	// to its store.
	TopicRetention = ferryv1.TopicRetention
)

// TopicRetainer is an optional capability of a Storage: retention of a
// topic's own, beside the store's configured one (`ferry topic create
// --retention-bytes`, `--retention-age`).
//
// SetTopicRetention replaces the store's per-topic retention with topics:
// every topic that has a retention of its own, each field 0 when unset (the
// store's own retention applies to it). A topic not in topics has none of
// its own. The store keeps them durably itself (a restarted plugin applies
// them before the broker hands them again), applies them on its retention
// passes, and ignores topics it holds no messages of. A store that lacks
// one of the settings (by size, by age) answers errors.ErrUnsupported
// naming it and changes nothing: the broker then refuses the create or
// alter that asked for it.
//
// The broker calls it at start (when any topic has a retention of its own,
// or the store has the capability) and after each change of a topic's
// retention, one call at a time, from any goroutine.
//
// Over gRPC (StorageClient) the client always has it; a plugin without the
// capability answers UNIMPLEMENTED: errors.ErrUnsupported.
type TopicRetainer interface {
	SetTopicRetention(ctx context.Context, topics []*TopicRetention) error
}
