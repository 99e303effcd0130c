package sdk

import "context"

// Transport carries producers' and consumers' traffic between applications
// and the broker core: it owns the listeners and the client protocol (gRPC,
// HTTP, ...), and calls Core for every request.
type Transport interface {
	Plugin
	// Serve accepts client traffic and forwards it to core until ctx ends.
	// Called once, after Configure (which binds the listeners); it returns
	// when ctx is done, after in-flight requests end or are abandoned.
	Serve(ctx context.Context, core Core) error
}

// Core is the broker as a transport sees it. Calls are safe from many
// goroutines at once and each may block (Fetch long-polls).
type Core interface {
	Produce(ctx context.Context, req *ProduceRequest) (*ProduceResponse, error)
	Fetch(ctx context.Context, req *FetchRequest) (*FetchResponse, error)
	CommitOffsets(ctx context.Context, req *CommitOffsetsRequest) error
	GetOffsets(ctx context.Context, req *GetOffsetsRequest) (*GetOffsetsResponse, error)
	Metadata(ctx context.Context, req *MetadataRequest) (*MetadataResponse, error)
	Heartbeat(ctx context.Context, req *HeartbeatRequest) (*HeartbeatResponse, error)
}

// ProducePreparer is implemented by a Core that can get ready for a produce
// as soon as it arrives, before the request is handled: the broker wakes its
// storage plugin's reader (StorageClient.Poke), so that the wake-up happens
// while the produce is routed instead of after its append was written. A
// transport's data plane calls it for every produce it hands over.
type ProducePreparer interface {
	PrepareProduce()
}

// TopicAdmin is the broker's runtime topic calls (Broker.CreateTopic,
// AlterTopic and DeleteTopic). The Core a transport plugin is given always has them (assert
// it: core.(sdk.TopicAdmin)); a Core of a test may not, and then the
// transport answers errors.ErrUnsupported.
type TopicAdmin interface {
	CreateTopic(ctx context.Context, req *CreateTopicRequest) (*CreateTopicResponse, error)
	AlterTopic(ctx context.Context, req *AlterTopicRequest) (*AlterTopicResponse, error)
	DeleteTopic(ctx context.Context, req *DeleteTopicRequest) (*DeleteTopicResponse, error)
}

// GroupAdmin is the broker's consumer-group calls (Broker.ListGroups,
// DescribeGroup, ResetOffsets and DeleteGroup). Like TopicAdmin, the Core a
// transport plugin is given has them (core.(sdk.GroupAdmin)); without them a
// transport answers errors.ErrUnsupported.
type GroupAdmin interface {
	ListGroups(ctx context.Context, req *ListGroupsRequest) (*ListGroupsResponse, error)
	DescribeGroup(ctx context.Context, req *DescribeGroupRequest) (*DescribeGroupResponse, error)
	ResetOffsets(ctx context.Context, req *ResetOffsetsRequest) (*ResetOffsetsResponse, error)
	DeleteGroup(ctx context.Context, req *DeleteGroupRequest) (*DeleteGroupResponse, error)
}
