package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	DefaultMaxMessages       = 1024
	DefaultMaxBytes          = 16 << 20
	DefaultMaxWait           = time.Second
	DefaultCommitInterval    = 100 * time.Millisecond
	DefaultMaxInflight       = 4096
	DefaultConcurrency       = 1
	DefaultHeartbeatInterval = time.Second
	DefaultSessionTimeout    = 6 * time.Second
	// CommitEachBatch in ConsumerOptions.CommitInterval commits as soon as
	// messages are settled (0 means the default interval).
	CommitEachBatch time.Duration = -1

	// callTimeout bounds each call to the broker but Fetch (whose bound is
	// MaxWait plus this), including waiting for a lost connection.
	callTimeout = 10 * time.Second
	// finalCommitTimeout bounds the commit when a consumer stops.
	finalCommitTimeout = 5 * time.Second
	// retryBase and retryMax bound the waits between retries of a failed
	// broker call.
	retryBase = 100 * time.Millisecond
	retryMax  = 5 * time.Second
	// retryPollInterval is how often a pull consumer's Fetch looks at the
	// group's retry topic (without waiting there).
	retryPollInterval = 100 * time.Millisecond
)

// ConsumerOptions configure a Consumer. Topic and Group are required; the
// zero value of every other field is its default.
type ConsumerOptions struct {
	// Topic to consume. Required.
	Topic string
	// Group is the consumer group whose committed offsets the consumer
	// starts from and advances. Required. One group may be used on several
	// topics (a consumer per topic): each topic's queues are split among
	// the members that consume it. The group's retry topic is shared by
	// all its members, so a member may be handed a retried message of
	// another topic of its group (Delivery.Topic names it).
	// May be empty with Ephemeral: the consumer then gets a group of its
	// own, "ephemeral-<random>" (Consumer.Group names it).
	Group string
	// Ephemeral joins Group as an ephemeral group: the broker deletes the
	// group — its committed offsets and its %RETRY% and %DLQ% topics — once
	// its last member has been gone for the node's
	// node.ephemeral_group_ttl (default 30 s); a member that joins before
	// keeps it. A group is ephemeral or durable for all its members: the
	// broker refuses an ephemeral member in a group with stored state, a
	// durable member in an ephemeral group (sdk.ErrInvalidArgument), and
	// ephemeral members on a node with a replication plugin
	// (errors.ErrUnsupported). The error comes from Launch or Start.
	Ephemeral bool
	// Member names this consumer in its group; unique per live consumer.
	// Default: "<hostname>-<pid>-<random>".
	Member string
	// Queues, when set, are the queues of Topic this consumer reads, alone:
	// it does not join the group's rebalancing nor read its retry topic,
	// and retries failed messages in place (as in orderly mode). nil means
	// the consumer's share of the group's queues.
	Queues []int32
	// Broadcast makes every member consume every message: each member is a
	// group of its own, "<Group>@<Member>", with its own offsets, retry
	// topic and dead-letter queue (so give Member a stable value to resume
	// where it stopped).
	Broadcast bool
	// Orderly keeps each queue's order (push only: Run and Consume): one
	// message of a queue is processed at a time, and a failing message is
	// retried in place, holding up its queue, up to Retry.MaxAttempts
	// attempts; then it is dead-lettered and the queue moves on. Default:
	// concurrent, where a failed message is retried later through the
	// group's retry topic and never holds up the others.
	Orderly bool
	// Concurrency is how many goroutines call the handler (push; default
	// DefaultConcurrency).
	Concurrency int
	// MaxInflight bounds the messages fetched but not yet settled (flow
	// control; default DefaultMaxInflight): past it the consumer stops
	// fetching until handlers catch up.
	MaxInflight int
	// Retry is the policy for failed messages: how many attempts and how
	// long between them (default: 16 attempts, RocketMQ's delay levels).
	Retry RetryPolicy
	// MaxMessages bounds one fetch (default DefaultMaxMessages).
	MaxMessages int
	// MaxBytes bounds one fetch, roughly (default DefaultMaxBytes).
	MaxBytes int64
	// MaxWait is how long a fetch waits at the broker for new messages
	// (long poll; default DefaultMaxWait).
	MaxWait time.Duration
	// CommitInterval is how often settled offsets are committed (default
	// DefaultCommitInterval; CommitEachBatch commits at once). What is
	// processed but not yet committed when a consumer dies is delivered
	// again.
	CommitInterval time.Duration
	// StartAt applies to queues of Topic the group has never committed
	// (default StartCommittedOrEarliest). The retry topic always starts at
	// its earliest message.
	StartAt StartAt
	// OnCorrupt is what the consumer does with a message the broker cannot
	// read because its stored record is damaged (default CorruptStop). A
	// damaged record holds up its own queue only, never the others.
	OnCorrupt CorruptPolicy
	// HeartbeatInterval is how often the consumer tells the broker it is
	// alive and re-computes its share of the queues (default 1s).
	HeartbeatInterval time.Duration
	// SessionTimeout is how long the broker keeps a member that stopped
	// heartbeating before its queues go to the others (default 6s).
	SessionTimeout time.Duration
}

