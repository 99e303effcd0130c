package sdk

import "context"

// GroupStore is an optional capability of a Storage: listing the consumer
// groups that have committed offsets, and removing a group's offsets. The
// broker uses it for Broker.ListGroups (groups known only from the store,
// after a restart) and Broker.DeleteGroup. A store without it keeps working:
// ListGroups then lists the groups the broker has seen since it started, and
// DeleteGroup answers errors.ErrUnsupported.
//
// Both are called rarely (by administrators), from any goroutine, while
// appends, reads and commits go on.
//
// Over gRPC (StorageClient) the client always has the methods; a plugin that
// lacks the capability answers UNIMPLEMENTED, which they return as
// errors.ErrUnsupported.
type GroupStore interface {
	// StoredGroups returns the groups with at least one committed offset,
	// in any order.
	StoredGroups(ctx context.Context) ([]string, error)
	// DeleteGroupOffsets durably removes every committed offset of group
	// (GetOffsets answers -1 for it afterwards). A group with none is not
	// an error.
	DeleteGroupOffsets(ctx context.Context, group string) error
}
