// Package masterslave is Ferry's master–slave replication, RocketMQ's HA
// model: the built-in replication plugins `async` and `sync`.
//
// # Apply, then replicate
//
// The master's broker stores each batch as usual and hands the stored
// messages to this plugin's Replicate, in offset order, once the store
// answered (flushed as the flush policy demands). With
// `replicate_before_flush: true` (mode sdk.ModeApplyWritten) and a store that
// tells offsets once a batch is written (sdk.EarlyOffsets: the file and
// memory stores), the batch is handed over then, before the master's fsync,
// which runs alongside the replication, as RocketMQ's SYNC_MASTER +
// SYNC_FLUSH submits the flush and the HA request together. Either way the
// producer is answered once both the flush and the replication are done, with
// the weaker status: a batch whose flush fails (an error or FLUSH_TIMEOUT) is
// never answered OK, whatever the slaves confirmed. The overlap is off by
// default: it gained nothing measurable here (an fdatasync costs ~0.13 ms on
// this machine against ~1 ms for the trip through the slave's processes), and
// it lets an OS crash of the master leave a slave holding messages the master
// lost (see Safety); it pays off where fsyncs are slow.
//
//   - async answers OK at once; the messages reach the slaves in the
//     background. A master that dies loses what its slaves did not have yet
//     (the negative control of the fault tests).
//   - sync answers OK only once `min_replicas` slaves confirmed the batch —
//     a slave confirms after its own store made it durable, at the slave's
//     flush level. When `timeout` passes first, the answer is
//     REPLICA_TIMEOUT, or REPLICA_NOT_AVAILABLE when fewer than
//     `min_replicas` slaves are connected (answered at once then). Never OK.
//
// # The link
//
// Every node runs the plugin with its own TCP listener (`listen`) and knows
// the others' (`peers`). A slave asks its peers who the master is (the
// highest promotion epoch wins), opens ReplicaLink.Follow on it and reports
// where each of its queues ends. The master streams from there: recent
// messages from an in-memory tail of the log, older ones read back from its
// storage through the core (catch-up after a restart or a long absence).
// The slave applies each batch through its broker core, which appends it to
// the slave's store and checks that the store assigns the master's offsets,
// then acknowledges its new queue ends. Both sides send heartbeats every
// 500 ms and drop a link silent for 3 s (a paused or cut peer).
//
// # Safety
//
//   - A slave whose reported end offset of any queue lies beyond the
//     master's log (it holds messages the master does not: a former master,
//     or a slave of a master that lost data) is refused and disconnected,
//     listed as diverged in `ferry cluster status`, and never counts toward
//     an ack. So is a slave that acknowledges more than it was sent. Its data
//     must be removed by an operator before it can follow again (RocketMQ
//     issues #1155, #3015).
//   - An offset assigned by a slave's store that differs from the master's
//     fails the apply and breaks the link; the slave reconnects and reports
//     its ends again.
//   - With `replicate_before_flush: true` the master replicates a batch
//     before its own fsync, so a slave may hold messages its master lost in an OS crash or power failure
//     (written on the master, in its page cache, not yet fsynced when the
//     machine died). No producer was answered OK for them: the master
//     answers only after its fsync. But when that master comes back, the
//     slave's log reaches beyond the master's, and the rule above refuses
//     the slave as diverged; an operator must remove its data (or promote it
//     instead, before the old master takes produce again). A process kill
//     (kill -9 of the master's broker or its storage plugin) does not cause
//     this: what the master's store told early is in the page cache, which
//     outlives the process, and is found again on restart (a restarted
//     storage plugin gets the unanswered batches again and de-duplicates
//     them at the same offsets; the broker does not replicate them twice).
//
// # Roles and promotion
//
// A node's role starts as `node.role` of its pipeline (master or slave) and
// is overridden by the role persisted in `<data_dir>/replication-<type>/
// state.json` once a promotion happened. `ferry cluster promote
// SLAVE.yaml` (or `--node ADDR`, the slave's replication `listen` address)
// promotes a slave:
//
//  1. only a slave is promoted;
//  2. refused while a master is reachable (the slave's link to it is up, or
//     a peer answers as master) — unless --force, which risks two masters;
//  3. with sync replication, refused while the slave is behind the last end
//     offsets it heard from its master (an acked message could be missing)
//     — unless --force; with async, allowed, and the answer says how many
//     messages the slave was known to lack;
//  4. the new master's epoch is one more than any it has seen; it is
//     persisted, so the node stays master across restarts.
//
// A master checks its peers every 2 s: when one is master with a higher
// epoch, it steps down and follows it; if it holds messages the new master
// lacks it is refused as diverged (above). Producers find the master through
// routing metadata: a slave names its master as the leader of every queue.
//
// # Consumer offsets
//
// Consumer groups' committed offsets follow the log, as RocketMQ's slaves
// sync them from their master, so that a group reading from a slave while
// the master is down, or from a promoted slave, resumes about where it
// committed on the master instead of from its start:
//
//   - The master's broker reports every commit it stored to this plugin
//     (sdk.OffsetReplication), best effort: the consumer's commit has
//     succeeded already; a failed report is logged and retried.
//   - The master keeps each group's latest offset per queue in memory and
//     sends, on the Follow stream, every group it knows when a slave
//     connects, then whatever was committed since, with the next frame of
//     messages or alone (coalesced: only the latest offset of a queue).
//   - The slave stores them through its broker (ReplicaCore.CommitOffsets),
//     clamped to the end of its own log: a slave that lacks the messages
//     (async, or still catching up) stores its end and moves on as the
//     messages arrive. An offset beyond its log could, after a promotion,
//     skip the new messages stored at those offsets.
//   - A group deleted on the master (`ferry group delete`,
//     sdk.GroupDeleteReplication, groups.go) is shipped the same way: its
//     offsets are dropped, the deletion kept on disk with a unique id
//     (GroupDeletionsFile) and sent with the next frame (and every kept
//     deletion when a slave connects, after a master restart too), and the
//     slave deletes the group's offsets before it stores the frame's. A
//     slave makes each deletion id once.
//
// While linked, the master's offsets rule: a slave stores what the master
// sends even when it had a higher offset (committed by consumers that read
// from it while the master was down, say), and a group rewound on the master
// is rewound on its slaves. An offset only moves back that way, which means
// redelivery, never a skipped message: at-least-once holds. "Highest wins"
// would keep a rewind from ever reaching a slave, and a failover would then
// skip what the group meant to read again.
//
// # Topics
//
// Topic metadata follows the master too (sdk.TopicReplication, topics.go).
// Runtime topic changes are made on the master (a slave's broker refuses
// them, naming its master). The master's broker hands this plugin its
// whole topic set after each change: before it serves a created topic or
// added queues, after it deleted a topic. A Follow stream opens with the
// master's set and carries each newer one with its next frame, picked in
// the same critical section as the frame's messages, so a slave never gets
// a message of a topic or queue before the set that holds it. The slave
// applies a set (ReplicaCore.ApplyTopics: create, grow, delete; durable in
// its topics.json) once the applies started before it are done and before
// the frame's own. A slave's queues of a topic the master no longer holds
// are not taken for divergence when it connects: the opening set deletes
// them. A slave confirms each set it applied (FollowRequest.topics_applied,
// the version the master sent with it). Async, shipping does not wait for
// the slaves: a topic created while no slave is linked reaches it when it
// links. Sync, ReplicateTopics returns once min_replicas slaves confirmed
// the set, and fails after the timeout (sdk.ErrReplicaTimeout), or at once
// with fewer slaves linked (sdk.ErrReplicaNotAvailable); the broker makes
// the change on the master anyway and answers that it is not confirmed. A
// message of a topic is answered OK only once a slave stored it, which it
// can only after it got the set.
//
// Limits. The master knows only the groups its broker reported since the
// broker process started (a replication plugin that restarts gets them all
// again from its broker); after a master restart, a group committed before
// it is sent again only once it commits again — its slaves keep what they
// stored until then. A promoted slave knows the groups its old master sent
// and ships those, at the offsets it stored, to its own slaves. Commits made on a slave are not sent to
// the master: a group that moves back to the master resumes from the
// master's offsets, and may see again what it processed on the slave.
package masterslave
