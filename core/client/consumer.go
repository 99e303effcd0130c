package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// StartAt says where a consumer group starts on a queue it has never
// committed.
type StartAt string

const (
	// StartCommittedOrEarliest starts at the oldest stored message. Default.
	StartCommittedOrEarliest StartAt = "committed-or-earliest"
	// StartCommittedOrLatest starts after the newest stored message.
	StartCommittedOrLatest StartAt = "committed-or-latest"
)

// Defaults of ConsumerOptions.
const (
	DefaultMaxMessages    = 256
	DefaultMaxBytes       = 16 << 20
	DefaultMaxWait        = time.Second
	DefaultCommitInterval = 100 * time.Millisecond
	// CommitEachBatch in ConsumerOptions.CommitInterval commits after every
	// fetched batch (0 means the default interval).
	CommitEachBatch time.Duration = -1

	// callTimeout bounds each call to the broker but Fetch (whose bound is
	// MaxWait plus this), including waiting for a lost connection.
	callTimeout = 10 * time.Second
	// finalCommitTimeout bounds the commit when Run ends.
	finalCommitTimeout = 5 * time.Second
	// retryBase and retryMax bound the waits between retries of a failed
	// handler or broker call.
	retryBase = 100 * time.Millisecond
	retryMax  = 5 * time.Second
)

// ConsumerOptions configure a Consumer.
type ConsumerOptions struct {
	// Topic to consume. Required.
	Topic string
	// Group is the consumer group whose committed offsets the consumer
	// starts from and advances. Required.
	Group string
	// Queues to consume; nil means all queues of the topic (as the broker
	// reports them when Run starts).
	Queues []int32
	// MaxMessages bounds one fetch (default DefaultMaxMessages).
	MaxMessages int
	// MaxBytes bounds one fetch, roughly (default DefaultMaxBytes).
	MaxBytes int64
	// MaxWait is how long a fetch waits at the broker for new messages
	// (long poll; default DefaultMaxWait).
	MaxWait time.Duration
	// CommitInterval is how often processed offsets are committed (default
	// DefaultCommitInterval; CommitEachBatch commits after every batch).
	// What is processed but not yet committed when a consumer dies is
	// delivered again.
	CommitInterval time.Duration
	// StartAt applies to queues the group has never committed (default
	// StartCommittedOrEarliest).
	StartAt StartAt
}

// Handler processes one message. It is called from Run's goroutine, one
// message at a time, in offset order within each queue; ctx is Run's. A nil
// return acknowledges the message; an error makes Run call it again with
// the same message.
type Handler func(ctx context.Context, m *ferryv1.Message) error

// Consumer pulls a topic's messages for a consumer group and hands them to a
// handler, at least once each.
//
// This first version long-polls the queues it is given (or all of the topic's)
// and retries a failing message in place; consumer groups that share queues
// with rebalancing, push delivery with flow control and retry/dead-letter
// stages come later and keep this API.
type Consumer struct {
	c       *Client
	opts    ConsumerOptions
	running atomic.Bool
}

// NewConsumer checks opts and returns a consumer; nothing is fetched before
// Run.
func (c *Client) NewConsumer(opts ConsumerOptions) (*Consumer, error) {
	var errs []error
	if opts.Topic == "" {
		errs = append(errs, errors.New("Topic is required"))
	}
	if opts.Group == "" {
		errs = append(errs, errors.New("Group is required"))
	}
	if opts.Queues != nil {
		if len(opts.Queues) == 0 {
			errs = append(errs, errors.New("Queues is empty (nil means all queues)"))
		}
		seen := map[int32]bool{}
		for _, q := range opts.Queues {
			if q < 0 || seen[q] {
				errs = append(errs, fmt.Errorf("Queues: %d is negative or repeated", q))
			}
			seen[q] = true
		}
		opts.Queues = slices.Clone(opts.Queues)
	}
	if opts.MaxMessages < 0 || opts.MaxBytes < 0 || opts.MaxWait < 0 {
		errs = append(errs, errors.New("MaxMessages, MaxBytes and MaxWait must not be negative"))
	}
	switch opts.StartAt {
	case "":
		opts.StartAt = StartCommittedOrEarliest
	case StartCommittedOrEarliest, StartCommittedOrLatest:
	default:
		errs = append(errs, fmt.Errorf("StartAt: unknown %q", opts.StartAt))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("ferry consumer: %w: %w", sdk.ErrInvalidArgument, errors.Join(errs...))
	}
	if opts.MaxMessages == 0 {
		opts.MaxMessages = DefaultMaxMessages
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = DefaultCommitInterval
	}
	return &Consumer{c: c, opts: opts}, nil
}

// position is the consumer's state on one queue.
type position struct {
	queue int32
	// next is the offset of the next message to process: every message
	// before it was handled successfully. It is what gets committed.
	next int64
	// committed is what the broker holds for the group; -1 when nothing.
	committed int64
}

