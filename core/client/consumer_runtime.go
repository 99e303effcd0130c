package client

import (
	"github.com/ferrymq/ferry/core/telemetry"

	"go.opentelemetry.io/otel/trace"

	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// queueRef names one queue of one topic.
type queueRef struct {
	topic string
	queue int32
}

// lane is the consumer's state on one queue it owns (of its topic or of the
// group's retry topic). All fields are guarded by runtime.mu.
type lane struct {
	ref   queueRef
	retry bool // a queue of the group's retry topic

	next      int64       // offset of the next message to fetch
	epoch     uint64      // the broker log epoch next was last checked in (QueueOffsets.epoch); 0: none yet
	window    []*Delivery // fetched and not yet committed past, in offset order
	commitTo  int64       // the lowest unsettled offset, or next: what may be committed
	committed int64       // what the broker holds for the group; -1 when nothing
	unsettled int         // deliveries of window neither settled nor abandoned
	revoked   bool        // the queue went to another member: fetch no more
	corrupt   error       // stopped at a damaged record (CorruptStop): fetch no more

	// Orderly mode: deliveries waiting for the lane's one processing
	// goroutine, and whether the lane is queued for or held by a worker.
	queued []*Delivery
	busy   bool
}

func (l *lane) advance() {
	for len(l.window) > 0 && l.window[0].done {
		l.window[0] = nil
		l.window = l.window[1:]
	}
	if len(l.window) > 0 {
		l.commitTo = l.window[0].Message.Offset
	} else {
		l.commitTo = l.next
	}
}

type outcome int

const (
	outcomeAcked outcome = iota
	outcomeRetried
	outcomeDead
	outcomeReleased
)

// runtime is one run of a Consumer: from Start (or Run, Consume) to its stop.
type runtime struct {
	cn      *Consumer
	c       *Client
	opts    ConsumerOptions
	group   string
	orderly bool
	log     *slog.Logger
	sender  *copySender

	ctx    context.Context // ends when the consumer stops
	cancel context.CancelFunc
	bg     sync.WaitGroup // heartbeat and commit loops
	kick   chan struct{}  // asks the commit loop to commit now

	// generation is the group's generation from the last heartbeat (0
	// until one answers with it, or from a broker that predates it),
	// carried on every commit (CommitOffsetsRequest.generation).
	generation atomic.Uint64

	// set by start, then read-only
	topics []string         // the topic, and the group's retry topic unless unavailable
	counts map[string]int32 // queue count per topic

	mu       sync.Mutex
	lanes    map[queueRef]*lane
	inflight int           // unsettled deliveries
	wake     chan struct{} // closed (and replaced) when capacity or lanes change
	waiting  bool          // someone waits on wake
	fatal    error         // why a background loop gave up

	pullMu        sync.Mutex
	lastRetryPoll time.Time
	// Pull prefetches: after a Fetch returns messages, the next fetch of
	// the topic runs while the application works on them (as push's
	// fetch loop does). ready holds fetched deliveries not yet returned;
	// prefetch is the fetch in flight (under mu), nil when none.
	ready    []*Delivery
	prefetch *prefetchCall

	pushing  bool          // Consume, Run or Launch (not Start): its push loop calls stop
	finished chan struct{} // closed when stop has returned

	// Client.Close gives up on handlers that do not return in time
	// (giveUp): push stops waiting for them, their deliveries are
	// abandoned (not committed, delivered again). handling counts the
	// handler calls running.
	giveUpOnce sync.Once
	givenUp    chan struct{}
	handling   atomic.Int64

	stopOnce sync.Once
	stopErr  error
}

func (cn *Consumer) newRuntime(ctx context.Context, simple bool) *runtime {
	opts := cn.opts
	if simple {
		opts.Concurrency = 1
	}
	rctx, cancel := context.WithCancel(ctx)
	return &runtime{
		cn: cn, c: cn.c, opts: opts, group: cn.Group(),
		orderly: opts.Orderly || simple || opts.Queues != nil,
		log:     cn.c.log, sender: newCopySender(cn.c),
		ctx: rctx, cancel: cancel, kick: make(chan struct{}, 1),
		counts: map[string]int32{}, lanes: map[queueRef]*lane{}, wake: make(chan struct{}),
		finished: make(chan struct{}), givenUp: make(chan struct{}),
	}
}

// giveUp abandons the deliveries that are not settled yet, so that neither
// the final commit nor a handler returning later commits them (the group
// gets them again), and lets push return without waiting for the handlers
// still running. Client.Close calls it when its deadline passed.
func (rt *runtime) giveUp() {
	rt.giveUpOnce.Do(func() {
		rt.cancel()
		rt.mu.Lock()
		for _, l := range rt.lanes {
			for _, d := range l.window {
				rt.abandonLocked(d)
			}
			for _, d := range l.queued {
				rt.abandonLocked(d)
			}
		}
		rt.mu.Unlock()
		close(rt.givenUp)
	})
}

// retryCall runs fn until it succeeds, retrying with backoff while the error
// is one retrying can fix, until ctx ends.
func (rt *runtime) retryCall(what string, fn func() error) error {
	wait := retryBase
	for {
		err := fn()
		if err == nil || permanent(err) || rt.c.closed() || rt.ctx.Err() != nil {
			return err
		}
		rt.log.Warn("ferry consumer: "+what+" failed; retrying", "topic", rt.opts.Topic, "group", rt.group, "in", wait, "error", err)
		if !sleep(rt.ctx, wait) {
			return err
		}
		wait = min(2*wait, retryMax)
	}
}

// start finds the topics, takes the consumer's first share of the queues and
// starts the background loops.
func (rt *runtime) start() error {
	if !rt.c.register(rt) {
		return errClientClosed
	}
	o := rt.opts
	rt.topics = []string{o.Topic}
	if o.Queues == nil {
		err := rt.retryCall("start", func() error {
			cctx, cancel := context.WithTimeout(rt.ctx, callTimeout)
			defer cancel()
			rt.c.forgetTopic(o.Topic)
			n, err := rt.c.queueCount(cctx, o.Topic)
			if err != nil {
				return err
			}
			rt.counts[o.Topic] = n
			retry := sdk.RetryTopic(rt.group)
			rt.c.forgetTopic(retry)
			switch n, err := rt.c.queueCount(cctx, retry); {
			case err == nil:
				rt.counts[retry] = n
			case errors.Is(err, sdk.ErrNotFound):
				rt.log.Warn("ferry consumer: the broker has no retry topic for the group; failed messages are retried in place", "group", rt.group)
				rt.orderly = true
			default:
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
		if _, ok := rt.counts[sdk.RetryTopic(rt.group)]; ok {
			rt.topics = append(rt.topics, sdk.RetryTopic(rt.group))
		}
	}
	err := rt.retryCall("joining the group", func() error {
		want, err := rt.share(rt.ctx)
		if err != nil {
			return err
		}
		return rt.assign(rt.ctx, want)
	})
	if err != nil {
		return err
	}
	rt.bg.Add(1)
	go rt.commitLoop()
	if o.Queues == nil && !o.Broadcast {
		rt.bg.Add(1)
		go rt.heartbeatLoop()
	}
	return nil
}

// stop ends the run: background loops stop, what was settled is committed,
// the member leaves its group. It returns the error of that last commit.
func (rt *runtime) stop() error {
	rt.stopOnce.Do(func() {
		rt.cancel()
		rt.bg.Wait()
		rt.mu.Lock()
		pf := rt.prefetch
		rt.mu.Unlock()
		if pf != nil {
			<-pf.done // it ends with rt.ctx; what it fetched stays unsettled
		}
		ctx, cancel := context.WithTimeout(context.Background(), finalCommitTimeout)
		defer cancel()
		rt.stopErr = rt.commit(ctx)
		if rt.opts.Queues == nil && !rt.opts.Broadcast && !rt.c.closed() {
			if _, err := rt.heartbeat(ctx, true); err != nil {
				rt.log.Debug("ferry consumer: leaving the group failed; the broker drops the member after its session timeout", "group", rt.group, "error", err)
			}
		}
		rt.sender.close()
		rt.c.unregister(rt)
		close(rt.finished)
	})
	return rt.stopErr
}

// fail records a permanent error of a background loop and stops the run.
func (rt *runtime) fail(err error) {
	rt.mu.Lock()
	if rt.fatal == nil {
		rt.fatal = err
	}
	rt.mu.Unlock()
	rt.cancel()
}

func (rt *runtime) fatalErr() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.fatal
}

// wakeLocked wakes whoever waits for capacity or lanes.
func (rt *runtime) wakeLocked() {
	if rt.waiting {
		close(rt.wake)
		rt.wake = make(chan struct{})
		rt.waiting = false
	}
}

// waitLocked releases rt.mu until woken, ctx ends or timeout passes; false
// when ctx or the run ended.
func (rt *runtime) waitLocked(ctx context.Context, timeout time.Duration) bool {
	ch := rt.wake
	rt.waiting = true
	rt.mu.Unlock()
	t := time.NewTimer(timeout)
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	case <-rt.ctx.Done():
	}
	t.Stop()
	rt.mu.Lock()
	return ctx.Err() == nil && rt.ctx.Err() == nil
}

// position is where a fetch reads one lane.
type position struct {
	l      *lane
	offset int64
}

// positionsLocked lists the lanes of topic that may be fetched: owned, and
// (orderly) not holding more than their share of MaxInflight.
func (rt *runtime) positionsLocked(topic string) map[int32]position {
	perQueue := rt.opts.MaxInflight
	if rt.orderly && len(rt.lanes) > 0 {
		perQueue = max(rt.opts.MaxInflight/len(rt.lanes), 32)
	}
	ps := map[int32]position{}
	for r, l := range rt.lanes {
		if r.topic == topic && !l.revoked && l.corrupt == nil && l.unsettled < perQueue {
			ps[r.queue] = position{l, l.next}
		}
	}
	return ps
}

// fetch reads the positions of topic once (waiting up to wait at the
// broker) and registers what it got as deliveries of their lanes.
func (rt *runtime) fetch(ctx context.Context, topic string, ps map[int32]position, maxMsgs int, wait time.Duration) ([]*Delivery, error) {
	req := &ferryv1.FetchRequest{
		Topic:        topic,
		MaxMessages:  int32(maxMsgs),
		MaxBytes:     rt.opts.MaxBytes,
		MaxWaitNanos: int64(wait),
		Group:        rt.group,
	}
	for q, p := range ps {
		req.Positions = append(req.Positions, &ferryv1.FetchPosition{Queue: q, Offset: p.offset})
	}
	cctx, cancel := context.WithTimeout(ctx, wait+callTimeout)
	defer cancel()
	resp, err := rt.c.rpc.Fetch(cctx, req, grpc.WaitForReady(true))
	if err != nil {
		return nil, rt.c.callError("fetch", err)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	current := func(q int32) *lane {
		p, ok := ps[q]
		if !ok || p.l.revoked || rt.lanes[queueRef{topic, q}] != p.l {
			return nil
		}
		return p.l
	}
	for _, o := range resp.Offsets {
		l := current(o.Queue)
		if l == nil || l.next != ps[o.Queue].offset {
			continue
		}
		if rt.truncatedLocked(l, o) {
			continue // the lane was replaced; this answer's messages are dropped
		}
		switch {
		case l.next < o.Start:
			rt.log.Warn("ferry consumer: messages removed before they were consumed; moving on",
				"topic", topic, "group", rt.group, "queue", o.Queue, "from", l.next, "to", o.Start)
			l.next = o.Start
		case l.next > o.End:
			rt.log.Warn("ferry consumer: position past the end of the queue; moving back",
				"topic", topic, "group", rt.group, "queue", o.Queue, "from", l.next, "to", o.End)
			l.next = o.End
		}
		l.advance()
	}
	for _, qe := range resp.Errors {
		l := current(qe.Queue)
		if l == nil || l.next != qe.Offset || l.next != ps[qe.Queue].offset {
			continue
		}
		err := sdk.ErrorFromProto(qe.Error)
		if rt.opts.OnCorrupt == CorruptDeadLetter {
			// Rare: the placeholder is stored before the lane moves on,
			// under the runtime's lock, and tried again next fetch if it
			// fails.
			if serr := rt.sender.send(cctx, corruptPlaceholder(rt.group, topic, qe.Queue, qe.Offset, err)); serr != nil {
				rt.log.Warn("ferry consumer: could not dead-letter a placeholder for a damaged record; trying again",
					"topic", topic, "group", rt.group, "queue", qe.Queue, "offset", qe.Offset, "error", serr)
				continue
			}
			rt.log.Warn("ferry consumer: dead-lettered a placeholder for a message the broker cannot read (its stored record is damaged; policy dlq)",
				"topic", topic, "group", rt.group, "queue", qe.Queue, "offset", qe.Offset, "reason", err)
			rt.cn.stats.corruptSkipped.Add(1)
			l.next = qe.Offset + 1
			l.advance()
			continue
		}
		if rt.opts.OnCorrupt == CorruptSkip {
			rt.log.Warn("ferry consumer: skipping a message the broker cannot read (its stored record is damaged; policy skip)",
				"topic", topic, "group", rt.group, "queue", qe.Queue, "offset", qe.Offset, "reason", err)
			rt.cn.stats.corruptSkipped.Add(1)
			l.next = qe.Offset + 1
			l.advance()
			continue
		}
		rt.log.Error("ferry consumer: queue stopped at a message the broker cannot read (its stored record is damaged; policy stop): "+
			"the group's other queues go on; OnCorrupt: CorruptSkip moves past it, `ferry storage check` shows the damage",
			"topic", topic, "group", rt.group, "queue", qe.Queue, "offset", qe.Offset, "reason", err)
		rt.cn.stats.corruptStopped.Add(1)
		l.corrupt = err
	}
	out := make([]*Delivery, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		l := current(m.Queue)
		if l == nil || m.Offset < l.next || (m.Offset > l.next && l.next != ps[m.Queue].offset) {
			continue // not ours any more, seen already, or a gap
		}
		d := newDelivery(rt, l, m)
		l.window = append(l.window, d)
		l.next = m.Offset + 1
		l.unsettled++
		rt.inflight++
		l.advance()
		out = append(out, d)
	}
	return out, nil
}

// settle records d's outcome: its offset may be committed once everything
// before it in its queue is settled too.
func (rt *runtime) settle(d *Delivery, o outcome) {
	if !d.state.CompareAndSwap(deliveryOpen, deliverySettled) {
		return
	}
	rt.mu.Lock()
	d.done = true
	d.lane.unsettled--
	rt.inflight--
	d.lane.advance()
	rt.wakeLocked()
	rt.mu.Unlock()
	switch o {
	case outcomeAcked:
		rt.cn.stats.acked.Add(1)
	case outcomeRetried:
		rt.cn.stats.retried.Add(1)
	case outcomeDead:
		rt.cn.stats.dead.Add(1)
	case outcomeReleased:
		rt.cn.stats.released.Add(1)
	}
	if rt.opts.CommitInterval < 0 {
		select {
		case rt.kick <- struct{}{}:
		default:
		}
	}
}

// abandon gives up d without settling it (its queue was revoked, or the
// consumer stops): the group's offset stays before it.
func (rt *runtime) abandonLocked(d *Delivery) {
	if d.state.CompareAndSwap(deliveryOpen, deliveryAbandoned) {
		d.lane.unsettled--
		rt.inflight--
		rt.wakeLocked()
	}
}

func (rt *runtime) revoked(d *Delivery) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if d.lane.revoked {
		rt.abandonLocked(d)
		return true
	}
	return false
}

// commitLoop commits settled offsets every CommitInterval (or when kicked).
func (rt *runtime) commitLoop() {
	defer rt.bg.Done()
	interval := rt.opts.CommitInterval
	if interval < 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-rt.kick:
		case <-rt.ctx.Done():
			return
		}
		if err := rt.commit(rt.ctx); err != nil && rt.ctx.Err() == nil {
			rt.log.Warn("ferry consumer: commit failed; retrying later", "topic", rt.opts.Topic, "group", rt.group, "error", err)
		}
	}
}

