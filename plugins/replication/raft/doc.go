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
// The log and stable store is one bbolt file (logstore.go), every write a
// fsynced transaction. The node's Ferry store is the state machine, so:
//
//   - snapshots are minimal: the end offset of every queue. raft restores no
//     snapshot at start (NoSnapshotRestoreOnStart): the store already holds
//     what was applied.
//   - every applied message carries its entry's raft index in the header
//     `ferry-raft-index`, so the store itself records how far the log was
//     applied: at start the plugin reads the last message of every queue and
//     skips entries up to the highest index found (or up to the index in the
//     `applied` file, written after each batch, if that is higher) when raft
//     replays its log. The store's de-duplication by message id covers the
//     rest.
//   - raft keeps 1<<20 entries after a snapshot, so a follower that was away
//     catches up from the log. A follower so far behind that the leader must
//     send it a snapshot gets no messages from it: Restore logs the gap. A
//     data-carrying snapshot (or a catch-up read from the leader's broker) is
//     future work.
//
// Use `flush: sync` storage: a store that loses acknowledged appends in a
// crash would leave its node behind entries raft considers applied.
//
// Nodes with no raft state bootstrap the group from `peers` (every node the
// same list: hashicorp/raft allows that). Membership changes are not
// supported yet.
package raft