// Handler processes one message (the simple form; see Run).
type Handler func(ctx context.Context, m *ferryv1.Message) error

// DeliveryHandler processes one delivery (see Consume). A nil return
// acknowledges it; an error fails the attempt: it is retried as
// ConsumerOptions.Retry says, and dead-lettered when the attempts run out or
// the error is Permanent. A handler may settle the delivery itself (Ack,
// Nack, Release, Retry, DeadLetter); then what it returns is ignored.
type DeliveryHandler func(ctx context.Context, d *Delivery) error

// Consumer consumes a topic for a consumer group, at least once.
//
// A consumer joins its group (heartbeats to the broker) and takes its share
// of the topic's queues, and of the group's retry topic's: the members sort
// the live member list and split each topic's queues evenly in order
// (RocketMQ's AllocateMessageQueueAveragely), re-computed on every
// heartbeat, so queues move when a member joins, leaves or stops
// heartbeating. A queue that moves is processed from the group's committed
// offset by its new owner: messages processed but not yet committed by the
// old one are delivered again (duplicates, never loss).
//
// Offsets: each queue commits the offset of its lowest unsettled message, so
// a commit never skips a message that was not processed.
//
// Push (Run, Consume): the consumer fetches ahead, up to MaxInflight
// unsettled messages, and calls the handler from Concurrency goroutines.
// Pull (Start, Fetch, Close): the application long-polls batches and settles
// each delivery with Ack or Nack; once Fetch returned a batch, the next one
// is prefetched while the application works on it.
type Consumer struct {
	c       *Client
	opts    ConsumerOptions
	running atomic.Bool

	stats consumerCounters

	mu sync.Mutex
	rt *runtime // while started
}