// commit records the lanes' offsets that moved since their last commit, and
// forgets revoked lanes once they are drained and committed.
func (rt *runtime) commit(ctx context.Context) error {
	rt.mu.Lock()
	req := &ferryv1.CommitOffsetsRequest{Group: rt.group, Generation: rt.generation.Load()}
	var ls []*lane
	for r, l := range rt.lanes {
		switch {
		case l.commitTo >= 0 && l.commitTo != l.committed:
			req.Offsets = append(req.Offsets, &ferryv1.GroupOffset{Topic: r.topic, Queue: r.queue, Offset: l.commitTo})
			ls = append(ls, l)
		case l.revoked && l.unsettled == 0:
			delete(rt.lanes, r)
		}
	}
	rt.mu.Unlock()
	if len(req.Offsets) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := rt.c.rpc.CommitOffsets(cctx, req, grpc.WaitForReady(true)); err != nil {
		return rt.c.callError("commit offsets", err)
	}
	rt.mu.Lock()
	for i, l := range ls {
		l.committed = req.Offsets[i].Offset
		if l.revoked && l.unsettled == 0 && l.commitTo == l.committed && rt.lanes[l.ref] == l {
			delete(rt.lanes, l.ref)
		}
	}
	rt.mu.Unlock()
	return nil
}

