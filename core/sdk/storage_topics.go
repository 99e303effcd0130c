package sdk

import "context"

// TopicDeleter is an optional capability of a Storage: deleting a topic's
// data, for Broker.DeleteTopic. A store without it keeps working; the broker
// then refuses to delete topics (errors.ErrUnsupported).
//
// DeleteTopicData removes every message of every queue of topic and every
// group's committed offsets on them: afterwards GetOffsets answers start =
// end and committed -1 for them, and reads return nothing, after a reopen
// too. A store may free the space later (the file store: with the segments
// retention removes). Offsets are not reused: a topic created again with the
// name starts at the old ends (or at 0, for a store that can forget them
// whole). The broker stops routing to the topic first; it calls this
// rarely, from any goroutine. A topic the store never held is not an error.
//
// Over gRPC (StorageClient) the client always has it; a plugin without the
// capability answers UNIMPLEMENTED: errors.ErrUnsupported.
type TopicDeleter interface {
	DeleteTopicData(ctx context.Context, topic string) error
}
