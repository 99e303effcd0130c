package client

import (
	"hash/fnv"
	"sync/atomic"
)

// QueueSelector picks the queue of a message among a topic's queues. It is
// called once per message, before its first send attempt (a retry keeps the
// queue, so that the broker can de-duplicate it), from the goroutines that
// send: concurrently.
type QueueSelector interface {
	// Select returns a queue in [0, queues); queues is at least 1.
	Select(m *Message, queues int32) int32
}

// RoundRobin spreads messages over the queues in turn. It is the default.
// A message with an ID goes to the queue its ID hashes to, so that sending
// it again reaches the queue that de-duplicates it.
func RoundRobin() QueueSelector { return &roundRobin{} }

type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) Select(m *Message, queues int32) int32 {
	if m.ID != "" {
		return hashQueue(m.ID, queues)
	}
	return int32((r.next.Add(1) - 1) % uint64(queues))
}

// hashQueue is FNV-1a of s modulo queues.
func hashQueue(s string, queues int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return int32(h.Sum32() % uint32(queues))
}

// KeyHash sends every message with the same key to the same queue (FNV-1a of
// the key), so that a consumer sees them in the order they were sent, as long
// as the topic's queue count does not change. Messages without a key are
// spread round robin (by their ID when they have one, as RoundRobin does).
func KeyHash() QueueSelector { return &keyHash{} }

type keyHash struct{ rr roundRobin }

func (k *keyHash) Select(m *Message, queues int32) int32 {
	if m.Key == "" {
		return k.rr.Select(m, queues)
	}
	return hashQueue(m.Key, queues)
}