// Run fetches messages and calls handler for each until ctx ends; then it
// commits what was processed (with a fresh context of a few seconds) and
// returns nil, or the error of that last commit.
//
// Delivery is at-least-once: a message's offset is committed only after
// handler returned nil for it and for every earlier message of its queue. A
// handler error is retried in place, after a backoff growing from 100ms to
// 5s, until it succeeds or ctx ends: the queue does not move past a failing
// message (retry and dead-letter stages come later). Losing the broker is
// not an error: Run reconnects with backoff and goes on from where it was,
// skipping nothing; it only moves past messages the broker no longer has
// (retention), and logs it. Run returns early on errors retrying cannot fix
// (the topic does not exist: sdk.ErrNotFound; the Client was closed:
// sdk.ErrClosed). One Run at a time per Consumer.
func (cn *Consumer) Run(ctx context.Context, handler Handler) error {
	if handler == nil {
		return fmt.Errorf("ferry consumer: %w: nil handler", sdk.ErrInvalidArgument)
	}
	if !cn.running.CompareAndSwap(false, true) {
		return fmt.Errorf("ferry consumer: %w: Run is already running", sdk.ErrInvalidArgument)
	}
	defer cn.running.Store(false)

	pos, err := cn.start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	err = cn.loop(ctx, pos, handler)
	cctx, cancel := context.WithTimeout(context.Background(), finalCommitTimeout)
	defer cancel()
	if cerr := cn.commit(cctx, pos); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// loop fetches and handles until ctx ends or a permanent error.
func (cn *Consumer) loop(ctx context.Context, pos []*position, handler Handler) error {
	byQueue := byQueueOf(pos)
	lastCommit := time.Now()
	wait := retryBase
	for ctx.Err() == nil {
		maxWait := cn.opts.MaxWait
		if cn.opts.CommitInterval > 0 && dirty(pos) {
			due := cn.opts.CommitInterval - time.Since(lastCommit)
			if due <= 0 {
				cn.commitAndLog(ctx, pos)
				lastCommit = time.Now()
			} else {
				// Wake up in time to commit what is processed.
				maxWait = min(maxWait, due)
			}
		}
		resp, err := cn.fetch(ctx, pos, maxWait)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if permanent(err) || cn.c.closed() {
				return err
			}
			cn.c.log.Warn("ferry consumer: fetch failed; retrying", "topic", cn.opts.Topic, "group", cn.opts.Group, "in", wait, "error", err)
			if !sleep(ctx, wait) {
				return nil
			}
			wait = min(2*wait, retryMax)
			continue
		}
		wait = retryBase
		cn.correct(byQueue, resp.Offsets)
		for _, m := range resp.Messages {
			p := byQueue[m.Queue]
			if p == nil || m.Offset < p.next {
				continue // not ours, or seen already
			}
			if ctx.Err() != nil {
				return nil
			}
			if !cn.handle(ctx, handler, m) {
				return nil
			}
			p.next = m.Offset + 1
		}
		if cn.opts.CommitInterval < 0 && dirty(pos) {
			cn.commitAndLog(ctx, pos)
			lastCommit = time.Now()
		}
	}
	return nil
}

// handle calls handler until it accepts m; false when ctx ended first.
func (cn *Consumer) handle(ctx context.Context, handler Handler, m *ferryv1.Message) bool {
	wait := retryBase
	for attempt := 1; ; attempt++ {
		err := handler(ctx, m)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		cn.c.log.Warn("ferry consumer: handler failed; retrying the message in place",
			"topic", m.Topic, "queue", m.Queue, "offset", m.Offset, "id", m.Id, "attempt", attempt, "in", wait, "error", err)
		if !sleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, retryMax)
	}
}

// start finds the queues and their starting positions, retrying while the
// broker cannot be reached.
func (cn *Consumer) start(ctx context.Context) ([]*position, error) {
	wait := retryBase
	for {
		pos, err := cn.positions(ctx)
		if err == nil {
			return pos, nil
		}
		if permanent(err) || cn.c.closed() || ctx.Err() != nil {
			return nil, err
		}
		cn.c.log.Warn("ferry consumer: cannot start; retrying", "topic", cn.opts.Topic, "group", cn.opts.Group, "in", wait, "error", err)
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
		wait = min(2*wait, retryMax)
	}
}

func (cn *Consumer) positions(ctx context.Context) ([]*position, error) {
	queues, err := cn.queues(ctx)
	if err != nil {
		return nil, err
	}
	offs, err := cn.getOffsets(ctx, queues)
	if err != nil {
		return nil, err
	}
	pos := make([]*position, len(queues))
	for i, q := range queues {
		o := offs[q]
		if o == nil {
			return nil, fmt.Errorf("ferry consumer: the broker reported no offsets for %s queue %d", cn.opts.Topic, q)
		}
		p := &position{queue: q, committed: o.Committed, next: o.Committed}
		if o.Committed < 0 {
			p.next = o.Start
			if cn.opts.StartAt == StartCommittedOrLatest {
				p.next = o.End
			}
		}
		pos[i] = p
	}
	cn.correct(byQueueOf(pos), slices.Collect(maps.Values(offs)))
	return pos, nil
}

