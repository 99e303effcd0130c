package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Replication hook ("apply, then replicate", master–slave).
//
// On a node that takes produce, every batch the store answered is handed to
// the replication plugin's Replicate, in the order the batches were appended
// (their seq), which is offset order per queue — or, when the store tells
// offsets early (sdk.EarlyOffsets), once it is written, before its flush is
// done (replicate_early.go). The producer's answer waits
// for the plugin's: async answers OK at once, sync once enough replicas hold
// the data. The broker combines the flush status with the replication
// status and keeps the weaker one: a batch is OK only when both are.
//
// On a slave (or raft follower) the broker rejects produce with
// sdk.ErrNotLeader and serves fetches; the plugin applies its master's
// messages through ReplicaCore.Apply, which appends them to the local store
// in the order received and checks that the store assigns the master's
// offsets. Its routing metadata names the leader, so clients follow it.

// replicateTimeout bounds the broker's wait for a replication answer; the
// plugin's own timeout (sync's `timeout`) is normally much shorter.
const replicateTimeout = 30 * time.Second

// replicator hands stored batches to the replication plugin in seq order.
type replicator struct {
	b   *Broker
	src StorageSource

	mu    sync.Mutex // held while batches are handed over, which keeps their order
	next  uint64     // seq of the next batch to hand over
	ready map[uint64]storedBatch

	modeMu sync.Mutex
	mode   string // "" until the plugin told it

	offs offsetReports
}

type storedBatch struct {
	b       *batch
	offsets []int64
	status  sdk.Status
	err     error
	early   bool // offsets told before the flush (replicate_early.go); status and err unset
}

func newReplicator(b *Broker, src StorageSource) *replicator {
	r := &replicator{b: b, src: src, next: 1, ready: map[uint64]storedBatch{}}
	_, _ = r.replicateFirst() // ask the plugin its mode before any traffic
	return r
}

// replicateFirst reports whether the plugin replicates before anything is
// stored (raft). The plugin is asked until it answers; a plugin keeps its
// mode. While it is unknown the answer is an error (sdk.ErrUnavailable):
// guessing wrong would let a raft leader store batches nobody replicated.
func (r *replicator) replicateFirst() (bool, error) {
	r.modeMu.Lock()
	defer r.modeMu.Unlock()
	if r.mode == "" {
		impl, _, _ := r.src.Current()
		if impl == nil {
			return false, fmt.Errorf("%w: replication plugin is restarting", sdk.ErrUnavailable)
		}
		r.mode = sdk.ModeApplyFirst
		if m, ok := impl.(sdk.ReplicationMode); ok {
			r.mode = m.Mode()
		}
		if r.mode == "" {
			r.b.log.Warn("replication plugin did not tell its mode; refusing produce until it does")
			return false, fmt.Errorf("%w: replication plugin did not tell its mode", sdk.ErrUnavailable)
		}
	}
	return r.mode == sdk.ModeReplicateFirst, nil
}

// produce is Produce for "replicate, then apply" (raft): the plugin commits
// the batch on a quorum, every node applies it to its store through
// ReplicaCore.Apply, and the leader's plugin answers with the offsets its own
// store assigned. A deposed leader answers an error, never OK.
func (r *replicator) produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	impl, _, _ := r.src.Current()
	if impl == nil {
		return nil, fmt.Errorf("%w: replication plugin is restarting", sdk.ErrUnavailable)
	}
	wait, err := impl.(sdk.Replication).Replicate(ctx, req.Messages)
	if err != nil {
		return nil, err
	}
	st, offsets, err := wait(ctx)
	if err != nil {
		// The host notices a dead plugin process by itself; an unknown
		// outcome (leadership lost mid-commit) is the producer's to retry.
		return nil, err
	}
	if len(offsets) != len(req.Messages) {
		return nil, fmt.Errorf("%w: replication answered %d offsets for %d messages", sdk.ErrUnavailable, len(offsets), len(req.Messages))
	}
	return &sdk.ProduceResponse{Seq: req.Seq, Offsets: offsets, Status: st}, nil
}

