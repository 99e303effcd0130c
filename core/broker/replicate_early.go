package broker

import (
	"context"
	"fmt"
	"slices"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Overlapping the flush with the replication (sdk.EarlyOffsets).
//
// When the store tells a batch's offsets as soon as it is written and the
// node replicates "apply, then replicate" (master–slave) while taking
// produce, the appender asks for them (AppendEarly) and hands them to the
// replicator (written) before the flush is done: the batch goes to the
// replication plugin at once, still in seq order (early and final entries
// share the replicator's ready table), so the slaves' fsync runs alongside
// the master's, as RocketMQ's SYNC_MASTER + SYNC_FLUSH does. The producers are
// answered once both are done (earlyState), with worse(flush status,
// replication status); a flush that fails answers its error, even when the
// replicas confirmed.
//
// A batch is handed to replication once. When the store process dies before
// the batch is durable, the appender appends it again to the new process (the
// replay, in order); the store de-duplicates by id and gives the offsets the
// batch was written at — a written batch survives a crash of the store's
// process, and the lost suffix of the log is appended again in the same order.
// The offsets of every later attempt (early or final) are compared with the
// ones replicated: a difference fails the batch (it never happens with a store
// that keeps its contract, and it would mean the replicas hold the batch at
// other offsets). Replicating it again is not needed, and would be harmless:
// the master plugin skips offsets it shipped already, a slave's store
// de-duplicates by id.

// earlyState is a batch handed to replication before its flush was done.
type earlyState struct {
	offsets []int64 // handed to replication

	// guarded by replicator.mu
	replDone   bool
	replStatus sdk.Status
	flushDone  bool
	flush      storedBatch
	mismatch   error // a later attempt gave other offsets
	answered   bool
}

// overlaps reports whether batches should be handed to replication as soon as
// the store tells their offsets: the node takes produce and the plugin
// replicates after the store (master–slave). Until the plugin told its mode,
// no.
func (r *replicator) overlaps() bool {
	r.modeMu.Lock()
	m := r.mode
	r.modeMu.Unlock()
	return m == sdk.ModeApplyWritten && sdk.TakesProduce(r.b.role.get().Role)
}

// written is called by the appender's goroutine of a batch (any attempt) when
// the store told its offsets early. The batch is handed over in seq order.
func (r *replicator) written(b *batch, offsets []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := b.early; st != nil {
		// Handed over already (an earlier attempt): the offsets must
		// not have moved.
		if !slices.Equal(st.offsets, offsets) && st.mismatch == nil {
			st.mismatch = r.offsetsMoved(st.offsets, offsets)
		}
		return
	}
	if b.seq < r.next {
		return // answered through the final path already (a stale attempt)
	}
	if sb, ok := r.ready[b.seq]; ok && !sb.early {
		return // the final answer is there already: it rules
	}
	r.ready[b.seq] = storedBatch{b: b, offsets: offsets, early: true}
	r.drain()
}

// offsetsMoved is the error of a batch whose offsets changed after it was
// handed to replication.
func (r *replicator) offsetsMoved(told, now []int64) error {
	err := fmt.Errorf("%w: the store gave a batch offsets %v after telling %v, which were replicated", sdk.ErrCorrupt, now, told)
	r.b.log.Error("storage plugin moved the offsets of a replicated batch: replicas may hold it at other offsets", "error", err)
	return err
}

// handOverEarly replicates a batch whose flush is still running. Called with
// r.mu held, in seq order.
func (r *replicator) handOverEarly(sb storedBatch) {
	st := &earlyState{offsets: sb.offsets}
	sb.b.early = st
	if !sdk.TakesProduce(r.b.role.get().Role) {
		st.replDone, st.replStatus = true, ferryv1.Status_STATUS_OK // nothing to replicate: the flush tells
		return
	}
	msgs := replicatedMessages(sb)
	if len(msgs) == 0 {
		st.replDone, st.replStatus = true, ferryv1.Status_STATUS_OK
		return
	}
	impl, gen, _ := r.src.Current()
	if impl == nil {
		r.b.log.Warn("replication plugin is restarting: batch not replicated", "messages", len(msgs))
		st.replDone, st.replStatus = true, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), replicateTimeout)
	ctx = sb.b.traceContext(ctx, true)
	wait, err := impl.(sdk.Replication).Replicate(ctx, msgs)
	if err != nil {
		cancel()
		st.replDone, st.replStatus = true, r.replicationStatus(gen, 0, err)
		return // answered once the flush is done (stored)
	}
	go func() {
		defer cancel()
		s, _, err := wait(ctx)
		s = r.replicationStatus(gen, s, err)
		r.mu.Lock()
		st.replDone, st.replStatus = true, s
		r.answerEarly(sb.b, st)
		r.mu.Unlock()
	}()
}

// flushed records the flush outcome of a batch handed over early. Called
// with r.mu held.
func (r *replicator) flushed(b *batch, st *earlyState, offsets []int64, status sdk.Status, err error) {
	if err == nil && !slices.Equal(st.offsets, offsets) && st.mismatch == nil {
		st.mismatch = r.offsetsMoved(st.offsets, offsets)
	}
	st.flushDone, st.flush = true, storedBatch{b: b, offsets: offsets, status: status, err: err}
	r.answerEarly(b, st)
}

// answerEarly answers a batch's producers once both its flush and its
// replication are done. Called with r.mu held; deliver does not block.
func (r *replicator) answerEarly(b *batch, st *earlyState) {
	if !st.flushDone || !st.replDone || st.answered {
		return
	}
	st.answered = true
	switch {
	case st.flush.err != nil:
		deliver(b, nil, 0, st.flush.err) // never OK, whatever the replicas said
	case st.mismatch != nil:
		deliver(b, nil, 0, st.mismatch)
	default:
		deliver(b, st.flush.offsets, worse(st.flush.status, st.replStatus), nil)
	}
}

// replicatedMessages are the producers' messages of a batch, with their
// offsets set: what the replication plugin gets.
func replicatedMessages(sb storedBatch) []*sdk.Message {
	var msgs []*sdk.Message
	i := 0
	for _, req := range sb.b.reqs {
		for _, m := range req.msgs {
			if !req.apply {
				m.Offset = sb.offsets[i]
				msgs = append(msgs, m)
			}
			i++
		}
	}
	return msgs
}
