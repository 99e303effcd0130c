package raft

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// The apply pipeline.
//
// raft hands the FSM one batch of committed entries at a time and the next
// only once ApplyBatch returned. Waiting in ApplyBatch for the store's
// flush of a batch would leave the store idle while raft prepares the next
// one, and raft idle while the store flushes. So ApplyBatch starts the
// appends of a run (the entries between barriers) in log order and returns
// at once with a pendingApply per entry; the completer goroutine waits for
// the runs' appends in log order, stores offsets entries at their place,
// moves the applied index and answers the pending entries (the leader's
// Replicate waits on them). The next batch's appends start while the
// previous one's flush runs; at most depth runs are in flight.
//
// The store assigns offsets in the order appends are started, so the order
// of starts is the order of the log, and it must stay so when an append
// fails (its storage plugin died): a failed entry is never appended again
// after an entry that follows it in the log. On a failure (a wait that
// fails, or a start the core refuses) the pipeline is broken: nothing new
// is started, the completer waits out every append started after the
// failed entry, then starts them again from the failed entry on, in log
// order (the store de-duplicates those it holds by message id: a store
// that died holds a prefix of what it was sent), and only then are new
// runs started. Barriers — topic and members entries, Snapshot, Restore —
// drain the pipeline first.

// pipelineDepth is how many runs may be in flight: the one whose flush the
// completer waits for and the next, whose appends are started.
const pipelineDepth = 2

// pendingApply is the response raft hands the leader's Replicate for a
// batch entry: done closes once the entry's append is stored (offsets) or
// failed (err).
type pendingApply struct {
	done    chan struct{}
	offsets []int64
	err     error
}

func (p *pendingApply) resolve(offsets []int64, err error) {
	p.offsets, p.err = offsets, err
	close(p.done)
}