// correct moves positions that fell outside their queue's stored range:
// below start (retention removed the messages) to start, past end (the
// broker lost data) to end, so that nothing newer is skipped.
func (cn *Consumer) correct(byQueue map[int32]*position, offs []*ferryv1.QueueOffsets) {
	for _, o := range offs {
		p := byQueue[o.Queue]
		if p == nil {
			continue
		}
		switch {
		case p.next < o.Start:
			cn.c.log.Warn("ferry consumer: messages removed before they were consumed; moving on",
				"topic", cn.opts.Topic, "group", cn.opts.Group, "queue", p.queue, "from", p.next, "to", o.Start)
			p.next = o.Start
		case p.next > o.End:
			cn.c.log.Warn("ferry consumer: position past the end of the queue; moving back",
				"topic", cn.opts.Topic, "group", cn.opts.Group, "queue", p.queue, "from", p.next, "to", o.End)
			p.next = o.End
		}
	}
}

func (cn *Consumer) queues(ctx context.Context) ([]int32, error) {
	if cn.opts.Queues != nil {
		return cn.opts.Queues, nil
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cn.c.forgetTopic(cn.opts.Topic)
	n, err := cn.c.queueCount(cctx, cn.opts.Topic)
	if err != nil {
		return nil, err
	}
	qs := make([]int32, n)
	for i := range qs {
		qs[i] = int32(i)
	}
	return qs, nil
}

func (cn *Consumer) getOffsets(ctx context.Context, queues []int32) (map[int32]*ferryv1.QueueOffsets, error) {
	refs := make([]*ferryv1.QueueRef, len(queues))
	for i, q := range queues {
		refs[i] = &ferryv1.QueueRef{Topic: cn.opts.Topic, Queue: q}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	offs, err := cn.c.GetOffsets(cctx, cn.opts.Group, refs)
	if err != nil {
		return nil, err
	}
	out := make(map[int32]*ferryv1.QueueOffsets, len(offs))
	for _, o := range offs {
		if o.Topic == cn.opts.Topic || o.Topic == "" {
			out[o.Queue] = o
		}
	}
	return out, nil
}

func (cn *Consumer) fetch(ctx context.Context, pos []*position, maxWait time.Duration) (*ferryv1.FetchResponse, error) {
	req := &ferryv1.FetchRequest{
		Topic:        cn.opts.Topic,
		MaxMessages:  int32(cn.opts.MaxMessages),
		MaxBytes:     cn.opts.MaxBytes,
		MaxWaitNanos: int64(maxWait),
		Group:        cn.opts.Group,
	}
	for _, p := range pos {
		req.Positions = append(req.Positions, &ferryv1.FetchPosition{Queue: p.queue, Offset: p.next})
	}
	cctx, cancel := context.WithTimeout(ctx, maxWait+callTimeout)
	defer cancel()
	resp, err := cn.c.rpc.Fetch(cctx, req, grpc.WaitForReady(true))
	if err != nil {
		return nil, cn.c.callError("fetch", err)
	}
	return resp, nil
}

// commit records the positions that moved since the last commit.
func (cn *Consumer) commit(ctx context.Context, pos []*position) error {
	req := &ferryv1.CommitOffsetsRequest{Group: cn.opts.Group}
	for _, p := range pos {
		if p.next != p.committed {
			req.Offsets = append(req.Offsets, &ferryv1.GroupOffset{Topic: cn.opts.Topic, Queue: p.queue, Offset: p.next})
		}
	}
	if len(req.Offsets) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := cn.c.rpc.CommitOffsets(cctx, req, grpc.WaitForReady(true)); err != nil {
		return cn.c.callError("commit offsets", err)
	}
	for _, p := range pos {
		p.committed = p.next
	}
	return nil
}

// commitAndLog commits during Run; a failure is retried at the next commit.
func (cn *Consumer) commitAndLog(ctx context.Context, pos []*position) {
	if err := cn.commit(ctx, pos); err != nil && ctx.Err() == nil {
		cn.c.log.Warn("ferry consumer: commit failed; retrying later", "topic", cn.opts.Topic, "group", cn.opts.Group, "error", err)
	}
}

// Lag is how many messages of the consumer's queues the group has not
// committed yet: the sum over queues of end minus the committed offset (or
// minus start when the group never committed or retention passed it).
func (cn *Consumer) Lag(ctx context.Context) (int64, error) {
	queues, err := cn.queues(ctx)
	if err != nil {
		return 0, err
	}
	offs, err := cn.getOffsets(ctx, queues)
	if err != nil {
		return 0, err
	}
	var lag int64
	for _, o := range offs {
		lag += o.End - max(o.Committed, o.Start)
	}
	return lag, nil
}

func dirty(pos []*position) bool {
	for _, p := range pos {
		if p.next != p.committed {
			return true
		}
	}
	return false
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	return errors.Is(err, sdk.ErrNotFound) || errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, sdk.ErrConfig)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func byQueueOf(pos []*position) map[int32]*position {
	m := make(map[int32]*position, len(pos))
	for _, p := range pos {
		m[p.queue] = p
	}
	return m
}