// stored is called once per batch (from the appender's goroutines, in any
// order) when the store answered it. Batches are handed on in seq order. A
// batch handed over early (written) is answered once its replication is done
// too.
func (r *replicator) stored(b *batch, offsets []int64, status sdk.Status, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := b.early; st != nil {
		r.flushed(b, st, offsets, status, err)
		return
	}
	// Replaces an early entry not handed over yet: the final answer rules.
	r.ready[b.seq] = storedBatch{b: b, offsets: offsets, status: status, err: err}
	r.drain()
}

// drain hands over the ready batches that are next in seq order. Called with
// r.mu held.
func (r *replicator) drain() {
	for {
		sb, ok := r.ready[r.next]
		if !ok {
			return
		}
		delete(r.ready, r.next)
		r.next++
		if sb.early {
			r.handOverEarly(sb)
		} else {
			r.handOver(sb)
		}
	}
}

// handOver replicates one stored batch (or answers it directly) and answers
// its producers once the replication level is known. Called with r.mu held.
func (r *replicator) handOver(sb storedBatch) {
	if sb.err != nil || !sdk.TakesProduce(r.b.role.get().Role) {
		deliver(sb.b, sb.offsets, sb.status, sb.err)
		return
	}
	// Only producers' messages are replicated, with their offsets.
	msgs := replicatedMessages(sb)
	if len(msgs) == 0 {
		deliver(sb.b, sb.offsets, sb.status, sb.err)
		return
	}
	impl, gen, _ := r.src.Current()
	if impl == nil {
		r.b.log.Warn("replication plugin is restarting: batch not replicated", "messages", len(msgs))
		deliver(sb.b, sb.offsets, worse(sb.status, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE), nil)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), replicateTimeout)
	ctx = sb.b.traceContext(ctx, true) // replication.replicate under broker.append
	wait, err := impl.(sdk.Replication).Replicate(ctx, msgs)
	if err != nil {
		cancel()
		r.replicated(sb, gen, 0, err)
		return
	}
	go func() {
		defer cancel()
		st, _, err := wait(ctx)
		r.replicated(sb, gen, st, err)
	}()
}

// replicated answers a batch's producers with the flush status combined
// with the replication outcome.
func (r *replicator) replicated(sb storedBatch, gen uint64, st sdk.Status, err error) {
	deliver(sb.b, sb.offsets, worse(sb.status, r.replicationStatus(gen, st, err)), nil)
}

// replicationStatus maps the plugin's answer for a batch to the status the
// producer gets for its replication.
func (r *replicator) replicationStatus(gen uint64, st sdk.Status, err error) sdk.Status {
	switch {
	case err == nil && st == ferryv1.Status_STATUS_OK:
	case err == nil && (st == ferryv1.Status_STATUS_REPLICA_TIMEOUT || st == ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE):
	case errors.Is(err, sdk.ErrReplicaTimeout), errors.Is(err, context.DeadlineExceeded):
		st = ferryv1.Status_STATUS_REPLICA_TIMEOUT
	default:
		// The plugin died, broke its contract or lost leadership: the
		// batch is stored here but its replication level is unknown.
		if err != nil && (errors.Is(err, sdk.ErrUnavailable) || errors.Is(err, sdk.ErrClosed)) {
			r.src.Broken(gen)
		}
		r.b.log.Warn("replication failed", "status", st, "error", err)
		st = ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE
	}
	return st
}

// worse returns the weaker of two append statuses: OK < FLUSH_TIMEOUT <
// REPLICA_TIMEOUT < REPLICA_NOT_AVAILABLE. A weaker status is never upgraded.
func worse(a, b sdk.Status) sdk.Status {
	return max(a, b)
}

// roleState is the node's role and the leader it knows, set by the
// replication plugin (SetRole) and read by Produce and Metadata.
type roleState struct {
	mu  sync.RWMutex
	cur *sdk.SetRoleRequest
}