// result waits for the entry's outcome.
func (p *pendingApply) result(ctx context.Context) ([]int64, error) {
	select {
	case <-p.done:
		return p.offsets, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run is the entries of one ApplyBatch between barriers, in log order.
type run struct {
	logs  []*hraft.Log
	waits []sdk.ApplyWait // nil: not started (or to be started again)
	msgs  [][]*sdk.Message
	offs  [][]*ferryv1.CommitOffsetsRequest // an offsets entry's groups
	pend  []*pendingApply
	out   []any // what ApplyBatch returns for each entry

}

var _ hraft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *hraft.Log) any { return f.ApplyBatch([]*hraft.Log{l})[0] }

// ApplyBatch is called by raft on the FSM goroutine with committed entries
// in log order. It starts their appends and returns; the completer answers
// them (a *pendingApply per batch entry). A topic or members change is a
// barrier: the pipeline is drained before it, and it is applied before any
// later entry's append starts.
func (f *fsm) ApplyBatch(logs []*hraft.Log) []any {
	f.completer.Do(func() {
		go f.complete()
		context.AfterFunc(f.ctx, func() {
			f.pmu.Lock()
			f.cond.Broadcast()
			f.pmu.Unlock()
		})
	})
	out := make([]any, 0, len(logs))
	start := 0
	for i, l := range logs {
		switch {
		case isTopics(l):
			out = append(out, f.startRun(logs[start:i])...)
			f.drain()
			out = append(out, f.applyTopicEntry(l))
			start = i + 1
		case isMembers(l):
			out = append(out, f.startRun(logs[start:i])...)
			f.drain()
			out = append(out, f.applyMembersEntry(l))
			start = i + 1
		case isGroupDelete(l):
			// After the commits before it are stored (and recorded),
			// before those after it.
			out = append(out, f.startRun(logs[start:i])...)
			f.drain()
			out = append(out, f.applyGroupDeleteEntry(l))
			start = i + 1
		}
	}
	return append(out, f.startRun(logs[start:])...)
}

// startRun decodes a run's entries, starts their appends in log order and
// queues the run for the completer. It waits while depth runs are in
// flight or a recovery is under way.
func (f *fsm) startRun(logs []*hraft.Log) []any {
	if len(logs) == 0 {
		return nil
	}
	r := &run{logs: logs, waits: make([]sdk.ApplyWait, len(logs)), msgs: make([][]*sdk.Message, len(logs)),
		offs: make([][]*ferryv1.CommitOffsetsRequest, len(logs)), pend: make([]*pendingApply, len(logs)), out: make([]any, len(logs))}
	f.pmu.Lock()
	for (len(f.queue) >= f.depth || f.broken) && f.ctx.Err() == nil {
		f.cond.Wait()
	}
	applied := f.applied
	f.pmu.Unlock()
	for i, l := range logs {
		if l.Type != hraft.LogCommand {
			continue
		}
		kind, payload, err := decodeEntry(l.Data)
		switch {
		case err == nil && kind == kindOffsets:
			// Decoded even when applied already (raft replays the log
			// after a restart): the table is rebuilt from them.
			var req *ferryv1.CommitOffsetsRequest
			if req, err = decodeOffsets(payload); err == nil {
				r.offs[i] = []*ferryv1.CommitOffsetsRequest{req}
			}
		case err == nil && kind == kindOffsetCommits:
			if r.offs[i], err = decodeOffsetCommits(payload); err == nil && r.offs[i] == nil {
				r.offs[i] = []*ferryv1.CommitOffsetsRequest{}
			}
		}
		if l.Index <= applied || r.offs[i] != nil {
			continue
		}
		if err != nil {
			r.out[i] = err
			continue
		}
		var req ferryv1.ApplyRequest
		if err := proto.Unmarshal(payload, &req); err != nil {
			r.out[i] = err
			continue
		}
		for _, m := range req.Messages {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[HeaderRaftIndex] = strconv.FormatUint(l.Index, 10)
		}
		r.msgs[i] = req.Messages
		r.pend[i] = &pendingApply{done: make(chan struct{})}
		r.out[i] = r.pend[i]
	}
	f.startMu.Lock()
	stopped := false
	for i, m := range r.msgs {
		if m == nil || stopped {
			continue
		}
		if f.inPlace {
			r.waits[i] = f.start(m)
			continue
		}
		w, err := f.core.Apply(f.actx, m)
		switch {
		case err == nil:
			r.waits[i] = w
		case permanent(err):
			f.p.log.Error("a committed batch cannot be stored on this node", "topic", m[0].Topic, "error", err)
			r.waits[i] = failed(err)
		default:
			// The core cannot take it now (its storage restarting):
			// nothing later may be started before the entries before it
			// are known to be stored. The completer recovers.
			stopped = true
			f.p.log.Warn("starting a committed entry's append failed; the apply pipeline recovers", "index", r.logs[i].Index, "error", err)
		}
	}
	f.pmu.Lock()
	f.queue = append(f.queue, r)
	if stopped {
		f.broken = true
	}
	f.cond.Broadcast()
	f.pmu.Unlock()
	f.startMu.Unlock()
	return r.out
}

// failed is the wait of an append that failed to start.
func failed(err error) sdk.ApplyWait {
	return func(context.Context) ([]int64, error) { return nil, err }
}

// drain waits until every queued run is completed (or the node stops).
func (f *fsm) drain() {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	for len(f.queue) > 0 && f.ctx.Err() == nil {
		f.cond.Wait()
	}
}

// complete is the completer goroutine: it finishes the queued runs in
// order until the node stops.
func (f *fsm) complete() {
	for {
		f.pmu.Lock()
		for len(f.queue) == 0 {
			if f.ctx.Err() != nil {
				f.pmu.Unlock()
				return
			}
			f.cond.Wait()
		}
		r := f.queue[0]
		f.pmu.Unlock()
		f.finishRun(r)
		f.pmu.Lock()
		f.queue = f.queue[1:]
		f.cond.Broadcast()
		f.pmu.Unlock()
	}
}

// finishRun waits for each append of a run in log order, answers it, and
// applies each offsets entry at its place (after the appends before it are
// stored). The applied index moves only past entries that are stored: one
// that failed (the node stopping) is applied again after a restart.
func (f *fsm) finishRun(r *run) {
	f.pmu.Lock()
	applied := f.applied
	f.pmu.Unlock()
	upTo, broke := applied, false
	var stored uint64 // the last entry whose messages the store holds
	for i := range r.logs {
		var err error
		switch {
		case r.msgs[i] != nil:
			var offs []int64
			offs, err = f.await(r, i)
			r.pend[i].resolve(offs, err)
			if err == nil && !broke {
				stored = r.logs[i].Index
			}
		case r.offs[i] != nil:
			for _, g := range r.offs[i] {
				f.offs.record(g)
				if r.logs[i].Index > applied && !broke && err == nil {
					err = f.commitOffsets(g.Group, g.Offsets)
				}
			}
		default:
			err, _ = r.out[i].(error)
		}
		if err != nil {
			broke = true
		}
		if !broke {
			upTo = max(upTo, r.logs[i].Index)
		}
	}
	if upTo > applied {
		f.pmu.Lock()
		f.applied = upTo
		f.pmu.Unlock()
		switch {
		case f.lazy && !noReapply:
			// Recorded at the next snapshot or barrier (saveApplied
			// syncs the store): until then a restart applies the
			// entries after the store's last message again.
		case upTo == stored:
			// The store holds upTo's messages with their index: the
			// file may lag behind (storedIndex reads it back).
			f.saveAppliedLater()
		default:
			f.saveApplied()
		}
	}
}

// await waits for entry i's append. A transient failure starts the entry
// again, and every append started after it, in log order (recover), until
// it is stored, fails for good, or the node stops.
func (f *fsm) await(r *run, i int) ([]int64, error) {
	for {
		if r.waits[i] == nil {
			f.recover(r, i)
		}
		w := r.waits[i]
		r.waits[i] = nil // an ApplyWait is called once
		offs, err := w(f.ctx)
		if err == nil {
			return offs, nil
		}
		if f.ctx.Err() != nil || errors.Is(err, sdk.ErrCorrupt) || permanent(err) {
			return nil, err
		}
		f.p.log.Warn("applying a committed entry failed; starting it and every later append again, in log order", "index", r.logs[i].Index, "error", err)
		time.Sleep(50 * time.Millisecond)
		if f.inPlace {
			r.waits[i] = f.start(r.msgs[i])
		}
	}
}

// recover starts entry i of r (the queue's head) and every later batch
// entry of the queued runs again, in log order, once every append started
// after i has answered; no new run starts meanwhile.
func (f *fsm) recover(r *run, i int) {
	f.startMu.Lock()
	defer f.startMu.Unlock()
	f.pmu.Lock()
	f.broken = true
	runs := append([]*run(nil), f.queue...)
	f.pmu.Unlock()
	if len(runs) == 0 || runs[0] != r {
		panic(fmt.Sprintf("raft apply pipeline: recovering a run that is not the queue's head (%d runs)", len(runs)))
	}
	from := func(each func(rr *run, j int)) {
		for j := i; j < len(r.logs); j++ {
			each(r, j)
		}
		for _, rr := range runs[1:] {
			for j := range rr.logs {
				each(rr, j)
			}
		}
	}
	// Wait out what was started after i: the store answers each.
	from(func(rr *run, j int) {
		if w := rr.waits[j]; w != nil && (rr != r || j > i) {
			_, _ = w(f.ctx)
			rr.waits[j] = nil
		}
	})
	// Start them again, in log order.
	from(func(rr *run, j int) {
		if rr.msgs[j] != nil {
			rr.waits[j] = f.start(rr.msgs[j])
		}
	})
	f.pmu.Lock()
	f.broken = false
	f.cond.Broadcast()
	f.pmu.Unlock()
}
