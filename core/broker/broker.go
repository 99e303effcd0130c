// Package broker is Ferry's broker core: it checks and routes producers'
// batches to the storage plugin (grouping them into larger appends), answers
// consumers' long-polling fetches, and keeps consumer groups' offsets. It never
// touches files or client sockets itself: storage and transport are plugins.
//
// Storage is reached through a supervised plugin instance: when the storage
// process dies, appends whose outcome is unknown are sent again, in their
// original order, to the new process; the store de-duplicates them by message
// id, so nothing acknowledged is lost and nothing is stored twice.
package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/admin"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
)

// Limits and defaults of the broker core.
const (
	DefaultMaxMessageBytes = 4 << 20
	DefaultMaxHeaderBytes  = 64 << 10
	maxBatchMessages       = 4096    // per storage append
	maxBatchBytes          = 4 << 20 // per storage append
	maxInflightAppends     = 64      // storage appends awaiting durability
	storageCallTimeout     = 30 * time.Second
	maxFetchWait           = 30 * time.Second
	defaultFetchMessages   = 256
	defaultFetchBytes      = 4 << 20
)

// Topic declares a topic and its queue count.
type Topic struct {
	Name   string
	Queues int
	// Settings are the topic's own (retention, max message bytes), nil or
	// zero fields when unset (topicsettings.go).
	Settings *sdk.TopicSettings
}

// Options configure a Broker.
type Options struct {
	Pipeline string
	Node     string
	Role     string
	Address  string  // where clients reach this node, for metadata
	Topics   []Topic // the pipeline's, the declared baseline (see OpenTopics)
	// DataDir holds the node's topic metadata (TopicsFile); empty: none
	// is kept, the topics are Topics.
	DataDir string
	Logger  hclog.Logger
	// Replication is the live replication plugin; nil for none. See
	// replicate.go.
	Replication StorageSource
	// Metrics, when set, counts appends, deliveries and retries.
	Metrics *admin.Metrics
	// Groups are the consumer groups known from the start (the pipeline's
	// flows); others become known as they appear (see groupExists).
	Groups []string
	// EphemeralGroupTTL is how long an ephemeral group stays after its
	// last member left (ephemeral.go); 0: DefaultEphemeralGroupTTL.
	EphemeralGroupTTL time.Duration
	// AutoCreateQueues > 0 makes a producer's first send to a topic the
	// node does not have create it with that many queues (Metadata with
	// auto_create, and Produce), as CreateTopic does; 0: such a send is
	// refused (not found). See autoCreate.
	AutoCreateQueues int32
}

// StorageSource gives the live storage plugin; a pluginhost.Instance is one.
type StorageSource interface {
	// Current returns the live plugin (nil while it restarts), its
	// generation, and a channel closed when the generation changes.
	Current() (sdk.Plugin, uint64, <-chan struct{})
	// Next waits for a generation newer than gen.
	Next(ctx context.Context, gen uint64) (sdk.Plugin, uint64, error)
	// Broken reports generation gen as unusable, to be replaced.
	Broken(gen uint64)
}

// Broker implements sdk.Core over a storage plugin.
type Broker struct {
	opts    Options
	log     hclog.Logger
	storage StorageSource
	app     *appender
	groups  *groups
	epochs  *epochs
	repl    *replicator // nil without replication
	role    roleState

	metaMu sync.Mutex // one change of the topic metadata at a time (topicadmin.go)
	// retentionMu: one hand-over of the topics' retention to the store at
	// a time (topicsettings.go).
	retentionMu sync.Mutex
	// topicAdminMu: one replicated topic change at a time, from its
	// check to its end (topicrepl.go); taken before metaMu, never after.
	topicAdminMu sync.Mutex
	topicsMu     sync.RWMutex
	topics       map[string]*topic // declared ones, plus existing groups' retry and DLQ topics once used

	knownMu  sync.Mutex
	known    map[string]bool // groups that exist (see groupExists); grows only with stored state
	fetchers *recentSet      // groups that fetched lately, bounded

	full fullState // the storage refuses appends for a full disk (full.go)
	eph  ephemeralGroups
	// gates orders a group's deletion after its commits under way (groupgate.go)
	gates groupGates
	// gens are the consumer groups' generations (groupgen.go)
	gens groupGens

	closeOnce sync.Once
	drainOnce sync.Once
	draining  chan struct{} // closed by Drain: long-poll fetches answer at once
}