// NewConsumer checks opts and returns a consumer; nothing is fetched before
// Run, Consume or Start.
func (c *Client) NewConsumer(opts ConsumerOptions) (*Consumer, error) {
	var errs []error
	if opts.Topic == "" {
		errs = append(errs, errors.New("Topic is required"))
	}
	if opts.Group == "" && opts.Ephemeral {
		var b [6]byte
		_, _ = rand.Read(b[:])
		opts.Group = "ephemeral-" + hex.EncodeToString(b[:])
	}
	if opts.Group == "" {
		errs = append(errs, errors.New("Group is required (or Ephemeral, for a group of its own)"))
	}
	if opts.Queues != nil {
		if len(opts.Queues) == 0 {
			errs = append(errs, errors.New("Queues is empty (nil means the group's share)"))
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
	if opts.MaxMessages < 0 || opts.MaxBytes < 0 || opts.MaxWait < 0 || opts.MaxInflight < 0 || opts.Concurrency < 0 ||
		opts.HeartbeatInterval < 0 || opts.SessionTimeout < 0 || opts.Retry.MaxAttempts < 0 {
		errs = append(errs, errors.New("MaxMessages, MaxBytes, MaxWait, MaxInflight, Concurrency, HeartbeatInterval, SessionTimeout and Retry.MaxAttempts must not be negative"))
	}
	for _, d := range opts.Retry.Delays {
		if d < 0 {
			errs = append(errs, fmt.Errorf("Retry.Delays: %s is negative", d))
		}
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
	if opts.Member == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		opts.Member = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
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
	if opts.MaxInflight == 0 {
		opts.MaxInflight = DefaultMaxInflight
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = DefaultSessionTimeout
	}
	return &Consumer{c: c, opts: opts}, nil
}

// Member is the consumer's id in its group.
func (cn *Consumer) Member() string { return cn.opts.Member }

// Group is the group whose offsets the consumer commits: ConsumerOptions.Group,
// or in broadcast mode the member's own "<Group>@<Member>".
func (cn *Consumer) Group() string {
	if cn.opts.Broadcast {
		return cn.opts.Group + "@" + cn.opts.Member
	}
	return cn.opts.Group
}

// Run is the simple form of Consume: it calls handler for each message, one
// at a time, in offset order within each queue (orderly mode, Concurrency
// 1), until ctx ends; then it commits what was processed and returns nil, or
// the error of that last commit. A handler error retries the message in
// place, after OrderlyDelays (100ms doubling to 5s), up to Retry.MaxAttempts
// attempts; then the message goes to the group's dead-letter queue and its
// queue moves on.
//
// Losing the broker is not an error: Run reconnects with backoff and goes on
// from where it was, skipping nothing; it only moves past messages the broker
// no longer has (retention), and logs it. Run returns early on errors
// retrying cannot fix (the topic does not exist: sdk.ErrNotFound; the Client
// was closed: sdk.ErrClosed). One Run, Consume or Start at a time per
// Consumer.
func (cn *Consumer) Run(ctx context.Context, handler Handler) error {
	if handler == nil {
		return fmt.Errorf("ferry consumer: %w: nil handler", sdk.ErrInvalidArgument)
	}
	return cn.consume(ctx, func(ctx context.Context, d *Delivery) error { return handler(ctx, d.Message) }, true)
}

// Consume calls handler for each delivery until ctx ends (push), then waits
// for the handlers in progress, commits what was settled, leaves the group
// and returns nil, or the error of that last commit. Deliveries handlers were
// still holding when ctx ended are left unsettled: the group gets them again.
//
// In concurrent mode (the default) Concurrency goroutines call handler, and
// a failed message is retried through the group's retry topic after its
// delay while the others go on; in orderly mode see ConsumerOptions.Orderly.
// Errors are as for Run.
func (cn *Consumer) Consume(ctx context.Context, handler DeliveryHandler) error {
	if handler == nil {
		return fmt.Errorf("ferry consumer: %w: nil handler", sdk.ErrInvalidArgument)
	}
	return cn.consume(ctx, handler, false)
}

func (cn *Consumer) consume(ctx context.Context, handler DeliveryHandler, simple bool) error {
	rt, err := cn.startPush(ctx, simple)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return rt.runPush(handler)
}

// startPush joins the group for push consumption (Consume, Run, Launch).
func (cn *Consumer) startPush(ctx context.Context, simple bool) (*runtime, error) {
	if !cn.running.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("ferry consumer: %w: already running", sdk.ErrInvalidArgument)
	}
	rt := cn.newRuntime(ctx, simple)
	rt.pushing = true
	if err := rt.start(); err != nil {
		rt.stop()
		cn.running.Store(false)
		return nil, err
	}
	return rt, nil
}

// runPush calls handler until rt ends, then stops it (the final commit).
func (rt *runtime) runPush(handler DeliveryHandler) error {
	defer rt.cn.running.Store(false)
	err := rt.push(handler)
	return errors.Join(err, rt.stop())
}

// Launch is Consume started synchronously: it joins the group and returns
// once the consumer owns its first share of the queues, or with the error
// that kept it from starting (the topic does not exist: sdk.ErrNotFound;
// the broker refused the membership; the Client is closed: sdk.ErrClosed;
// ctx ended first: ctx's error). Then it consumes in the background until
// ctx ends, and done receives what Consume would have returned (the error
// of the final commit, or one retrying cannot fix) and is closed.
func (cn *Consumer) Launch(ctx context.Context, handler DeliveryHandler) (done <-chan error, err error) {
	if handler == nil {
		return nil, fmt.Errorf("ferry consumer: %w: nil handler", sdk.ErrInvalidArgument)
	}
	rt, err := cn.startPush(ctx, false)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ferry consumer: starting: %w", ctx.Err())
		}
		return nil, err
	}
	ch := make(chan error, 1)
	go func() {
		ch <- rt.runPush(handler)
		close(ch)
	}()
	return ch, nil
}

