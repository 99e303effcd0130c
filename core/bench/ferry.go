package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Ferry runs workloads against a Ferry cluster through the Go client.
type Ferry struct {
	// Label names the system in results (default "ferry").
	Label  string
	Client *client.Client
	// Producer is the base of every producer's options; the workload sets
	// MaxInflight.
	Producer client.ProducerOptions
	// Consumer is the base of every consumer's options; the workload sets
	// Topic, Group, StartAt and MaxMessages.
	Consumer client.ConsumerOptions
}

var _ System = (*Ferry)(nil)

// Name is Label or "ferry".
func (f *Ferry) Name() string {
	if f.Label != "" {
		return f.Label
	}
	return "ferry"
}

// Run runs w; see System.
func (f *Ferry) Run(ctx context.Context, w Workload, rec *Recorder) (*Result, error) {
	w = w.WithDefaults()
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("bench: %w: %w", sdk.ErrInvalidArgument, err)
	}
	queues, err := f.queues(ctx, w.Topic)
	if err != nil {
		return nil, err
	}
	switch w.Kind {
	case Produce:
		return f.produce(ctx, w, rec, queues)
	case Consume:
		return f.consume(ctx, w, rec, queues)
	default:
		return f.endToEnd(ctx, w, rec)
	}
}

// queues returns the topic's queue count; sdk.ErrNotFound names the topics
// the broker has when it has not this one.
func (f *Ferry) queues(ctx context.Context, topic string) (int32, error) {
	md, err := f.Client.Metadata(ctx)
	if err != nil {
		return 0, fmt.Errorf("bench: metadata: %w", err)
	}
	var names []string
	for _, t := range md.Topics {
		if t.Name == topic {
			return t.Queues, nil
		}
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return 0, fmt.Errorf("bench: topic %q: %w: the broker has %s", topic, sdk.ErrNotFound, strings.Join(names, ", "))
}

// statusOf names the outcome of one send.
func statusOf(res client.Result, err error) string {
	if err != nil {
		return sdk.ErrorToProto(err).Code
	}
	return client.StatusName(res.Status)
}

func (f *Ferry) producer(w Workload) *client.Producer {
	opts := f.Producer
	opts.MaxInflight = w.Inflight
	return f.Client.NewProducer(opts)
}

// send runs w's producers until its budget is spent. body gives each
// message's body; onAck (may be nil) sees each message that was acked OK.
// It returns how many oneway messages were sent.
func (f *Ferry) send(ctx context.Context, w Workload, rec *Recorder, start time.Time, body func() []byte) int64 {
	b := newBudget(w, start)
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range w.Producers {
		p := f.producer(w)
		wg.Go(func() {
			switch w.Mode {
			case Sync:
				for b.take(ctx) {
					t0 := time.Now()
					res, err := p.SendSync(ctx, client.Message{Topic: w.Topic, Body: body()})
					rec.Record(statusOf(res, err), w.Size, time.Since(t0))
				}
			case Async:
				for b.take(ctx) {
					t0 := time.Now()
					err := p.SendAsync(ctx, client.Message{Topic: w.Topic, Body: body()}, func(res client.Result, err error) {
						rec.Record(statusOf(res, err), w.Size, time.Since(t0))
					})
					if err != nil {
						rec.Record(statusOf(client.Result{}, err), w.Size, 0)
					}
				}
			case Oneway:
				for b.take(ctx) {
					if _, err := p.SendOneway(ctx, client.Message{Topic: w.Topic, Body: body()}); err != nil {
						rec.Record(statusOf(client.Result{}, err), w.Size, 0)
						continue
					}
					sent.Add(1)
					rec.Tick(1)
				}
			}
			// Drain the async sends; their callbacks record the outcomes.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = p.Close(cctx)
		})
	}
	wg.Wait()
	return sent.Load()
}

func (f *Ferry) produce(ctx context.Context, w Workload, rec *Recorder, queues int32) (*Result, error) {
	var before int64
	if w.Mode == Oneway {
		var err error
		if before, err = f.stored(ctx, w.Topic, queues); err != nil {
			return nil, err
		}
	}
	body := Body(w.Size)
	rec.SetPhase("run")
	start := time.Now()
	sent := f.send(ctx, w, rec, start, func() []byte { return body })
	if w.Mode == Oneway {
		// A oneway send is done when the broker stored it: wait for that.
		rec.SetPhase("store")
		deadline := time.Now().Add(time.Minute)
		for {
			n, err := f.stored(ctx, w.Topic, queues)
			if err != nil {
				return nil, err
			}
			if n >= before+sent || time.Now().After(deadline) || ctx.Err() != nil {
				stored := min(n-before, sent)
				for range stored {
					rec.Record(StatusSent, w.Size, 0)
				}
				if lost := sent - stored; lost > 0 {
					rec.mu.Lock()
					rec.statuses["NOT_STORED"] += lost
					rec.mu.Unlock()
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return rec.Result(f.Name(), w, time.Since(start)), nil
}

// stored is how many messages topic holds: the sum of end - start over its
// queues.
func (f *Ferry) stored(ctx context.Context, topic string, queues int32) (int64, error) {
	refs := make([]*ferryv1.QueueRef, queues)
	for q := range refs {
		refs[q] = &ferryv1.QueueRef{Topic: topic, Queue: int32(q)}
	}
	offs, err := f.Client.GetOffsets(ctx, "", refs)
	if err != nil {
		return 0, fmt.Errorf("bench: offsets of %s: %w", topic, err)
	}
	var n int64
	for _, o := range offs {
		n += o.End - o.Start
	}
	return n, nil
}

// newGroup names a consumer group no one used before.
func newGroup(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", prefix, time.Now().UnixNano(), hex.EncodeToString(b[:]))
}

func (f *Ferry) consumer(w Workload, group string, startAt client.StartAt) (*client.Consumer, error) {
	opts := f.Consumer
	opts.Topic, opts.Group, opts.StartAt = w.Topic, group, startAt
	if w.FetchMax > 0 {
		opts.MaxMessages = w.FetchMax
	}
	return f.Client.NewConsumer(opts)
}

// preload produces, untimed, what topic lacks to hold want messages.
func (f *Ferry) preload(ctx context.Context, w Workload, rec *Recorder, queues int32, want int64) error {
	have, err := f.stored(ctx, w.Topic, queues)
	if err != nil {
		return err
	}
	if have >= want {
		return nil
	}
	if !w.Preload {
		return fmt.Errorf("bench: topic %s holds %d messages, fewer than the %d to consume (preload them)", w.Topic, have, want)
	}
	rec.SetPhase("preload")
	p := f.Client.NewProducer(client.ProducerOptions{MaxInflight: 4096})
	body := Body(w.Size)
	var failed atomic.Int64
	var first atomic.Pointer[error]
	for range want - have {
		err := p.SendAsync(ctx, client.Message{Topic: w.Topic, Body: body}, func(_ client.Result, err error) {
			rec.Tick(1)
			if err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, &err)
			}
		})
		if err != nil {
			_ = p.Close(context.WithoutCancel(ctx))
			return fmt.Errorf("bench: preload: %w", err)
		}
	}
	if err := p.Close(ctx); err != nil {
		return fmt.Errorf("bench: preload: %w", err)
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("bench: preload: %d messages failed, the first: %w", n, *first.Load())
	}
	return nil
}

func (f *Ferry) consume(ctx context.Context, w Workload, rec *Recorder, queues int32) (*Result, error) {
	if err := f.preload(ctx, w, rec, queues, w.Count); err != nil {
		return nil, err
	}
	rec.SetPhase("run")
	group := newGroup("bench")
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		got     atomic.Int64
		last    atomic.Int64 // when the latest counted message came, Unix ns
		endOnce sync.Once
		end     time.Time
	)
	count := func(d *client.Delivery) {
		// Deliveries past Count (the rest of a fetched batch) are acked
		// but not counted.
		if n := got.Add(1); n <= w.Count {
			last.Store(time.Now().UnixNano())
			rec.Record(StatusOK, len(d.Message.Body), 0)
			if n == w.Count {
				endOnce.Do(func() { end = time.Now() })
				stop()
			}
		}
	}
	start := time.Now()
	stopWatch := WatchStall(rctx, w.DrainTimeout, got.Load, stop)
	errs := f.runConsumers(rctx, w, group, client.StartCommittedOrEarliest, func(d *client.Delivery) error {
		count(d)
		return nil
	})
	stopWatch()
	endOnce.Do(func() { // stalled: the rate is up to the last message
		end = time.Now()
		if l := last.Load(); l > 0 {
			end = time.Unix(0, l)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	res := rec.Result(f.Name(), w, end.Sub(start))
	if missing := w.Count - res.Messages; missing > 0 {
		res.Statuses["NOT_CONSUMED"] = missing
	}
	return res, nil
}

// WatchStall calls stop when progress() has not moved for d, until ctx
// ends or the returned function is called: a consumer that gets nothing
// more (the messages are gone, or were never there) ends the run.
func WatchStall(ctx context.Context, d time.Duration, progress func() int64, stop func()) func() {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(min(d/10, 100*time.Millisecond))
		defer tick.Stop()
		last, since := progress(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if n := progress(); n != last {
					last, since = n, now
				} else if now.Sub(since) >= d {
					stop()
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// runConsumers runs w.Consumers consumers of group until ctx ends, calling
// handle for each delivery (in pull mode it is acked when handle returns
// nil). It returns the consumers' errors, ctx's end excluded.
func (f *Ferry) runConsumers(ctx context.Context, w Workload, group string, startAt client.StartAt, handle func(*client.Delivery) error) []error {
	cons := make([]*client.Consumer, w.Consumers)
	for i := range cons {
		c, err := f.consumer(w, group, startAt)
		if err != nil {
			return []error{err}
		}
		cons[i] = c
	}
	errs := make([]error, len(cons))
	var wg sync.WaitGroup
	for i, cn := range cons {
		wg.Go(func() {
			switch w.Delivery {
			case Push:
				errs[i] = cn.Consume(ctx, func(_ context.Context, d *client.Delivery) error { return handle(d) })
			case Pull:
				if err := cn.Start(ctx); err != nil {
					errs[i] = err
					return
				}
				defer func() { errs[i] = errors.Join(errs[i], cn.Close()) }()
				for ctx.Err() == nil {
					ds, err := cn.Fetch(ctx, w.FetchMax)
					if err != nil {
						if ctx.Err() == nil {
							errs[i] = err
						}
						return
					}
					for _, d := range ds {
						if handle(d) == nil {
							d.Ack()
						}
					}
				}
			}
		})
	}
	wg.Wait()
	var out []error
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			out = append(out, fmt.Errorf("bench: consumer: %w", err))
		}
	}
	return out
}

// endToEnd starts the consumers of a new group at the topic's end, then
// the producers; each message carries its send time, and the consumers
// record the latency to their handler. The run ends when the consumers saw
// every message the producers had acked, or DrainTimeout after the
// producers finished.
func (f *Ferry) endToEnd(ctx context.Context, w Workload, rec *Recorder) (*Result, error) {
	run, probeRun := RunID(), RunID()
	group := newGroup("bench-e2e")
	rctx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	var (
		consumed atomic.Int64
		probes   atomic.Int64
		target   = int64(-1)
		mu       sync.Mutex
		lastSeen time.Time
		allSeen  = make(chan struct{})
		seenOnce sync.Once
	)
	handle := func(d *client.Delivery) error {
		if _, ok := ReadStamp(d.Message.Body, probeRun); ok {
			probes.Add(1)
			return nil
		}
		sent, ok := ReadStamp(d.Message.Body, run)
		if !ok {
			return nil // from before this run
		}
		now := time.Now()
		rec.Latency(now.Sub(sent))
		rec.Tick(1)
		n := consumed.Add(1)
		mu.Lock()
		lastSeen = now
		t := target
		mu.Unlock()
		if t >= 0 && n >= t {
			seenOnce.Do(func() { close(allSeen) })
		}
		return nil
	}
	// The group starts where the topic ends now: its offsets are committed
	// there before its consumers start, so that every consumer, and every
	// owner a queue moves to in a rebalance, begins exactly there.
	queues, err := f.queues(ctx, w.Topic)
	if err != nil {
		return nil, err
	}
	if err := f.commitEnds(ctx, w.Topic, queues, group); err != nil {
		return nil, err
	}
	var consErrs []error
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		consErrs = f.runConsumers(rctx, w, group, client.StartCommittedOrEarliest, handle)
	}()
	// Measure once the consumers are under way: a probe sent to each queue
	// has reached them.
	probe := f.Client.NewProducer(client.ProducerOptions{})
	body := Body(w.Size)
	for range queues {
		if _, err := probe.SendSync(ctx, client.Message{Topic: w.Topic, Body: Stamp(body, probeRun)}); err != nil {
			return nil, fmt.Errorf("bench: probe: %w", err)
		}
	}
	for wait := time.Now().Add(30 * time.Second); probes.Load() < int64(queues); {
		select {
		case <-consDone:
			return nil, errors.Join(append(consErrs, errors.New("bench: consumers stopped"))...)
		case <-ctx.Done():
			stopConsumers()
			<-consDone
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(wait) {
			stopConsumers()
			<-consDone
			return nil, fmt.Errorf("bench: consumers saw %d of %d probes in 30s", probes.Load(), queues)
		}
	}

	prod := NewRecorder() // the producers' statuses; rec gets the consumers' latencies
	rec.SetPhase("run")
	start := time.Now()
	f.send(ctx, w, prod, start, func() []byte { return Stamp(body, run) })
	sent := prod.Counted()
	mu.Lock()
	target = sent
	mu.Unlock()
	if consumed.Load() >= sent {
		seenOnce.Do(func() { close(allSeen) })
	}
	rec.SetPhase("drain")
	select {
	case <-allSeen:
	case <-time.After(w.DrainTimeout):
	case <-ctx.Done():
	case <-consDone:
	}
	mu.Lock()
	end := lastSeen
	mu.Unlock()
	stopConsumers()
	<-consDone
	if err := errors.Join(consErrs...); err != nil {
		return nil, err
	}
	// Statuses are the producers'; the rate is of messages consumed.
	pr := prod.Result(f.Name(), w, end.Sub(start))
	res := rec.Result(f.Name(), w, end.Sub(start))
	res.Statuses = pr.Statuses
	got := min(consumed.Load(), sent)
	if missing := sent - got; missing > 0 {
		res.Statuses["NOT_CONSUMED"] = missing
	}
	res.Messages, res.Bytes = got, got*int64(w.Size)
	if s := res.Elapsed.Seconds(); s > 0 {
		res.Rate, res.MBps = float64(got)/s, float64(res.Bytes)/s/1e6
	}
	return res, nil
}

// commitEnds commits, for group, the current end of each queue of topic on
// every broker of the client that has the topic.
func (f *Ferry) commitEnds(ctx context.Context, topic string, queues int32, group string) error {
	refs := make([]*ferryv1.QueueRef, queues)
	for q := range refs {
		refs[q] = &ferryv1.QueueRef{Topic: topic, Queue: int32(q)}
	}
	committed := 0
	var errs []error
	for _, addr := range f.Client.Brokers() {
		err := func() error {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer cc.Close()
			rpc := ferryv1.NewBrokerClient(cc)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			offs, err := rpc.GetOffsets(cctx, &ferryv1.GetOffsetsRequest{Queues: refs})
			if err != nil {
				return err
			}
			req := &ferryv1.CommitOffsetsRequest{Group: group}
			for _, o := range offs.Offsets {
				req.Offsets = append(req.Offsets, &ferryv1.GroupOffset{Topic: topic, Queue: o.Queue, Offset: o.End})
			}
			_, err = rpc.CommitOffsets(cctx, req)
			return err
		}()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		committed++
	}
	if committed == 0 {
		return fmt.Errorf("bench: starting group %s at the end of %s: %w", group, topic, errors.Join(errs...))
	}
	return nil
}
