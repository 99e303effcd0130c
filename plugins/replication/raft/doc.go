// Package raft is Ferry's raft replication plugin (type `raft`), built on
// hashicorp/raft: quorum commit, automatic leader election and failover,
// RocketMQ's DLedger idea.
//
// # Replicate, then apply
//
// The leader's broker hands each produce batch to Replicate, which
// raft.Apply()s it (the messages, protobuf-encoded, are the entry). Once a
// majority holds the entry in its raft log, every node's FSM — the leader's
// included — appends the batch to the node's own store through the broker
// core (sdk.ReplicaCore.Apply). Entries are applied in log order, so every
// store assigns the same offsets. The leader's producer is answered with the
// offsets its own store assigned, only then.
//
// The FSM is pipelined (pipeline.go): ApplyBatch starts the appends of
// the entries raft hands it, in log order, and returns; a completer
// goroutine waits for them in order and answers the leader's Replicate.
// So the next batch's appends start while the previous batch's store
// flush runs (at most two batches in flight). A failed append is started
// again, with every append after it, in log order, before anything new
// starts: the store never holds a later entry before an earlier one.
// Topic and members entries, snapshots and restores drain the pipeline
// first.
//
// A node that is not the leader rejects Replicate with sdk.ErrNotLeader
// (nothing stored). A leader deposed while a batch waits answers an error —
// raft.ErrLeadershipLost becomes sdk.ErrUnavailable, "outcome unknown": the
// entry may still commit under the next leader, and a retry with the same
// message id is de-duplicated by the store — never OK. A frozen leader that
// wakes up still believing it leads cannot commit anything (no quorum in its
// term) and answers errors until it learns the new term.
//
// The plugin polls raft every 20 ms and tells the broker its role (leader,
// follower, candidate) and the leader's broker address (from `peers`), which
// the broker's routing metadata names so that clients follow the leader.
//
// # Storage of raft itself
//
// raft's log and stable store (term, vote) is hashicorp/raft-wal, the WAL
// Consul uses with hashicorp/raft, in `<data_dir>/replication-raft/wal`
// (logstore.go): segment files (64 MiB, preallocated) with one write and one
// fsync per write of entries, on the leader before it sends them and on a
// follower before it acknowledges them, so on every commit's path; term,
// vote and the list of segments are in a small bbolt file, written only
// when they change. The WAL takes no gaps (raft.MonotonicLogStore): after
// installing a snapshot, raft deletes the whole log and appends after the
// snapshot's index. Compaction drops whole segments, and raft-wal would
// still serve compacted entries of its last one: the plugin answers
// "not found" below the first index, so a follower behind the compaction
// gets the snapshot, as from any raft log store. Its logs go to the
// plugin's logger (module raft.wal); its metrics are not collected. It
// must be v0.4.1 or later: v0.4.0 could not reopen a log after raft
// deleted a conflicting suffix (hashicorp/raft-wal#31). A write torn by
// a crash is cut off at open. Earlier data dirs (a bbolt raft.db, or the
// hand-written segment log in `log`) were never released: a node refuses
// to start on one rather than start raft from an empty log and term;
// nothing migrates them. The node's Ferry store is the state machine, so:
//
//   - snapshots are minimal: the index of the last entry applied, the
//     end offset of every queue and consumer groups' offsets (below).
//     raft restores no snapshot at start (NoSnapshotRestoreOnStart): the
//     store already holds what was applied.
//   - every applied message carries its entry's raft index in the header
//     `ferry-raft-index`, so the store itself records how far the log was
//     applied: at start the plugin reads the last message of every queue and
//     skips entries up to the highest index found (or up to the index in the
//     `applied` file, written after each batch, if that is higher) when raft
//     replays its log. The store's de-duplication by message id covers the
//     rest. The file is written before the batch is answered only when the
//     batch's last applied entry holds no messages (offsets, no-op); when
//     it does, the store records the index already and the file is written
//     in the background, off the commit's path.
//     That is with `store_fsync: true`. By default (the store takes
//     committed entries without its own fsync: sdk.WithLogDurable on the
//     apply, sdk.Syncer in the store) the store may lose its unsynced tail
//     in a power loss, so the skip stops one entry earlier: the entry of
//     the store's last message is applied again (its stored part
//     de-duplicated), and every later one, from the raft log. The
//     `applied` file is written only after the store was synced
//     (ReplicaCore sync_store): at snapshots, which let raft compact its
//     log, and after topic, membership and group-deletion entries, a
//     Restore or a resume (docs/replication.md, "One fsync per message on
//     raft").
//   - raft keeps `trailing_logs` entries after a snapshot (default 1<<20;
//     `snapshot_threshold` and `snapshot_interval` say when it snapshots),
//     so a follower that was away mostly catches up from the log.
//
// # Catch-up after a snapshot
//
// A follower so far behind that the leader must send it a snapshot (the
// entries it lacks were compacted away) gets no messages from the snapshot
// itself. Its Restore (catchup.go), which raft runs on the FSM goroutine
// before it applies any later entry, compares the store's ends with the
// snapshot's and fetches every missing message, exactly up to the
// snapshot's ends, from a peer's store: ReplicaLink.Follow on the peers'
// `admin` listeners, the leader as this node knows it first, then the
// others. Any node can serve, leader or not, since every store holds only
// committed entries in log order; a node whose store has not reached the
// snapshot's ends serves what it has and the next is asked. Messages keep
// their ids, keys, headers (`ferry-raft-index` included) and timestamps, and
// the plugin checks that the store assigns each the peer's offset (the
// broker does not in replicate_first mode): a mismatch fails Restore with
// "logs diverged". The snapshot's index then becomes the applied index.
// When no peer made progress for 20 s, Restore returns an error: raft does
// not take the snapshot as applied and the leader sends it again; the node
// never claims to be caught up. Later entries come through the raft log.
//
// Because raft takes the latest snapshot's index as applied at start, a
// node killed during a Restore would keep its gap: at start, before raft
// runs, the plugin compares the store with its latest snapshot and fetches
// what is missing first, for as long as it takes.
//
// So `admin` (and every peer's `admin`) is required in a group of more than
// one node. The status detail counts snapshots restored, messages fetched
// and catch-ups served.
//
// # Consumer offsets
//
// Consumer groups' committed offsets go through the log too
// (sdk.OffsetReplication, offsets.go), so that after a failover a group
// reading from the new leader, or from any follower, resumes about where it
// committed instead of from wherever that node had offsets (usually
// nowhere):
//
//   - The leader's broker hands every commit it stored to CommitOffsets
//     (sdk.OffsetCommitter, commit.go) and answers the consumer once it
//     returned: once the entry is committed (on a quorum) and applied
//     here, so an acknowledged commit survives the leader. Calls waiting
//     at once share one entry (group commit: one entry in flight, the next
//     carries every group's offsets that came meanwhile, latest per queue;
//     several groups make an entry of kind 4, a ferryv1.OffsetCommits). On
//     any other node, or when leadership is lost before the entry is
//     confirmed, it returns an error (ErrNotLeader, ErrUnavailable) and the
//     consumer's commit fails; the consumer commits again.
//   - ReplicateOffsets (the best-effort report a broker without
//     OffsetCommitter support sends) raft.Apply()s the offsets and returns
//     without waiting; on any other node it does nothing and returns nil.
//   - Every node's FSM, the leader's included, applies the entry in log
//     order: it stores the offsets through ReplicaCore.CommitOffsets,
//     clamped to the end of each queue in the node's store (log order puts
//     the messages a consumer read before its commit, so the clamp only
//     bites on a store that lost messages; an offset beyond the log would
//     skip the messages stored there later). A queue this node's broker
//     refuses is logged and skipped.
//   - The leader stored the commit already when it hands it over. Applying
//     the entry stores it again, and an entry applied after a newer local
//     commit moves the group back until the newer commit's entry is
//     applied: at most redelivery, never a skipped message (at-least-once
//     holds).
//   - Consumers reading from a follower commit there: the follower's
//     broker stores the offsets and calls CommitOffsets, which forwards
//     them to the leader's admin listener (ReplicaLink.CommitOffsets,
//     forward.go) and returns the leader's answer, so such a commit too is
//     acknowledged only once committed through the log. While no leader
//     answers it tries again every 100 ms until ctx ends. The leader never
//     forwards a forwarded commit again. The forward carries the commit's
//     group generation, and the leader hands it to its core
//     (sdk.CommitForwarder), which takes it as a commit of its own
//     clients: the group's gate orders it with a deletion made on the
//     leader, and a commit of a generation older than the group's (sent
//     before the deletion) is refused with STALE_GENERATION.
//   - `ferry group delete` on the leader is an entry of its own kind
//     (groups.go, sdk.GroupDeleteReplication): every node's FSM drops the
//     group from its table and deletes its offsets through
//     ReplicaCore.DeleteGroupOffsets, in log order. Snapshots name the
//     groups deleted, and a Restore deletes those before it stores the
//     snapshot's table.
//
// The kind of an entry: a message batch is, as before, the protobuf
// encoding of an ApplyRequest with no prefix; an offsets entry is the byte
// 0x00, a kind byte (1), then a protobuf CommitOffsetsRequest. A protobuf
// encoding never starts with 0x00 (its first byte is a field tag, and field
// number 0 is invalid), so existing logs decode unchanged and an offsets
// entry can never be taken for a batch: a node of an older version fails
// the entry (nothing stored) rather than storing garbage. A wrapper message
// for every entry would have changed the encoding of batches, and old logs
// would need a fallback anyway.
//
// The FSM keeps the latest offset of every group and queue the log
// committed (its table) and writes it into every snapshot (`offsets`,
// absent from older snapshots, which read as having none). Restore stores
// the snapshot's offsets after the catch-up: the entries that committed them
// may be compacted away. At start the table is rebuilt from the latest
// snapshot plus the entries raft replays after it; entries up to the
// applied index only update the table, since the store kept what they
// committed, and a snapshot beyond the applied index (a Restore killed
// before it stored the offsets) has its offsets stored then. The store's own
// committed offsets are not read back: they include commits made to this
// node alone, which are not the log's, and the store cannot list its groups.
//
// # Topics
//
// Topic metadata goes through the log as well (sdk.TopicReplication,
// topics.go), so that every node knows the same topics. The leader's broker
// checks a create, alter or delete against its own topics and hands it to
// ReplicateTopics, which appends an entry of kind 2 (0x00, 2, a protobuf
// TopicChange) and waits until the leader's FSM applied it; the admin call
// is answered with that apply's outcome. Every node applies the entry in
// log order through ReplicaCore.ApplyTopics, which writes the node's
// topics.json before it returns. The FSM treats it as a barrier: the
// appends of the entries before it are stored first, and no later entry's
// append starts before it is applied, so a batch of a topic just created
// finds the topic on every node. The applied index is written after it
// (it is not recorded in the store), and ApplyTopics is idempotent, so an
// entry applied again after a kill does no harm.
//
// Snapshots list the node's topics (`topics`, from ReplicaCore.NodeInfo;
// absent from older snapshots, which change no topic). A follower that
// restores one applies them as a set (creating, growing, deleting) before it
// fetches the messages the snapshot's ends name; at start, a snapshot
// beyond the applied index (a Restore killed midway) has its topics applied
// again, while one the node applied past says nothing of its topics now.
// The catch-up skips topics the node does not hold (deleted after the
// snapshot). The pipeline's topics stay each node's baseline: a replicated
// delete of a topic a node declares is not applied there, and logged as a
// conflict (see docs/admin.md).
//
// Use `flush: sync` storage: a store that loses acknowledged appends in a
// crash would leave its node behind entries raft considers applied.
//
// Nodes with no raft state bootstrap the group from `peers` (every node the
// same list: hashicorp/raft allows that), unless `join` is set.
//
// # Membership
//
// `ferry cluster add-node` / `remove-node` call ReplicaLink.ChangeMembers
// on the leader's admin listener (members.go): an add commits the new
// node's broker and admin addresses as an entry of kind 3 (0x00, 3, JSON),
// then AddNonvoter, then AddVoter once the node applied the leader's last
// index; a remove is RemoveServer. The addresses are kept in members.json
// and in snapshots; peers are looked up in the pipeline first. Where the
// pipeline's peers and the live configuration disagree, the node reports it
// (Status, its log) and changes nothing.
package raft