var _ sdk.Core = (*Broker)(nil)

type topic struct {
	name     string
	nqueues  atomic.Int32 // grows by AddQueues while the topic is in use
	internal bool         // a group's retry or dead-letter topic
	// producing counts the produces of it under way; deleted is set by
	// DeleteTopic, which then waits for producing to drop to 0, so that no
	// append lands in the store after it deleted the topic's data (see
	// beginProduce).
	producing atomic.Int64
	deleted   atomic.Bool
	// settings are the topic's own (topicsettings.go), nil when none;
	// replaced whole by a change, under metaMu.
	settings atomic.Pointer[sdk.TopicSettings]
	mu       sync.Mutex
	signal   chan struct{} // closed and replaced when messages become readable
}

func newTopic(name string, queues int32, internal bool) *topic {
	t := &topic{name: name, internal: internal, signal: make(chan struct{})}
	t.nqueues.Store(queues)
	return t
}

// beginProduce counts a produce of t under way, unless t was deleted;
// endProduce ends it. (A produce adds itself before it looks at deleted,
// and DeleteTopic sets deleted before it looks at producing: one of the two
// sees the other.)
func (t *topic) beginProduce() bool {
	t.producing.Add(1)
	if t.deleted.Load() {
		t.producing.Add(-1)
		return false
	}
	return true
}

func (t *topic) endProduce() { t.producing.Add(-1) }

// queues is the topic's queue count now.
func (t *topic) queues() int32 { return t.nqueues.Load() }

func (t *topic) wait() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.signal
}

func (t *topic) notify() {
	t.mu.Lock()
	close(t.signal)
	t.signal = make(chan struct{})
	t.mu.Unlock()
}

// New returns a broker; Start begins appending.
func New(opts Options, storage StorageSource) *Broker {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	b := &Broker{opts: opts, log: opts.Logger, storage: storage, topics: map[string]*topic{}, groups: newGroups(), epochs: newEpochs(), known: map[string]bool{},
		fetchers: newRecentSet(maxRecentFetchers), draining: make(chan struct{})}
	b.full.done = make(chan struct{})
	b.gens.dir = opts.DataDir
	for _, g := range opts.Groups {
		b.known[g] = true
	}
	for _, t := range opts.Topics {
		b.topics[t.Name] = newTopic(t.Name, int32(t.Queues), false)
	}
	b.app = newAppender(b)
	b.eph.stop, b.eph.done = make(chan struct{}), make(chan struct{})
	b.loadEphemeral()
	b.role.set(&sdk.SetRoleRequest{Role: opts.Role})
	if opts.Replication != nil {
		b.repl = newReplicator(b, opts.Replication)
	}
	return b
}

// Start runs the appender until Close.
func (b *Broker) Start() {
	go b.app.run()
	b.eph.started.Store(true)
	go b.runEphemeral()
}

// Drain tells the broker that the node is stopping: long-poll fetches
// waiting for messages answer at once with what they have (usually
// nothing), and later ones do not wait, so that they do not hold the
// transport's graceful drain for up to their max_wait. Everything else goes
// on until Close. The engine calls it first when it stops; safe to call
// more than once.
func (b *Broker) Drain() { b.drainOnce.Do(func() { close(b.draining) }) }

// Close stops taking appends and waits, up to ctx, for those accepted to be
// answered.
func (b *Broker) Close(ctx context.Context) error {
	var err error
	b.closeOnce.Do(func() {
		close(b.full.done)
		close(b.eph.stop)
		err = b.app.close(ctx)
		if b.eph.started.Load() {
			select {
			case <-b.eph.done:
			case <-ctx.Done():
			}
		}
	})
	return err
}

// clientTopic is topic for a client's request. A group's retry or
// dead-letter topic is kept (like a declared one) only for a group that
// exists (groupExists); for the group's own request (asker, the request's
// group: a consumer reading its retry topic before it commits) or a group
// that fetched lately (a consumer sending its first retry) it is a transient
// topic, not remembered (so too for the DLQ tools' cursor); for any other
// it is not found. So requests naming
// made-up groups create nothing. Called by every request handler.
func (b *Broker) clientTopic(ctx context.Context, name, asker string) (*topic, error) {
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t != nil {
		return t, nil
	}
	group, queues, ok := sdk.InternalTopic(name)
	if !ok {
		return b.topic(name) // not found
	}
	exists, err := b.groupExists(ctx, group)
	if err != nil {
		return nil, err
	}
	switch {
	case exists:
		return b.topic(name)
	case group == asker || asker == sdk.DLQTopic(group) || b.fetchers.has(group):
		// (The dead-letter cursor of the DLQ tools is the group named as
		// the topic: client.DLQCursorGroup.)
		return newTopic(name, queues, true), nil
	}
	return nil, fmt.Errorf("%w: unknown topic %q: group %q does not exist here (a group's retry and dead-letter topics exist once it consumes: live members, committed offsets, fetches, or messages in them)", sdk.ErrNotFound, name, group)
}