// Start joins the group and begins its heartbeats and commits, for pull
// consumption with Fetch; Close ends it. ctx bounds the consumer's life: when
// it ends, Fetch returns and the consumer stops as Close does.
func (cn *Consumer) Start(ctx context.Context) error {
	if !cn.running.CompareAndSwap(false, true) {
		return fmt.Errorf("ferry consumer: %w: already running", sdk.ErrInvalidArgument)
	}
	rt := cn.newRuntime(ctx, false)
	if err := rt.start(); err != nil {
		rt.stop()
		cn.running.Store(false)
		return err
	}
	cn.mu.Lock()
	cn.rt = rt
	cn.mu.Unlock()
	return nil
}

// Fetch long-polls for up to max messages (pull): it returns as soon as some
// are there, or an empty batch after MaxWait (or when ctx ends, with ctx's
// error). The application settles each delivery with Ack or Nack; those it
// leaves unsettled hold back the group's committed offset and are delivered
// again after Close (or when their queue moves to another member). At most
// MaxInflight deliveries are unsettled at a time: past it Fetch waits.
// Call Fetch from one goroutine at a time; settle from any.
func (cn *Consumer) Fetch(ctx context.Context, max int) ([]*Delivery, error) {
	cn.mu.Lock()
	rt := cn.rt
	cn.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("ferry consumer: %w: Fetch before Start", sdk.ErrInvalidArgument)
	}
	return rt.pull(ctx, max)
}

// Close stops a started consumer: it commits what was settled and leaves the
// group. Unsettled deliveries are delivered again later. Safe to call more
// than once.
func (cn *Consumer) Close() error {
	cn.mu.Lock()
	rt := cn.rt
	cn.rt = nil
	cn.mu.Unlock()
	if rt == nil {
		return nil
	}
	defer cn.running.Store(false)
	return rt.stop()
}

// ConsumerStats counts what a consumer did since it was created.
type ConsumerStats struct {
	Delivered    int64 // handler calls and Fetch results, retries in place included
	Acked        int64
	Retried      int64 // sent to the retry topic, or retried in place
	DeadLettered int64
	Released     int64 // given back with Release, not counted as attempts
	Inflight     int64 // fetched and not settled now
	Queues       int   // queues owned now (topic and retry topic)
	// Damaged records the broker could not read (OnCorrupt): offsets
	// skipped, and queues stopped.
	CorruptSkipped int64
	CorruptStopped int64
}

type consumerCounters struct {
	delivered, acked, retried, dead atomic.Int64
	corruptSkipped, corruptStopped  atomic.Int64
	released                        atomic.Int64
}

// CorruptPolicy says what a consumer does with a message the broker answers
// CORRUPT for: its stored record is damaged (see `ferry storage check`).
type CorruptPolicy int

