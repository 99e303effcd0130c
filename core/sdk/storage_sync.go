package sdk

import "context"

// Appends durable elsewhere (DLedger's idea): a raft node's store holds the
// entries its raft log committed, and that log was fsynced by a quorum
// before the entries were applied, so the store's own fsync is not needed
// for the entries to survive: what a crash makes the store lose, the
// replication plugin applies again from its log. The plugin marks such an
// apply (WithLogDurable on the context of ReplicaCore.Apply), the broker
// marks the storage append the same way (on the context of Storage.Append),
// and a store that implements Syncer may answer it once it is written,
// without an fsync of its own.

type logDurableKey struct{}

// WithLogDurable marks ctx's Apply or Append as durable elsewhere already:
// the entries of a consensus log a quorum fsynced.
func WithLogDurable(ctx context.Context) context.Context {
	return context.WithValue(ctx, logDurableKey{}, true)
}

// LogDurable says whether ctx's Apply or Append was marked WithLogDurable.
func LogDurable(ctx context.Context) bool {
	v, _ := ctx.Value(logDurableKey{}).(bool)
	return v
}

// Syncer is an optional capability of a Storage: taking appends marked
// LogDurable without fsyncing them, and making them durable on request.
//
//   - An Append whose context is LogDurable may be answered once it is
//     written (readable from then on) instead of once it is as durable as the
//     flush policy demands; the store makes it durable later (its own flush
//     interval, the next fsync it does for another append, or Sync).
//   - After a crash (of the machine, not only the process) the store holds a
//     prefix of what it was sent, in append order across all its queues (a
//     single commit log), so that the plugin knows from the last message it
//     holds which entries to apply again.
//   - Sync returns once every batch appended before the call is durable. It
//     is called concurrently with appends, rarely (raft snapshots).
//
// A store without Syncer ignores LogDurable and fsyncs as its policy says.
type Syncer interface {
	Sync(ctx context.Context) error
}

// StoreSyncer is an optional capability of a ReplicaCore (the broker has it):
// SyncStore returns once every message applied before the call is durable
// in the local store. The raft plugin calls it before a snapshot lets its
// log drop entries applied LogDurable. On a store without Syncer it returns
// at once (such a store fsynced every append before answering it).
type StoreSyncer interface {
	SyncStore(ctx context.Context) error
}