// push runs the fetch loops and the handler goroutines until the run ends.
func (rt *runtime) push(h DeliveryHandler) error {
	var wg sync.WaitGroup
	var dispatch func([]*Delivery)
	if rt.orderly {
		ready := make(chan *lane, 2*maxLanes)
		dispatch = func(ds []*Delivery) {
			rt.mu.Lock()
			defer rt.mu.Unlock()
			for _, d := range ds {
				l := d.lane
				l.queued = append(l.queued, d)
				if !l.busy {
					l.busy = true
					ready <- l
				}
			}
		}
		for range rt.opts.Concurrency {
			wg.Go(func() { rt.orderlyWorker(h, ready) })
		}
	} else {
		work := make(chan *Delivery, rt.opts.MaxInflight+rt.opts.MaxMessages)
		dispatch = func(ds []*Delivery) {
			for _, d := range ds {
				work <- d
			}
		}
		for range rt.opts.Concurrency {
			wg.Go(func() {
				for {
					select {
					case d := <-work:
						rt.process(d, h)
					case <-rt.ctx.Done():
						return
					}
				}
			})
		}
	}
	for _, topic := range rt.topics {
		wg.Go(func() { rt.fetchLoop(topic, dispatch) })
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-rt.givenUp: // Client.Close's deadline: handlers still running are left behind
	}
	return rt.fatalErr()
}