const (
	// CorruptStop stops consuming that queue at that offset, with an
	// error logged (topic, queue, offset, reason) and counted in
	// ConsumerStats.CorruptStopped; the group's committed offset stays
	// before it, and the consumer's other queues go on. A consumer
	// started again tries the queue again.
	CorruptStop CorruptPolicy = iota
	// CorruptSkip moves past the offset: logged with the offset and the
	// reason, counted in ConsumerStats.CorruptSkipped, and the group's
	// committed offset moves past it like past a consumed message.
	CorruptSkip
	// CorruptDeadLetter is CorruptSkip that first stores a placeholder in
	// the group's dead-letter queue: no body (it could not be read), the
	// origin topic, queue and offset in its headers, dead reason
	// "corrupt" and the broker's error as the last error. The consumer
	// moves past the offset only once the placeholder is stored (a failed
	// store is tried again at the next fetch; its id is derived from the
	// offset, so a retry is stored once).
	CorruptDeadLetter
)

// DeadReasonCorrupt is the dead reason (sdk.HeaderDeadReason) of the
// placeholder CorruptDeadLetter stores for a damaged record.
const DeadReasonCorrupt = "corrupt"

// ParseCorruptPolicy reads a policy by its name in pipelines and flags:
// stop, skip or dlq.
func ParseCorruptPolicy(s string) (CorruptPolicy, error) {
	switch s {
	case "", "stop":
		return CorruptStop, nil
	case "skip":
		return CorruptSkip, nil
	case "dlq":
		return CorruptDeadLetter, nil
	}
	return 0, fmt.Errorf("corrupt policy %q: must be stop, skip or dlq", s)
}

// Stats returns the consumer's counters.
func (cn *Consumer) Stats() ConsumerStats {
	s := ConsumerStats{
		Delivered: cn.stats.delivered.Load(), Acked: cn.stats.acked.Load(),
		Retried: cn.stats.retried.Load(), DeadLettered: cn.stats.dead.Load(), Released: cn.stats.released.Load(),
		CorruptSkipped: cn.stats.corruptSkipped.Load(), CorruptStopped: cn.stats.corruptStopped.Load(),
	}
	cn.mu.Lock()
	rt := cn.rt
	cn.mu.Unlock()
	if rt != nil {
		rt.mu.Lock()
		s.Inflight = int64(rt.inflight)
		s.Queues = len(rt.lanes)
		rt.mu.Unlock()
	}
	return s
}

// DLQDepth is the number of messages in the consumer's group's dead-letter
// queue that were neither purged nor re-driven (see Client.DLQDepth).
func (cn *Consumer) DLQDepth(ctx context.Context) (int64, error) {
	return cn.c.DLQDepth(ctx, cn.Group())
}

// Lag is how many messages of the consumer's topic the group has not
// committed yet: the sum over the topic's queues (or ConsumerOptions.Queues)
// of end minus the committed offset (or minus start when the group never
// committed or retention passed it). Messages waiting in the retry topic are
// not counted.
func (cn *Consumer) Lag(ctx context.Context) (int64, error) {
	queues := cn.opts.Queues
	if queues == nil {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		cn.c.forgetTopic(cn.opts.Topic)
		n, err := cn.c.queueCount(cctx, cn.opts.Topic)
		if err != nil {
			return 0, err
		}
		queues = allQueues(n)
	}
	refs := make([]*ferryv1.QueueRef, len(queues))
	for i, q := range queues {
		refs[i] = &ferryv1.QueueRef{Topic: cn.opts.Topic, Queue: q}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	offs, err := cn.c.GetOffsets(cctx, cn.Group(), refs)
	if err != nil {
		return 0, err
	}
	var lag int64
	for _, o := range offs {
		lag += o.End - max(o.Committed, o.Start)
	}
	return lag, nil
}

func allQueues(n int32) []int32 {
	qs := make([]int32, n)
	for i := range qs {
		qs[i] = int32(i)
	}
	return qs
}

// permanent reports errors that retrying cannot fix.
func permanent(err error) bool {
	return errors.Is(err, sdk.ErrNotFound) || errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, sdk.ErrConfig) ||
		errors.Is(err, sdk.ErrUnauthenticated) || errors.Is(err, sdk.ErrPermissionDenied)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
