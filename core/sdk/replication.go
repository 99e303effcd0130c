package sdk

import (
	"context"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Types of the replication contract.
type (
	ReplicationStatus = ferryv1.ReplicationStatusResponse
	ReplicaInfo       = ferryv1.ReplicaInfo
	NodeInfo          = ferryv1.NodeInfoResponse
	SetRoleRequest    = ferryv1.SetRoleRequest
	TopicChange       = ferryv1.TopicChange
	ReplicatedTopic   = ferryv1.ReplicatedTopic
)

// TopicChange ops.
const (
	TopicCreate = "create"
	TopicAlter  = "alter"
	TopicDelete = "delete"
	TopicSet    = "set"
)

// Node roles as the broker knows them. A master or leader takes produce; a
// slave or follower rejects it with ErrNotLeader and serves fetches.
const (
	RoleStandalone = "standalone"
	RoleMaster     = "master"
	RoleSlave      = "slave"
	RoleLeader     = "leader"
	RoleFollower   = "follower"
	RoleCandidate  = "candidate"
)

// TakesProduce reports whether a node in role accepts produce.
func TakesProduce(role string) bool {
	return role == RoleStandalone || role == RoleMaster || role == RoleLeader || role == ""
}

// Replication ships a node's log to other broker nodes and tells the broker
// when a batch reached the configured replication level. The broker is its
// only caller.
//
// Master–slave plugins ("apply, then replicate") get, on the master, every
// batch once it is stored locally (Replicate); on a slave they apply what
// the master sends through ReplicaCore.Apply. A consensus plugin ("replicate,
// then apply", raft) gets the batch through Replicate before anything is
// stored, and applies committed entries on every node, leader included,
// through ReplicaCore.Apply; the broker tells the two apart by Mode.
type Replication interface {
	Plugin
	// Serve runs the plugin's link to its broker core until ctx ends:
	// the plugin calls core to apply replicated messages, read the local
	// log and report role changes. Called once, after Configure; returns
	// when ctx is done.
	Serve(ctx context.Context, core ReplicaCore) error
	// Replicate is called by the broker of a node that takes produce,
	// from one goroutine, with batches in offset order per queue (for
	// mode "apply_first", stored messages with offsets set, durable as
	// the store's flush policy demands; for "apply_written", the same once
	// written, possibly before the master's flush; for "replicate_first",
	// messages not yet stored). It returns at once;
	// the ReplicateWait, called from another goroutine, waits for the
	// replication level. An error means the batch will never reach it.
	Replicate(ctx context.Context, msgs []*Message) (ReplicateWait, error)
	// Status reports the node's role, its replicas and their lag. Called
	// concurrently, by `ferry cluster status` through the broker's host.
	Status(ctx context.Context) (*ReplicationStatus, error)
}

// ReplicateWait blocks until a replicated batch reached the replication
// level and returns STATUS_OK, or returns STATUS_REPLICA_TIMEOUT /
// STATUS_REPLICA_NOT_AVAILABLE when it did not (never OK then). An error
// (ErrNotLeader, ErrUnavailable) means the level was not met and the batch's
// fate is unknown to this node.
//
// In mode ModeReplicateFirst it also returns the offsets the batch was
// stored at (applied on this node through ReplicaCore.Apply), in order.
type ReplicateWait func(ctx context.Context) (Status, []int64, error)

// ReplicaCore is the broker as a replication plugin sees it. Calls are safe
// from many goroutines.
type ReplicaCore interface {
	// Apply appends messages received from the master (offsets set) to
	// the local storage, in call order: calls made one after another from
	// one goroutine are appended in that order, so that many may be in
	// flight. The ApplyWait gives the offsets the store assigned once
	// durable. In mode ModeApplyFirst the messages carry the master's
	// offsets, and an offset different from the master's fails it (the
	// logs diverged) with ErrCorrupt.
	Apply(ctx context.Context, msgs []*Message) (ApplyWait, error)
	// Read reads the local log (a master serving a slave's catch-up).
	Read(ctx context.Context, req *ReadRequest) (*ReadResponse, error)
	// NodeInfo reports this node, its broker address and role, and the
	// start and end offsets of every queue the broker knows.
	NodeInfo(ctx context.Context) (*NodeInfo, error)
	// SetRole tells the broker its role changed (promotion, election) and
	// where the leader is; the broker takes or rejects produce from then
	// on and names the leader in its routing metadata.
	SetRole(ctx context.Context, req *SetRoleRequest) error
	// CommitOffsets stores a consumer group's next offsets on this node,
	// as a consumer's commit would (offsets received from the master, or
	// committed through a consensus log), overwriting what the node had:
	// an offset lower than the stored one moves the group back. The broker
	// checks topics and queues like a consumer's commit, and never reports
	// these offsets back through OffsetReplication.
	CommitOffsets(ctx context.Context, group string, offsets []*GroupOffset) error
	// ApplyTopics applies a change of the topic metadata received through
	// replication (an entry of a consensus log, or the master's topic set,
	// op TopicSet) to this node, durably (the node's topic metadata file)
	// before it returns. It is idempotent: a create of a topic the node
	// holds with as many queues, an alter to queues it has, a delete of a
	// topic it lacks succeed and change nothing, so that an entry applied
	// again after a crash does no harm. A change that contradicts this
	// node's own pipeline (deleting a topic it declares, a set lacking one)
	// is not applied to that topic and is reported (logged as an error); it
	// is not an error of the call. Errors are ErrInvalidArgument for a change
	// that cannot be applied anywhere (a bad name, shrinking queues), or the
	// store's errors (retry).
	ApplyTopics(ctx context.Context, change *TopicChange) error
	// DeleteGroupOffsets deletes a consumer group's committed offsets on
	// this node (a deletion from a consensus log, or the master's),
	// durably in the store before it returns, and forgets the group's
	// offsets the broker would report through OffsetReplication. It is
	// idempotent: deleting a group the node holds no offsets of succeeds.
	// generation is the group's generation after the deletion (0 from a
	// deletion that carries none: an older master or log entry); the node
	// keeps the highest it was given, durably, and a node that takes
	// commits refuses those of an older generation.
	DeleteGroupOffsets(ctx context.Context, group string, generation uint64) error
}

// TopicReplication is an optional interface of a Replication: it replicates
// the node's topic metadata (topics created, grown and deleted at runtime,
// docs/admin.md), so that every node knows the same topics. Without it the
// broker refuses runtime topic changes on a replicated node
// (errors.ErrUnsupported).
//
// The broker of a node that takes produce calls ReplicateTopics for each
// change, one at a time, from the goroutine of the admin call, after it
// checked the change against its own topics. In mode ModeReplicateFirst the
// plugin commits the change through its log and applies it on every node,
// this one included, through ReplicaCore.ApplyTopics, and returns once this
// node applied it, with the apply's error: the broker has changed nothing
// itself. In the master–slave modes the broker applied the change first
// (a create or alter: just before, as the new topic set; a delete: after)
// and change.Topics holds its whole topic set; the plugin ships it to its
// slaves, ahead of any batch of a created topic, and returns without
// waiting for them: a slave that is not connected gets the master's set
// (from ReplicaCore.NodeInfo) when it connects.
//
// Over gRPC the SDK announces the capability in the plugin's status
// (replicates_topics) when the implementation has this interface.
type TopicReplication interface {
	ReplicateTopics(ctx context.Context, change *TopicChange) error
}

// OffsetReplication is an optional interface of a Replication: it replicates
// consumer groups' committed offsets, so that a group reading from a replica
// (while the master is down) or from a promoted one resumes near where it
// was instead of from its start.
//
// The broker of a node that takes produce calls ReplicateOffsets after it
// stored a consumer's commit locally, from one goroutine, with the group's
// latest offsets per queue since the last call (commits are coalesced; a
// call may carry several commits of the group, or one of many). It is best
// effort: the consumer's commit succeeded already, a failure is only logged,
// and offsets lost that way are sent again with the group's next commit.
// When the plugin process is replaced, the broker sends the latest offsets of
// every group it reported before to the new one.
//
// ReplicateOffsets should return quickly (record and ship in the
// background). An error wrapping errors.ErrUnsupported tells the broker the
// plugin does not replicate offsets: it stops calling it for this plugin
// process. Over gRPC the SDK announces the capability in the plugin's
// status (replicates_offsets) when the implementation has this interface;
// a plugin that does not announce it, such as one built before it existed,
// is never called.
//
// Replicas store what they receive through ReplicaCore.CommitOffsets. A
// master–slave plugin ships the offsets to its slaves; a consensus plugin
// puts them through its log and applies them on every node, leader included.
type OffsetReplication interface {
	ReplicateOffsets(ctx context.Context, group string, offsets []*GroupOffset) error
}

// GroupDeleteReplication is an optional interface of a Replication: it
// deletes a consumer group's committed offsets on every node (`ferry group
// delete`). Without it the broker refuses to delete a group on a replicated
// node (errors.ErrUnsupported): replicas that kept the offsets would bring
// them back at a failover.
//
// The broker of a node that takes produce calls ReplicateGroupDelete from
// the goroutine of the admin call, after it checked the group (known, no
// live members unless forced). In mode ModeReplicateFirst the plugin commits
// the deletion through its log, applies it on every node, this one
// included, through ReplicaCore.DeleteGroupOffsets, and returns once this
// node applied it. In the master–slave modes the broker deleted the offsets
// on the master first; the plugin stops shipping the group's old offsets
// and ships the deletion to its slaves (those connected now with their next
// frame, the others when they connect), without waiting for them.
//
// generation is the group's generation after the deletion, as the broker
// proposes it (one more than the one it knows). The plugin carries it to
// every node's ReplicaCore.DeleteGroupOffsets; a consensus log may raise it
// (to one more than the log's own record of the group), never lower it.
//
// Over gRPC the SDK announces the capability in the plugin's status
// (replicates_group_deletes) when the implementation has this interface.
type GroupDeleteReplication interface {
	ReplicateGroupDelete(ctx context.Context, group string, generation uint64) error
}

// OffsetCommitter is an optional interface of an OffsetReplication whose
// offsets go through a consensus log (raft): CommitOffsets puts a group's
// offsets into the log and returns once they are committed there (and
// applied on this node), so that a consumer's commit acknowledged after it
// survives the loss of this node. Many callers wait at once; the plugin
// should put the offsets of concurrent calls into one log entry.
//
// The broker of a node that takes produce, and of a raft follower or
// candidate (RoleFollower, RoleCandidate), calls it for every consumer
// commit (and offset reset), from the goroutine of that call, after it
// stored the offsets locally, and answers the commit with its error. A
// follower's plugin forwards the offsets to its leader. The consumer's
// commit fails (and is retried by the consumer) when no leader takes it
// (ErrNotLeader), when the commit's outcome is unknown because leadership
// was lost (ErrUnavailable), or when ctx ends first.
// With it the broker does not report offsets through ReplicateOffsets.
//
// generation is the group's generation the consumer's commit carried (0:
// none; docs/admin.md, "Group generations"). A follower's plugin forwards
// it with the offsets, and the leader's hands the forwarded commit to its
// core (CommitForwarder), which checks it, and the group's gate, as for a
// commit made on the leader.
//
// Over gRPC the SDK announces the capability in the plugin's status
// (waits_offsets) and sends the call as ReplicateOffsets with
// CommitOffsetsRequest.wait set. An error wrapping errors.ErrUnsupported
// (a plugin that did not announce it) has the broker fall back to
// ReplicateOffsets.
type OffsetCommitter interface {
	CommitOffsets(ctx context.Context, group string, generation uint64, offsets []*GroupOffset) error
}

// CommitForwarder is an optional interface of a ReplicaCore (the broker
// has it, and so does the SDK's client of the core in a plugin process):
// it takes a consumer commit that a raft follower forwarded to this node,
// the leader, as a commit of a client of this node. The broker checks it
// as it checks its own clients' commits (the group's gate, so that it is
// ordered with a deletion of the group; the commit's generation, so that
// one sent before a deletion is refused with ErrStaleGeneration; an
// ephemeral group deleted), stores it, and commits it through the plugin's
// log (OffsetCommitter) before it returns. On a node that does not take
// produce it returns ErrNotLeader and never forwards the commit again.
// An error wrapping errors.ErrUnsupported says the core cannot: the plugin
// then commits the offsets through its log itself, unchecked.
type CommitForwarder interface {
	CommitForwarded(ctx context.Context, req *CommitOffsetsRequest) error
}

// ApplyWait waits for an Apply and returns the offsets the store assigned.
type ApplyWait func(ctx context.Context) ([]int64, error)

// ReplicationMode is an optional interface of a Replication: how the broker
// uses it. Without it, ModeApplyFirst. Mode returns "" when it is not known
// (yet); the broker then refuses produce rather than guess.
type ReplicationMode interface {
	Mode() string
}

// Replication modes.
const (
	// ModeApplyFirst: the master stores a batch, then replicates it
	// (master–slave, RocketMQ's HA): the batch is handed to Replicate once
	// the store made it durable as its flush policy demands.
	ModeApplyFirst = "apply_first"
	// ModeApplyWritten is ModeApplyFirst, except that the batch is handed
	// to Replicate as soon as the store has written it (a store with
	// EarlyOffsets), so that the master's flush and the replication run at
	// the same time (RocketMQ's SYNC_MASTER + SYNC_FLUSH). The producer is
	// still answered only once both are done. The price: after an OS crash
	// a replica may hold messages its master lost (never answered OK).
	ModeApplyWritten = "apply_written"
	// ModeReplicateFirst: the leader replicates a batch, and every node
	// stores it once committed, through ReplicaCore.Apply (raft).
	ModeReplicateFirst = "replicate_first"
)