// maxLanes bounds the queues a consumer can own: a topic's (at most 1024)
// and its group's retry topic's.
const maxLanes = 1024 + 64

// fetchLoop fetches topic's owned queues while there is capacity and hands
// the deliveries to dispatch.
func (rt *runtime) fetchLoop(topic string, dispatch func([]*Delivery)) {
	wait := retryBase
	for {
		rt.mu.Lock()
		var ps map[int32]position
		free := 0
		for {
			if rt.ctx.Err() != nil {
				rt.mu.Unlock()
				return
			}
			free = rt.opts.MaxInflight - rt.inflight
			if free > 0 {
				if ps = rt.positionsLocked(topic); len(ps) > 0 {
					break
				}
			}
			rt.waitLocked(rt.ctx, time.Minute)
		}
		rt.mu.Unlock()
		ds, err := rt.fetch(rt.ctx, topic, ps, min(free, rt.opts.MaxMessages), rt.opts.MaxWait)
		if err != nil {
			if rt.ctx.Err() != nil {
				return
			}
			if permanent(err) || rt.c.closed() {
				rt.fail(err)
				return
			}
			rt.log.Warn("ferry consumer: fetch failed; retrying", "topic", topic, "group", rt.group, "in", wait, "error", err)
			if !sleep(rt.ctx, wait) {
				return
			}
			wait = min(2*wait, retryMax)
			continue
		}
		wait = retryBase
		if len(ds) > 0 {
			dispatch(ds)
		}
	}
}