// groupKnown records that group exists: it committed offsets, has a live
// member, or stored messages in its internal topics.
func (b *Broker) groupKnown(group string) {
	b.knownMu.Lock()
	b.known[group] = true
	b.knownMu.Unlock()
}

// groupExists reports whether group exists: it is a pipeline's group, it has
// live members or committed here, or storage holds offsets committed by it
// or messages in its retry or dead-letter topic (asked once per group found;
// a group not found is not remembered, so made-up names cost no memory).
func (b *Broker) groupExists(ctx context.Context, group string) (bool, error) {
	b.knownMu.Lock()
	known := b.known[group]
	b.knownMu.Unlock()
	if known || len(b.groups.live(group)) > 0 {
		return true, nil
	}
	var refs []*sdk.QueueRef
	b.topicsMu.RLock()
	for _, t := range b.topics {
		if !t.internal {
			for q := range t.queues() {
				refs = append(refs, &sdk.QueueRef{Topic: t.name, Queue: q})
			}
		}
	}
	b.topicsMu.RUnlock()
	internal := len(refs)
	for _, name := range []string{sdk.RetryTopic(group), sdk.DLQTopic(group)} {
		_, queues, _ := sdk.InternalTopic(name)
		for q := range queues {
			refs = append(refs, &sdk.QueueRef{Topic: name, Queue: q})
		}
	}
	var offs []*sdk.QueueOffsets
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	if err := b.storageCall(cctx, func(s sdk.Storage) (err error) {
		offs, err = s.GetOffsets(cctx, group, refs)
		return err
	}); err != nil {
		return false, err
	}
	for i, o := range offs {
		if o.Committed >= 0 || (i >= internal && o.End > o.Start) {
			b.groupKnown(group)
			return true, nil
		}
	}
	return false, nil
}

// topic returns a declared topic, or a group's retry or dead-letter topic
// (created on first use, without asking whether the group exists: for the
// broker's own paths, replication and the appender; requests use
// clientTopic).
func (b *Broker) topic(name string) (*topic, error) { return b.topicAt(context.Background(), name) }

// topicAt is topic with the signature of clientTopic.
func (b *Broker) topicAt(_ context.Context, name string) (*topic, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty topic name", sdk.ErrInvalidArgument)
	}
	b.topicsMu.RLock()
	t := b.topics[name]
	b.topicsMu.RUnlock()
	if t != nil {
		return t, nil
	}
	if _, queues, ok := sdk.InternalTopic(name); ok {
		b.topicsMu.Lock()
		defer b.topicsMu.Unlock()
		if t = b.topics[name]; t == nil {
			t = newTopic(name, queues, true)
			b.topics[name] = t
		}
		return t, nil
	}
	return nil, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, name)
}

func (b *Broker) checkQueue(t *topic, q int32) error {
	if n := t.queues(); q < 0 || q >= n {
		return fmt.Errorf("%w: topic %q has queues 0..%d, got queue %d", sdk.ErrInvalidArgument, t.name, n-1, q)
	}
	return nil
}

var tracer = telemetry.Tracer(telemetry.ComponentBroker)