func (s *roleState) get() *sdk.SetRoleRequest {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur
}

func (s *roleState) set(r *sdk.SetRoleRequest) {
	s.mu.Lock()
	s.cur = r
	s.mu.Unlock()
}

// checkProduce returns sdk.ErrNotLeader when this node does not take produce.
func (s *roleState) checkProduce() error {
	r := s.get()
	if sdk.TakesProduce(r.Role) {
		return nil
	}
	if r.LeaderAddress != "" {
		return fmt.Errorf("%w: this node is a %s; the leader is %s at %s", sdk.ErrNotLeader, r.Role, r.LeaderNode, r.LeaderAddress)
	}
	return fmt.Errorf("%w: this node is a %s and knows no leader now", sdk.ErrNotLeader, r.Role)
}

// brokers lists this node and, when another node leads, that node.
func (s *roleState) brokers(node, addr string) []*ferryv1.BrokerInfo {
	r := s.get()
	out := []*ferryv1.BrokerInfo{{Node: node, Address: addr, Role: r.Role}}
	if !sdk.TakesProduce(r.Role) && r.LeaderAddress != "" && r.LeaderAddress != addr {
		role := sdk.RoleMaster
		if r.Role == sdk.RoleFollower || r.Role == sdk.RoleCandidate {
			role = sdk.RoleLeader
		}
		out = append(out, &ferryv1.BrokerInfo{Node: r.LeaderNode, Address: r.LeaderAddress, Role: role})
	}
	return out
}

// leaderIndex is the index into brokers() of the node that takes produce.
func (s *roleState) leaderIndex() int32 {
	r := s.get()
	if !sdk.TakesProduce(r.Role) && r.LeaderAddress != "" {
		return 1
	}
	return 0
}

// Role is the node's current role.
func (b *Broker) Role() string { return b.role.get().Role }

// ReplicaCore is the broker as its replication plugin sees it.
func (b *Broker) ReplicaCore() sdk.ReplicaCore { return replicaCore{b} }

type replicaCore struct{ b *Broker }

var _ sdk.ReplicaCore = replicaCore{}