// orderlyWorker processes lanes one at a time, each lane's deliveries in
// order.
func (rt *runtime) orderlyWorker(h DeliveryHandler, ready chan *lane) {
	const turn = 64 // deliveries per lane before it yields to others
	for {
		var l *lane
		select {
		case l = <-ready:
		case <-rt.ctx.Done():
			return
		}
		requeue := false
		for i := 0; ; i++ {
			rt.mu.Lock()
			if l.revoked {
				for _, d := range l.queued {
					rt.abandonLocked(d)
				}
				l.queued = nil
			}
			if len(l.queued) == 0 || rt.ctx.Err() != nil {
				l.busy = false
				rt.mu.Unlock()
				break
			}
			if i == turn {
				requeue = true
				rt.mu.Unlock()
				break
			}
			d := l.queued[0]
			l.queued[0] = nil
			l.queued = l.queued[1:]
			rt.mu.Unlock()
			rt.process(d, h)
		}
		if requeue {
			ready <- l
		}
	}
}

// process runs the handler on d until it is settled, retried in place to
// the end, or the run stops; a handler error it does not settle itself is
// retried or dead-lettered as the consumer's RetryPolicy says.
func (rt *runtime) process(d *Delivery, h DeliveryHandler) {
	for {
		if rt.ctx.Err() != nil || rt.revoked(d) {
			return
		}
		d.takeInPlace()
		rt.cn.stats.delivered.Add(1)
		pctx, span := startProcess(rt.ctx, d)
		err := rt.call(pctx, h, d)
		if err != nil {
			span.RecordError(err)
		}
		// The span ends when the attempt is settled, retried or given up,
		// so that its retry or dead-letter event is in it.
		defer span.End()
		if d.state.Load() != deliveryOpen {
			return
		}
		inPlace, cause := d.takeInPlace()
		if inPlace == nil {
			if err == nil {
				d.Ack()
				return
			}
			if rt.ctx.Err() != nil {
				return // stopping: the group gets d again
			}
			err = d.Retry(rt.ctx, err, rt.opts.Retry)
			if d.state.Load() != deliveryOpen {
				return
			}
			inPlace, cause = d.takeInPlace()
		}
		if inPlace == nil {
			if isDead(err) {
				err = d.DeadLetter(rt.ctx, err)
			}
			if err != nil && rt.ctx.Err() == nil {
				rt.log.Error("ferry consumer: cannot settle a failed message; it stays unsettled and is delivered again after a restart",
					"group", rt.group, "id", d.ID, "error", err)
			}
			return
		}
		if d.takeReleased() {
			rt.cn.stats.released.Add(1)
			span.End()
			continue // delivered again now, the same attempt
		}
		rt.cn.stats.retried.Add(1)
		span.AddEvent(telemetry.EventRetry, trace.WithAttributes(telemetry.AttrAttempt.Int(d.Attempt), telemetry.AttrReason.String(fmt.Sprint(cause))))
		span.End()
		rt.log.Debug("ferry consumer: retrying in place", "group", rt.group, "id", d.ID, "attempt", d.Attempt, "in", *inPlace, "error", cause)
		if !sleep(rt.ctx, *inPlace) {
			return
		}
		d.Attempt++
	}
}