// Produce stores a batch of messages of one topic and answers with their
// offsets and the exact status of the append.
func (b *Broker) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	if len(req.Messages) == 0 {
		return nil, fmt.Errorf("%w: empty batch", sdk.ErrInvalidArgument)
	}
	if err := b.role.checkProduce(); err != nil {
		return nil, err
	}
	topicName := req.Messages[0].Topic
	t, err := b.clientTopic(ctx, topicName, "")
	if errors.Is(err, sdk.ErrNotFound) {
		if at, aerr := b.autoCreate(ctx, topicName); at != nil || aerr != nil {
			t, err = at, aerr
		}
	}
	if err != nil {
		return nil, err
	}
	if !t.beginProduce() {
		return nil, fmt.Errorf("%w: unknown topic %q (deleted)", sdk.ErrNotFound, topicName)
	}
	defer t.endProduce()
	now := time.Now().UnixNano()
	for _, m := range req.Messages {
		if m.Topic != topicName {
			return nil, fmt.Errorf("%w: one batch must hold one topic, got %q and %q", sdk.ErrInvalidArgument, topicName, m.Topic)
		}
		if err := b.checkQueue(t, m.Queue); err != nil {
			return nil, err
		}
		if m.Id == "" {
			return nil, fmt.Errorf("%w: message without an id", sdk.ErrInvalidArgument)
		}
		if max := t.maxBody(); int64(len(m.Body)) > max {
			if max < DefaultMaxMessageBytes {
				return nil, fmt.Errorf("%w: message %q body is %d bytes, more than topic %q's max_message_bytes of %d", sdk.ErrInvalidArgument, m.Id, len(m.Body), topicName, max)
			}
			return nil, fmt.Errorf("%w: message %q body is %d bytes, more than the limit of %d", sdk.ErrInvalidArgument, m.Id, len(m.Body), DefaultMaxMessageBytes)
		}
		hdr := 0
		for k, v := range m.Headers {
			hdr += len(k) + len(v)
		}
		if hdr > DefaultMaxHeaderBytes {
			return nil, fmt.Errorf("%w: message %q headers are %d bytes, more than the limit of %d", sdk.ErrInvalidArgument, m.Id, hdr, DefaultMaxHeaderBytes)
		}
		if m.BornUnixNano == 0 {
			m.BornUnixNano = now
		}
	}
	// A span in each sampled message's trace, under its transport.receive
	// (req.Traced*), and the batch span, under the transport's.
	var hop telemetry.Hop
	if telemetry.Enabled() {
		in := telemetry.Traced{Index: req.TracedIndex, Span: req.TracedSpan}
		if in.Len() == 0 && !trace.SpanContextFromContext(ctx).IsValid() {
			in = telemetry.Sampled(req.Messages) // no traced transport before: the producers' spans are the parents
		}
		hop = telemetry.StartHop(ctx, tracer, telemetry.SpanBrokerAppend, req.Messages, in,
			trace.WithAttributes(telemetry.AttrPipeline.String(b.opts.Pipeline), telemetry.AttrTopic.String(topicName),
				telemetry.AttrQueue.Int(int(req.Messages[0].Queue))))
		ctx = hop.Ctx
		defer hop.End()
	}
	span := &hop
	started := time.Now()
	if err := b.epochs.begin(req.Messages, func(refs []*sdk.QueueRef) (offs []*sdk.QueueOffsets, err error) {
		err = b.storageCall(ctx, func(s sdk.Storage) (err error) {
			offs, err = s.GetOffsets(ctx, "", refs)
			return err
		})
		return offs, err
	}); err != nil {
		span.RecordError(err)
		return nil, err
	}
	if b.repl != nil {
		if first, err := b.repl.replicateFirst(); err != nil {
			return nil, err
		} else if first {
			return b.repl.produce(ctx, req)
		}
	}
	offsets, status, err := b.app.append(ctx, req.Messages, hop.Traced())
	if err != nil {
		span.RecordError(err)
		return nil, err
	}
	if t.internal {
		if group, _, _ := sdk.InternalTopic(topicName); group != "" {
			b.groupKnown(group) // it has messages stored now
		}
	}
	if m := b.opts.Metrics; m != nil {
		m.Appended(topicName, len(req.Messages))
		m.AppendLatency(time.Since(started))
		if t.internal {
			if group, _, _ := sdk.InternalTopic(topicName); group != "" && topicName == sdk.RetryTopic(group) {
				m.Retried(group, len(req.Messages))
			}
		}
	}
	if span.Recording() && len(offsets) > 0 {
		span.SetOffsets(offsets)
		span.SetAttributes(telemetry.AttrStatus.String(status.String()))
	}
	return &sdk.ProduceResponse{Seq: req.Seq, Offsets: offsets, Status: status}, nil
}