// Apply appends a master's messages in call order and checks their offsets.
func (c replicaCore) Apply(ctx context.Context, msgs []*sdk.Message) (sdk.ApplyWait, error) {
	if len(msgs) == 0 {
		return func(context.Context) ([]int64, error) { return nil, nil }, nil
	}
	// A master's messages carry its offsets; committed raft entries do not
	// (every node's store assigns them, in log order).
	check := true
	if c.b.repl != nil {
		first, err := c.b.repl.replicateFirst()
		if err != nil {
			return nil, err
		}
		check = !first
	}
	want := make([]int64, len(msgs))
	for i, m := range msgs {
		t, err := c.b.topic(m.Topic)
		if err != nil {
			return nil, err
		}
		if err := c.b.checkQueue(t, m.Queue); err != nil {
			return nil, err
		}
		want[i] = m.Offset
	}
	req := &appendReq{msgs: msgs, done: make(chan appendResult, 1), apply: true, logDurable: sdk.LogDurable(ctx)}
	a := c.b.app
	select {
	case a.in <- req:
	case <-a.closing:
		return nil, fmt.Errorf("%w: broker is shutting down", sdk.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return func(ctx context.Context) ([]int64, error) {
		var res appendResult
		select {
		case res = <-req.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if res.err != nil {
			return nil, res.err
		}
		if res.status != ferryv1.Status_STATUS_OK {
			return nil, fmt.Errorf("%w: applied with status %s", sdk.ErrFlushTimeout, res.status)
		}
		for i, off := range res.offsets {
			if check && off != want[i] {
				m := msgs[i]
				return res.offsets, fmt.Errorf("%w: logs diverged: %s/%d message %q stored at offset %d here, %d on the master",
					sdk.ErrCorrupt, m.Topic, m.Queue, m.Id, off, want[i])
			}
		}
		return res.offsets, nil
	}, nil
}

var _ sdk.StoreSyncer = replicaCore{}

// SyncStore makes every earlier apply durable in the store (sdk.Syncer);
// a store without it fsynced each append before it answered.
func (c replicaCore) SyncStore(ctx context.Context) error {
	return c.b.storageCall(ctx, func(s sdk.Storage) error {
		sy, ok := s.(sdk.Syncer)
		if !ok {
			return nil
		}
		if err := sy.Sync(ctx); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
		return nil
	})
}

// Read reads the local log.
func (c replicaCore) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	var resp *sdk.ReadResponse
	err := c.b.storageCall(ctx, func(s sdk.Storage) (err error) {
		resp, err = s.Read(ctx, req)
		return err
	})
	return resp, err
}

// NodeInfo reports the node, the offsets of every queue it knows and the
// groups its store holds offsets of (when the store lists them).
func (c replicaCore) NodeInfo(ctx context.Context) (*sdk.NodeInfo, error) {
	b := c.b
	var refs []*sdk.QueueRef
	b.topicsMu.RLock()
	for _, t := range b.topics {
		for q := range t.queues() {
			refs = append(refs, &sdk.QueueRef{Topic: t.name, Queue: q})
		}
	}
	b.topicsMu.RUnlock()
	info := &sdk.NodeInfo{Node: b.opts.Node, Address: b.opts.Address, Role: b.role.get().Role, Topics: b.topicSet(nil)}
	switch groups, err := b.storedGroups(ctx); {
	case err == nil:
		info.StoredGroups, info.ListsGroups = groups, true
	case !errors.Is(err, errors.ErrUnsupported):
		return nil, err
	}
	if len(refs) == 0 {
		return info, nil
	}
	err := b.storageCall(ctx, func(s sdk.Storage) (err error) {
		info.Offsets, err = s.GetOffsets(ctx, "", refs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return info, nil
}

// CommitOffsets stores a group's offsets received through replication. They
// are never reported back to the plugin.
func (c replicaCore) CommitOffsets(ctx context.Context, group string, offsets []*sdk.GroupOffset) error {
	return c.b.commitOffsets(ctx, group, offsets, c.b.topicAt) // from the primary: its groups exist
}

var _ sdk.CommitForwarder = replicaCore{}

// CommitForwarded takes a consumer commit a raft follower forwarded to this
// node, the leader (sdk.CommitForwarder), as a client's commit: through
// the group's gate and its generation check, stored, then committed
// through the plugin's log. On a node that does not take produce it is
// refused (ErrNotLeader), never forwarded again.
func (c replicaCore) CommitForwarded(ctx context.Context, req *sdk.CommitOffsetsRequest) error {
	if err := c.b.role.checkProduce(); err != nil {
		return fmt.Errorf("a consumer commit forwarded by a raft follower: %w", err)
	}
	if req.Group == "" {
		return fmt.Errorf("%w: a forwarded commit needs a group", sdk.ErrInvalidArgument)
	}
	return c.b.clientCommit(ctx, req, true)
}

// SetRole changes the node's role.
func (c replicaCore) SetRole(_ context.Context, req *sdk.SetRoleRequest) error {
	switch req.Role {
	case sdk.RoleMaster, sdk.RoleSlave, sdk.RoleLeader, sdk.RoleFollower, sdk.RoleCandidate, sdk.RoleStandalone:
	default:
		return fmt.Errorf("%w: unknown role %q", sdk.ErrInvalidArgument, req.Role)
	}
	old := c.b.role.get()
	if old.Role != req.Role || old.LeaderAddress != req.LeaderAddress {
		c.b.log.Info("role changed", "from", old.Role, "to", req.Role, "leader", req.LeaderNode, "leader_address", req.LeaderAddress)
	}
	c.b.role.set(&sdk.SetRoleRequest{Role: req.Role, LeaderAddress: req.LeaderAddress, LeaderNode: req.LeaderNode})
	return nil
}

// Consumer offsets (sdk.OffsetReplication).
//
// On a node that takes produce, every consumer commit the store accepted is
// reported to the replication plugin (unless it has sdk.OffsetCommitter:
// commit above), best effort: the consumer's commit has
// succeeded already, a failure is logged (and retried a second later, merged
// with newer commits), and a plugin without the capability is not called.
// Reports are coalesced: one goroutine, started when there is something to
// report, sends each group's latest offset per queue, so a slow plugin never
// delays a commit and never gets an older offset after a newer one of the
// same queue. The broker keeps the latest offset of every group it reported
// and sends them all again to a new plugin process (after a crash), which
// starts with no memory of them.

// Commits acknowledged through the log (sdk.OffsetCommitter, raft).
//
// A plugin whose offsets go through a consensus log is not reported to in
// the background: each commit a node that takes produce stored is handed to
// its CommitOffsets, from the commit's goroutine, and the commit is answered
// with its outcome, so an acknowledged commit survives the loss of this node
// (the plugin group-commits concurrent calls into one log entry). It fails
// (and the consumer commits again) when the plugin answers an error: no
// leader, leadership lost, or no commit within offsetCommitTimeout. The
// offsets are stored on this node already then; only their replication is
// unknown.

// offsetCommitTimeout bounds a commit's wait for the plugin's CommitOffsets.
const offsetCommitTimeout = 10 * time.Second

// commit replicates a consumer commit (or offset reset) the store accepted:
// through the plugin's log, waiting, when it has sdk.OffsetCommitter; else
// reported in the background (committed). Called from the commit's
// goroutine, concurrently.
//
// On a raft follower (or candidate) the commit is handed to the plugin's
// CommitOffsets too, which forwards it to the leader: it is answered once
// committed through the log, as on the leader. A master–slave slave keeps
// its commits to itself (its plugin has no sdk.OffsetCommitter).
//
// generation is the one the client's commit carried (0: none); forwarded
// says the commit came from a follower (replicaCore.CommitForwarded): it
// is refused, not forwarded again, once this node no longer takes produce.
func (r *replicator) commit(ctx context.Context, group string, generation uint64, offsets []*sdk.GroupOffset, forwarded bool) error {
	if len(offsets) == 0 {
		return nil
	}
	if forwarded {
		if err := r.b.role.checkProduce(); err != nil {
			return fmt.Errorf("group %q: a consumer commit forwarded by a raft follower, stored here but not committed through the log: %w", group, err)
		}
	}
	switch role := r.b.role.get().Role; {
	case role == sdk.RoleFollower || role == sdk.RoleCandidate:
		return r.commitThroughLeader(ctx, group, generation, offsets)
	case !sdk.TakesProduce(role):
		return nil
	}
	impl, gen, _ := r.src.Current()
	first, _ := r.replicateFirst()
	if impl == nil && first {
		return fmt.Errorf("%w: consumer offsets stored on this node, but not committed through replication: the replication plugin is restarting (commit again)", sdk.ErrUnavailable)
	}
	if c, ok := impl.(sdk.OffsetCommitter); ok && !r.offs.noWait(gen) {
		cctx, cancel := context.WithTimeout(ctx, offsetCommitTimeout)
		defer cancel()
		err := c.CommitOffsets(cctx, group, generation, offsets)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errors.ErrUnsupported):
			r.offs.setNoWait(gen)
		default:
			r.b.opts.Metrics.OffsetReplicationFailed(group)
			return fmt.Errorf("group %q: consumer offsets stored on this node, but not committed through replication (commit again): %w", group, err)
		}
	}
	r.committed(group, offsets)
	return nil
}

// commitThroughLeader hands a consumer commit made on a follower to the
// plugin's CommitOffsets, which forwards it to the leader, and returns its
// error. A plugin without sdk.OffsetCommitter is not called: the commit
// stays on this node.
func (r *replicator) commitThroughLeader(ctx context.Context, group string, generation uint64, offsets []*sdk.GroupOffset) error {
	impl, gen, _ := r.src.Current()
	if impl == nil {
		if first, _ := r.replicateFirst(); first {
			return fmt.Errorf("%w: consumer offsets stored on this follower, but not committed through the leader: the replication plugin is restarting (commit again)", sdk.ErrUnavailable)
		}
		return nil
	}
	c, ok := impl.(sdk.OffsetCommitter)
	if !ok || r.offs.noWait(gen) {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, offsetCommitTimeout)
	defer cancel()
	switch err := c.CommitOffsets(cctx, group, generation, offsets); {
	case err == nil:
		return nil
	case errors.Is(err, errors.ErrUnsupported):
		r.offs.setNoWait(gen)
		return nil
	default:
		r.b.opts.Metrics.OffsetReplicationFailed(group)
		return fmt.Errorf("group %q: consumer offsets stored on this follower, but not committed through the raft leader (commit again): %w", group, err)
	}
}

// noWait reports whether plugin generation gen said it cannot wait for
// offsets (sdk.OffsetCommitter answered errors.ErrUnsupported).
func (o *offsetReports) noWait(gen uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.noWaitGen == gen && o.noWaitSet
}

func (o *offsetReports) setNoWait(gen uint64) {
	o.mu.Lock()
	o.noWaitGen, o.noWaitSet = gen, true
	o.mu.Unlock()
}

// Offset reports are bounded by offsetReportTimeout each; after a failure the
// next attempt waits offsetRetryDelay. offsetWarnEvery throttles warnings.
const (
	offsetReportTimeout = 5 * time.Second
	offsetRetryDelay    = time.Second
	offsetWarnEvery     = 10 * time.Second
)

type groupQueue struct {
	topic string
	queue int32
}

// offsetReports is the replicator's state for consumer offsets.
type offsetReports struct {
	mu          sync.Mutex
	latest      map[string]map[groupQueue]int64 // every group's latest commit
	pending     map[string]map[groupQueue]int64 // not yet reported to the plugin
	running     bool                            // a reporting goroutine runs
	gen         uint64                          // plugin generation latest was reported to
	unsupported bool                            // that generation does not replicate offsets
	lastWarn    time.Time
	noWaitGen   uint64 // a plugin generation without sdk.OffsetCommitter
	noWaitSet   bool   // noWaitGen is set
	// inflight is the batch reportOffsets is handing to the plugin; a
	// group's deletion (forget) takes its group out of it.
	inflight map[string]map[groupQueue]int64
	// reportMu is held by reportOffsets while it hands one group's offsets
	// to the plugin, and by forget: a deletion waits for the report under
	// way, and a report taken before the deletion is not made after it.
	reportMu sync.Mutex
	// forgetWaits counts forgets that waited for reportMu (tests).
	forgetWaits atomic.Int64
}

// committed is called by CommitOffsets after the store accepted a commit.
func (r *replicator) committed(group string, offsets []*sdk.GroupOffset) {
	if len(offsets) == 0 || !sdk.TakesProduce(r.b.role.get().Role) {
		return
	}
	o := &r.offs
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.latest == nil {
		o.latest, o.pending = map[string]map[groupQueue]int64{}, map[string]map[groupQueue]int64{}
	}
	for _, off := range offsets {
		k := groupQueue{off.Topic, off.Queue}
		setOffset(o.latest, group, k, off.Offset)
		setOffset(o.pending, group, k, off.Offset)
	}
	if o.running {
		return
	}
	if _, gen, _ := r.src.Current(); o.unsupported && gen == o.gen {
		clear(o.pending)
		return
	}
	o.running = true
	go r.reportOffsets()
}

func setOffset(m map[string]map[groupQueue]int64, group string, k groupQueue, off int64) {
	g := m[group]
	if g == nil {
		g = map[groupQueue]int64{}
		m[group] = g
	}
	g[k] = off
}

// forget drops a deleted group's offsets from what the replicator reports
// (pending, and what a new plugin process is sent).
//
// It returns once no report of the group's older offsets is under way: the
// deletion is handed to the plugin after it, never before.
func (r *replicator) forget(group string) {
	o := &r.offs
	if !o.reportMu.TryLock() {
		o.forgetWaits.Add(1)
		o.reportMu.Lock()
	}
	defer o.reportMu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.latest, group)
	delete(o.pending, group)
	delete(o.inflight, group)
}

// reportOffsets sends pending offsets to the plugin until none are left.
func (r *replicator) reportOffsets() {
	o := &r.offs
	for {
		impl, gen, _ := r.src.Current()
		o.mu.Lock()
		if impl != nil && gen != o.gen {
			// A new plugin process: it knows nothing yet.
			o.gen, o.unsupported = gen, false
			for g, qs := range o.latest {
				for k, off := range qs {
					setOffset(o.pending, g, k, off)
				}
			}
		}
		if impl == nil || o.unsupported || len(o.pending) == 0 {
			// Restarting: the next commit starts a report to the new
			// process, with everything.
			if o.unsupported {
				clear(o.pending)
			}
			o.running = false
			o.mu.Unlock()
			return
		}
		o.inflight = o.pending
		o.pending = map[string]map[groupQueue]int64{}
		names := slices.Sorted(maps.Keys(o.inflight))
		o.mu.Unlock()

		failed := false
		for _, group := range names {
			o.reportMu.Lock()
			o.mu.Lock()
			qs, ok := o.inflight[group]
			o.mu.Unlock()
			if !ok { // deleted meanwhile (forget)
				o.reportMu.Unlock()
				continue
			}
			err := r.reportGroup(impl, group, qs)
			o.reportMu.Unlock()
			if err == nil {
				o.mu.Lock()
				delete(o.inflight, group)
				o.mu.Unlock()
				continue
			}
			if errors.Is(err, errors.ErrUnsupported) {
				o.mu.Lock()
				if o.gen == gen {
					o.unsupported = true
				}
				o.mu.Unlock()
				r.b.log.Debug("replication plugin does not replicate consumer offsets", "error", err)
				break
			}
			failed = true
			r.b.opts.Metrics.OffsetReplicationFailed(group)
			o.mu.Lock()
			warn := time.Since(o.lastWarn) >= offsetWarnEvery
			if warn {
				o.lastWarn = time.Now()
			}
			o.mu.Unlock()
			if warn {
				r.b.log.Warn("consumer offsets not replicated (will retry; the commit itself succeeded)", "group", group, "error", err)
			}
		}
		o.mu.Lock()
		batch := o.inflight
		o.inflight = nil
		o.mu.Unlock()
		if failed {
			// Put back what failed unless a newer commit replaced it.
			o.mu.Lock()
			for group, qs := range batch {
				for k, off := range qs {
					if _, ok := o.pending[group][k]; !ok {
						setOffset(o.pending, group, k, off)
					}
				}
			}
			o.mu.Unlock()
			time.Sleep(offsetRetryDelay)
		}
	}
}

// reportGroup hands one group's offsets to the plugin.
func (r *replicator) reportGroup(impl sdk.Plugin, group string, qs map[groupQueue]int64) error {
	or, ok := impl.(sdk.OffsetReplication)
	if !ok {
		return fmt.Errorf("replication plugin has no ReplicateOffsets: %w", errors.ErrUnsupported)
	}
	offs := make([]*sdk.GroupOffset, 0, len(qs))
	for k, off := range qs {
		offs = append(offs, &sdk.GroupOffset{Topic: k.topic, Queue: k.queue, Offset: off})
	}
	ctx, cancel := context.WithTimeout(context.Background(), offsetReportTimeout)
	defer cancel()
	return or.ReplicateOffsets(ctx, group, offs)
}