func (rt *runtime) call(ctx context.Context, h DeliveryHandler, d *Delivery) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	rt.handling.Add(1)
	defer rt.handling.Add(-1)
	return h(ctx, d)
}

// pull is Consumer.Fetch.
func (rt *runtime) pull(ctx context.Context, maxMsgs int) ([]*Delivery, error) {
	rt.pullMu.Lock()
	defer rt.pullMu.Unlock()
	if err := rt.fatalErr(); err != nil {
		return nil, err
	}
	if maxMsgs <= 0 {
		maxMsgs = rt.opts.MaxMessages
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(rt.ctx, cancel)
	defer stop()
	deadline := time.Now().Add(rt.opts.MaxWait)

	// The prefetch started by the last call: its deliveries are counted
	// in flight already, so they are handed over before any wait for room.
	rt.mu.Lock()
	pf := rt.prefetch
	rt.mu.Unlock()
	if pf != nil {
		select {
		case <-pf.done:
		case <-fctx.Done():
			return nil, ctx.Err() // it stays for the next call
		}
		rt.mu.Lock()
		rt.prefetch = nil
		rt.mu.Unlock()
		if pf.err != nil && rt.ctx.Err() == nil {
			rt.log.Debug("ferry consumer: a prefetch failed; fetching again", "topic", rt.opts.Topic, "group", rt.group, "error", pf.err)
		}
		rt.ready = append(rt.ready, pf.ds...)
	}
	if len(rt.ready) > 0 {
		// The retry topic is polled on its schedule also while the topic
		// is served from prefetches.
		out, err := rt.pollRetry(fctx, maxMsgs)
		if err != nil {
			return nil, err
		}
		out = append(out, rt.takeReady(maxMsgs-len(out))...)
		if len(out) > 0 {
			rt.prefetchNext(maxMsgs)
			rt.cn.stats.delivered.Add(int64(len(out)))
			return out, nil
		}
	}

	// Flow control: wait for room.
	rt.mu.Lock()
	for rt.inflight >= rt.opts.MaxInflight {
		left := time.Until(deadline)
		if left <= 0 || !rt.waitLocked(fctx, left) {
			rt.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	maxMsgs = min(maxMsgs, rt.opts.MaxInflight-rt.inflight)
	rt.mu.Unlock()

	out, err := rt.pollRetry(fctx, maxMsgs)
	if err != nil {
		return nil, err
	}
	for len(out) < maxMsgs {
		rt.mu.Lock()
		ps := rt.positionsLocked(rt.opts.Topic)
		if len(ps) == 0 {
			// No queue of the topic is ours (more members than queues):
			// wait for a rebalance.
			left := time.Until(deadline)
			if len(out) > 0 || left <= 0 || !rt.waitLocked(fctx, left) {
				rt.mu.Unlock()
				break
			}
			rt.mu.Unlock()
			continue
		}
		rt.mu.Unlock()
		wait := max(time.Until(deadline), 0)
		if len(out) > 0 {
			wait = 0
		}
		ds, err := rt.fetch(fctx, rt.opts.Topic, ps, maxMsgs-len(out), wait)
		if err != nil {
			if len(out) > 0 {
				break // hand over what we have; the error comes back next time
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		out = append(out, ds...)
		break
	}
	rt.cn.stats.delivered.Add(int64(len(out)))
	if len(out) == 0 {
		return nil, ctx.Err()
	}
	rt.prefetchNext(maxMsgs)
	return out, nil
}

// pollRetry fetches the group's retry topic (without waiting at the broker)
// when its poll is due. Called under pullMu.
func (rt *runtime) pollRetry(ctx context.Context, max int) ([]*Delivery, error) {
	if len(rt.topics) < 2 || time.Since(rt.lastRetryPoll) < retryPollInterval || max <= 0 {
		return nil, nil
	}
	rt.lastRetryPoll = time.Now()
	rt.mu.Lock()
	ps := rt.positionsLocked(rt.topics[1])
	rt.mu.Unlock()
	if len(ps) == 0 {
		return nil, nil
	}
	return rt.fetch(ctx, rt.topics[1], ps, max, 0)
}

// prefetchCall is one fetch run ahead of Fetch.
type prefetchCall struct {
	done chan struct{} // closed when ds and err are set
	ds   []*Delivery
	err  error
}

// takeReady returns up to max of the prefetched deliveries, dropping those
// whose queue was revoked meanwhile (abandoned: fetched again by the
// queue's new owner from the group's offset). Called under pullMu.
func (rt *runtime) takeReady(max int) []*Delivery {
	var out []*Delivery
	n := 0
	for n < len(rt.ready) && len(out) < max {
		d := rt.ready[n]
		n++
		if !rt.revoked(d) {
			out = append(out, d)
		}
	}
	rt.ready = rt.ready[n:]
	if len(rt.ready) == 0 {
		rt.ready = nil
	}
	return out
}

// prefetchNext starts the next fetch of the topic (without waiting at the
// broker) while the application works on what Fetch returns, unless
// deliveries are still ready, one runs already, the consumer stops or
// MaxInflight leaves no room. Called under pullMu.
func (rt *runtime) prefetchNext(max int) {
	if len(rt.ready) > 0 {
		return
	}
	rt.mu.Lock()
	free := rt.opts.MaxInflight - rt.inflight
	ps := rt.positionsLocked(rt.opts.Topic)
	if rt.prefetch != nil || rt.ctx.Err() != nil || free <= 0 || len(ps) == 0 {
		rt.mu.Unlock()
		return
	}
	pf := &prefetchCall{done: make(chan struct{})}
	rt.prefetch = pf
	rt.mu.Unlock()
	go func() {
		defer close(pf.done)
		pf.ds, pf.err = rt.fetch(rt.ctx, rt.opts.Topic, ps, min(max, free), 0)
	}()
}

// corruptPlaceholder is the dead letter CorruptDeadLetter stores for the
// damaged record at topic/queue/offset: its id is derived from where the
// record is, so storing it again is de-duplicated.
func corruptPlaceholder(group, topic string, queue int32, offset int64, cause error) *ferryv1.Message {
	msg := cause.Error()
	if len(msg) > maxErrorHeader {
		msg = msg[:maxErrorHeader] + "…"
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	return &ferryv1.Message{
		Id:    fmt.Sprintf("corrupt~%s.%d.%d", topic, queue, offset),
		Topic: sdk.DLQTopic(group),
		Headers: map[string]string{
			sdk.HeaderOriginTopic:  topic,
			sdk.HeaderOriginQueue:  strconv.Itoa(int(queue)),
			sdk.HeaderOriginOffset: strconv.FormatInt(offset, 10),
			sdk.HeaderDeadReason:   DeadReasonCorrupt,
			sdk.HeaderLastError:    msg,
			sdk.HeaderAttempt:      "0",
			sdk.HeaderFirstFailure: now,
			sdk.HeaderLastFailure:  now,
		},
		BornUnixNano: time.Now().UnixNano(),
	}
}

// truncatedLocked checks a lane against the broker's log epoch in o: when
// the lane's position comes from an earlier epoch and lies past where this
// epoch's appends began (the broker came back with a shorter log, after a
// power loss under flush async, and reuses those offsets), the lane is
// replaced by one at the epoch's start, so that no message appended since is
// skipped. The old lane's deliveries are of messages the log no longer holds:
// the queued ones are abandoned, and nothing of the old lane is committed.
func (rt *runtime) truncatedLocked(l *lane, o *ferryv1.QueueOffsets) bool {
	if o.Epoch == 0 || l.epoch == o.Epoch {
		return false
	}
	if l.epoch == 0 || l.next <= o.EpochStart {
		l.epoch = o.Epoch
		return false
	}
	rt.log.Warn("ferry consumer: the broker's log restarted below this position (messages it had not flushed were lost); reading the new ones from where they begin",
		"topic", l.ref.topic, "group", rt.group, "queue", l.ref.queue, "from", l.next, "to", o.EpochStart)
	for _, d := range l.queued {
		rt.abandonLocked(d)
	}
	l.queued = nil
	l.revoked = true
	nl := &lane{ref: l.ref, retry: l.retry, committed: l.committed, next: o.EpochStart, commitTo: o.EpochStart, epoch: o.Epoch}
	rt.lanes[l.ref] = nl
	rt.wakeLocked()
	return true
}