// storageCall runs fn on the live storage, waiting for a restarted process
// when the current one is gone, until ctx ends.
func (b *Broker) storageCall(ctx context.Context, fn func(sdk.Storage) error) error {
	impl, gen, _ := b.storage.Current()
	for {
		if impl == nil {
			var err error
			if impl, gen, err = b.storage.Next(ctx, gen); err != nil {
				return fmt.Errorf("%w: storage: %v", sdk.ErrUnavailable, err)
			}
		}
		err := fn(impl.(sdk.Storage))
		if err == nil || !errors.Is(err, sdk.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		b.storage.Broken(gen)
		impl = nil
	}
}

// CommitOffsets records a group's next offsets and, on a node that takes
// produce, hands them to the replication plugin: through its log, answered
// once committed there, when the plugin is an sdk.OffsetCommitter (raft);
// otherwise best effort, in the background (see replicate.go).
//
// A client's commit past a queue's end is refused (ErrInvalidArgument): the
// group would never see the messages stored below it. Commits received
// through replication skip that check (replicaCore): a replica may hold a
// group's offsets before the messages they follow.
func (b *Broker) CommitOffsets(ctx context.Context, req *sdk.CommitOffsetsRequest) error {
	return b.clientCommit(ctx, req, false)
}

// clientCommit is CommitOffsets, of a client of this node or (forwarded) of
// a raft follower's client (replicaCore.CommitForwarded). A forwarded
// commit was checked against the follower's queue ends already (this
// leader's store may not have applied the entries the follower read yet;
// the log's apply clamps to the ends) and is never forwarded again.
func (b *Broker) clientCommit(ctx context.Context, req *sdk.CommitOffsetsRequest, forwarded bool) error {
	end, err := b.beginCommit(req.Group)
	if err != nil {
		return err
	}
	defer end()
	done, err := b.gates.beginCommit(req.Group)
	if err != nil {
		return err
	}
	defer done()
	// Inside the gate: a deletion raises the generation before it opens
	// the gate again.
	if err := b.checkGeneration(req.Group, req.Generation); err != nil {
		return err
	}
	lookup := func(ctx context.Context, name string) (*topic, error) { return b.clientTopic(ctx, name, req.Group) }
	if !forwarded {
		if err := b.checkCommitEnds(ctx, req.Group, req.Offsets, lookup); err != nil {
			return err
		}
	}
	if err := b.commitOffsets(ctx, req.Group, req.Offsets, lookup); err != nil {
		return err
	}
	if b.repl != nil {
		return b.repl.commit(ctx, req.Group, req.Generation, req.Offsets, forwarded)
	}
	return nil
}

// checkCommitEnds refuses offsets past their queue's end.
func (b *Broker) checkCommitEnds(ctx context.Context, group string, offsets []*sdk.GroupOffset, lookup func(context.Context, string) (*topic, error)) error {
	refs := make([]*sdk.QueueRef, 0, len(offsets))
	for _, o := range offsets {
		t, err := lookup(ctx, o.Topic)
		if err != nil {
			return err
		}
		if err := b.checkQueue(t, o.Queue); err != nil {
			return err
		}
		refs = append(refs, &sdk.QueueRef{Topic: o.Topic, Queue: o.Queue})
	}
	if len(refs) == 0 {
		return nil
	}
	var offs []*sdk.QueueOffsets
	if err := b.storageCall(ctx, func(s sdk.Storage) (err error) {
		offs, err = s.GetOffsets(ctx, "", refs)
		return err
	}); err != nil {
		return err
	}
	for i, o := range offsets {
		if i < len(offs) && o.Offset > offs[i].End {
			return fmt.Errorf("%w: group %q: offset %d of %s/%d is beyond the queue's end %d (a group commits the offset after the last message it consumed)",
				sdk.ErrInvalidArgument, group, o.Offset, o.Topic, o.Queue, offs[i].End)
		}
	}
	return nil
}

// commitOffsets checks and stores a group's next offsets; lookup finds their
// topics (clientTopic for a client's commit, topic for a replicated one).
func (b *Broker) commitOffsets(ctx context.Context, group string, offsets []*sdk.GroupOffset, lookup func(context.Context, string) (*topic, error)) error {
	if group == "" {
		return fmt.Errorf("%w: commit needs a group", sdk.ErrInvalidArgument)
	}
	for _, o := range offsets {
		t, err := lookup(ctx, o.Topic)
		if err != nil {
			return err
		}
		if err := b.checkQueue(t, o.Queue); err != nil {
			return err
		}
		if o.Offset < 0 {
			return fmt.Errorf("%w: negative offset %d for %s/%d", sdk.ErrInvalidArgument, o.Offset, o.Topic, o.Queue)
		}
	}
	if err := b.storageCall(ctx, func(s sdk.Storage) error { return s.CommitOffsets(ctx, group, offsets) }); err != nil {
		return err
	}
	b.epochs.commit(group, offsets)
	b.groupKnown(group)
	return nil
}

// GetOffsets reports queues' start, end and a group's committed offsets.
func (b *Broker) GetOffsets(ctx context.Context, req *sdk.GetOffsetsRequest) (*sdk.GetOffsetsResponse, error) {
	for _, q := range req.Queues {
		t, err := b.clientTopic(ctx, q.Topic, req.Group)
		if err != nil {
			return nil, err
		}
		if err := b.checkQueue(t, q.Queue); err != nil {
			return nil, err
		}
	}
	// The group's generation, read before its offsets: a deletion between
	// the two gives the caller offsets of the new generation with the old
	// one, refused at its commit (not old offsets with the new one).
	var generation uint64
	if req.Group != "" {
		var err error
		if generation, err = b.gens.get(req.Group); err != nil {
			return nil, err
		}
	}
	var offs []*sdk.QueueOffsets
	err := b.storageCall(ctx, func(s sdk.Storage) (err error) {
		offs, err = s.GetOffsets(ctx, req.Group, req.Queues)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, o := range offs {
		offs[i] = b.epochs.stamp(req.Group, o)
		offs[i].Bytes = nil // only the broker says, below
	}
	if req.WithBytes {
		sizes, err := b.queueBytes(ctx, req.Queues)
		if err != nil {
			return nil, err
		}
		for i, n := range sizes {
			if i < len(offs) && n >= 0 {
				offs[i].Bytes = &n
			}
		}
	}
	return &sdk.GetOffsetsResponse{Offsets: offs, Generation: generation}, nil
}

// queueBytes asks the store for its queues' sizes (sdk.QueueSizer): -1 for
// each queue it cannot size, and for all of them from a store without the
// capability.
func (b *Broker) queueBytes(ctx context.Context, queues []*sdk.QueueRef) ([]int64, error) {
	var sizes []int64
	err := b.storageCall(ctx, func(s sdk.Storage) (err error) {
		qs, ok := s.(sdk.QueueSizer)
		if !ok {
			return errors.ErrUnsupported
		}
		sizes, err = qs.QueueBytes(ctx, queues)
		return err
	})
	if errors.Is(err, errors.ErrUnsupported) {
		sizes, err = make([]int64, len(queues)), nil
		for i := range sizes {
			sizes[i] = -1
		}
	}
	if err != nil {
		return nil, err
	}
	if len(sizes) != len(queues) {
		return nil, fmt.Errorf("%w: the store sized %d queues of %d", sdk.ErrUnavailable, len(sizes), len(queues))
	}
	return sizes, nil
}

// Metadata lists topics and this node.
func (b *Broker) Metadata(ctx context.Context, req *sdk.MetadataRequest) (*sdk.MetadataResponse, error) {
	if req.AutoCreate {
		for _, n := range req.Topics {
			if _, err := b.autoCreate(ctx, n); err != nil {
				return nil, err
			}
		}
	}
	resp := &sdk.MetadataResponse{Brokers: b.role.brokers(b.opts.Node, b.opts.Address)}
	leader := b.role.leaderIndex()
	names := req.Topics
	if len(names) == 0 {
		b.topicsMu.RLock()
		for _, t := range b.topics {
			if !t.internal {
				names = append(names, t.name)
			}
		}
		b.topicsMu.RUnlock()
		sort.Strings(names)
	}
	for _, n := range names {
		b.topicsMu.RLock()
		t := b.topics[n]
		b.topicsMu.RUnlock()
		if _, queues, ok := sdk.InternalTopic(n); ok && t == nil {
			// Any group's, without creating anything: a consumer asks
			// before it joins its group.
			t = newTopic(n, queues, true)
		}
		if t == nil {
			continue // unknown topics are left out
		}
		n := t.queues()
		leaders := make([]int32, n)
		for i := range leaders {
			leaders[i] = leader
		}
		resp.Topics = append(resp.Topics, &ferryv1.TopicInfo{Name: t.name, Queues: n, Leaders: leaders, Settings: normSettings(t.settingsOf())})
	}
	return resp, nil
}
