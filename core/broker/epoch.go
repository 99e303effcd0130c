package broker

import (
	"crypto/rand"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/ferrymq/ferry/core/sdk"
)

// epochs names this broker process's log and remembers, per queue, where
// this epoch's appends began (QueueOffsets.epoch, epoch_start).
//
// Why: a store under flush async that loses power comes back with a shorter
// log than the offsets it handed out, and gives those offsets to new
// messages. A consumer whose position (or commit) predates the restart and
// lies past the new end would otherwise be moved to the end it sees when it
// notices, and skip every message appended since (ferry verify found it).
// With the epoch, the consumer moves back to where this epoch's appends
// began; and a commit from an earlier epoch past that point is answered as
// that point. Kafka solves the same with leader epochs (KIP-101, KIP-320).
type epochs struct {
	id uint64

	mu sync.Mutex
	// first is a queue's end before this epoch's first append to it.
	first map[epochQueue]int64
	// committed marks the group queues committed in this epoch.
	committed map[epochGroupQueue]bool
}

type epochQueue struct {
	topic string
	queue int32
}

type epochGroupQueue struct {
	group string
	q     epochQueue
}

func newEpochs() *epochs {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := binary.LittleEndian.Uint64(b[:]) | 1 // never 0: 0 is "no epoch"
	return &epochs{id: id, first: map[epochQueue]int64{}, committed: map[epochGroupQueue]bool{}}
}

// begin makes sure that every queue msgs go to has its epoch start: the
// queue's end before this epoch's first append to it, read from the store
// (ends) once per queue and epoch, before the append is sent.
func (e *epochs) begin(msgs []*sdk.Message, ends func([]*sdk.QueueRef) ([]*sdk.QueueOffsets, error)) error {
	var missing []*sdk.QueueRef
	e.mu.Lock()
	for _, m := range msgs {
		k := epochQueue{m.Topic, m.Queue}
		if _, ok := e.first[k]; !ok && !slices.ContainsFunc(missing, func(r *sdk.QueueRef) bool { return r.Topic == k.topic && r.Queue == k.queue }) {
			missing = append(missing, &sdk.QueueRef{Topic: k.topic, Queue: k.queue})
		}
	}
	e.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	offs, err := ends(missing)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range offs {
		// Two first appends may race: the lower end is the one from
		// before either.
		k := epochQueue{o.Topic, o.Queue}
		if f, ok := e.first[k]; !ok || o.End < f {
			e.first[k] = o.End
		}
	}
	return nil
}

// commit notes a group's commits in this epoch.
func (e *epochs) commit(group string, offsets []*sdk.GroupOffset) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range offsets {
		e.committed[epochGroupQueue{group, epochQueue{o.Topic, o.Queue}}] = true
	}
}

// stamp returns a copy of o with this epoch and its start filled in; for a
// group's offsets, a commit from an earlier epoch past the start is answered
// as the start.
func (e *epochs) stamp(group string, o *sdk.QueueOffsets) *sdk.QueueOffsets {
	k := epochQueue{o.Topic, o.Queue}
	e.mu.Lock()
	start, ok := e.first[k]
	fresh := e.committed[epochGroupQueue{group, k}]
	e.mu.Unlock()
	if !ok || start > o.End {
		start = o.End
	}
	committed := o.Committed
	if group != "" && committed > start && !fresh {
		committed = start
	}
	return &sdk.QueueOffsets{Topic: o.Topic, Queue: o.Queue, Start: o.Start, End: o.End, Committed: committed, Epoch: e.id, EpochStart: start}
}
