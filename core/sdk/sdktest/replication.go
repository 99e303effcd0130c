package sdktest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/freeport"
)

// The replication suite checks a master–slave replication plugin (modes
// apply_first and apply_written) against its contract with the broker core
// (sdk.Replication, sdk.ReplicaCore): two nodes, each a plugin of its own
// serving a test core (ReplicaTestCore) that plays the broker, node 0 told it
// is the master and node 1 the slave. The cases: batches reach the slave in
// order per queue, at the master's offsets; a sync plugin never answers OK
// below its level (the slave holds the batch when OK comes, and with the
// slave gone the answer is not OK); a slave whose log diverged from the
// master's is refused (its log is left as it was); a slave that was away
// catches up. A consensus plugin (mode replicate_first, raft) gets the
// consensus cases instead (replication_consensus.go): three nodes, each
// serving a test core of its own, elect one leader and elect another when it
// goes; only the leader takes a batch, a follower refuses with
// sdk.ErrNotLeader and nothing stored anywhere; a batch is answered OK only
// once committed, stored at the offsets the answer names, on every node in
// the same order, and never without a quorum; and a node that was away
// while the log was compacted past it is caught up from a snapshot.

// ReplicationFeatures say how to run the suite against a replication plugin.
type ReplicationFeatures struct {
	// NodeConfig returns the config section (JSON) of node i, given the
	// replication addresses the harness picked for every node of the case
	// (free loopback ports; addrs[i] is node i's own).
	NodeConfig func(i int, addrs []string) []byte
	// SyncReplicas is how many replicas must hold a batch before the
	// plugin answers OK (its configured level); 0 for an asynchronous
	// plugin, which answers OK once the master has the batch.
	SyncReplicas int
	// Bound is how long the plugin may take to connect a slave, ship a
	// batch, or answer that its level was not met; default DefaultBound.
	Bound time.Duration
	// ConsensusBound is how long the consensus cases give an election,
	// a commit or a catch-up; default DefaultConsensusBound.
	ConsensusBound time.Duration
	// ConsensusConfig, for a consensus plugin (mode replicate_first),
	// returns the config section (JSON) of member i of a group of
	// members, with the addresses the harness picked for each (free
	// loopback ports). Nil: the consensus cases are skipped.
	ConsensusConfig func(i int, members []ConsensusMember) []byte
	// Snapshots: ConsensusConfig makes the plugin snapshot and compact its
	// log after a few entries (raft: snapshot_threshold, trailing_logs,
	// snapshot_interval), and the plugin reports the first index still in
	// its log (ReplicationStatus.log_first_index), so the snapshot
	// catch-up case can run.
	Snapshots bool
}

func (f ReplicationFeatures) bound() time.Duration {
	if f.Bound > 0 {
		return f.Bound
	}
	return DefaultBound
}

// ServedReplication is node i's replication plugin under test, configured
// and serving its test core; a harness makes them.
type ServedReplication struct {
	sdk.Replication
	cancel context.CancelFunc
	served chan error
	stop   func()
	once   sync.Once
}

// NewServedReplication runs r.Serve(ctx, core) until Stop; stop ends what
// runs r (closes it, or stops its plugin process).
func NewServedReplication(r sdk.Replication, core sdk.ReplicaCore, stop func()) *ServedReplication {
	ctx, cancel := context.WithCancel(context.Background())
	s := &ServedReplication{Replication: r, cancel: cancel, served: make(chan error, 1), stop: stop}
	go func() { s.served <- r.Serve(ctx, core) }()
	return s
}

// Stop stops the plugin (once): the node is gone.
func (s *ServedReplication) Stop() {
	s.once.Do(func() {
		s.cancel()
		s.stop()
	})
}

// ReplicationHarness starts the nodes of one case.
type ReplicationHarness interface {
	Features() ReplicationFeatures
	// Addrs are the replication addresses of the case's nodes.
	Addrs() []string
	// Start starts node i's plugin with config serving core; a node
	// started again after Stop keeps its data directory.
	Start(i int, config []byte, core sdk.ReplicaCore) (*ServedReplication, error)
	// Validate asks a plugin to check config.
	Validate(config []byte) (sdk.Problems, error)
}

// ReplicationCase is one replication conformance case.
type ReplicationCase struct {
	Name string
	// Needs says why the case does not apply to features ("" when it does).
	Needs func(ReplicationFeatures) string
	// MasterSlave: the case runs two nodes of a master–slave plugin.
	MasterSlave bool
	Run         func(h ReplicationHarness) error
	// Nodes is how many nodes the case's harness has (0: 2).
	Nodes int
}

// NodeCount is how many nodes the case's harness must have.
func (c ReplicationCase) NodeCount() int {
	if c.Nodes > 0 {
		return c.Nodes
	}
	return 2
}

// ReplicationCases returns the replication conformance cases.
func ReplicationCases() []ReplicationCase {
	return []ReplicationCase{
		{"ReplicationBadConfig", nil, false, testReplicationBadConfig, 0},
		{"ReplicateInOrder", needMasterSlave, true, testReplicateInOrder, 0},
		{"NeverOKBelowLevel", needSync, true, testNeverOKBelowLevel, 0},
		{"DivergenceRefused", needMasterSlave, true, testDivergenceRefused, 0},
		{"CatchUpAfterAbsence", needMasterSlave, true, testCatchUpAfterAbsence, 0},
		{"ConsensusElection", needConsensus, false, testConsensusElection, consensusNodes},
		{"ConsensusFollowerRefuses", needConsensus, false, testConsensusFollowerRefuses, consensusNodes},
		{"ConsensusCommitThroughLog", needConsensus, false, testConsensusCommitThroughLog, consensusNodes},
		{"ConsensusSnapshotCatchUp", needSnapshots, false, testConsensusSnapshotCatchUp, consensusNodes},
	}
}

// needMasterSlave skips the master–slave cases for a plugin given as a
// consensus plugin.
func needMasterSlave(f ReplicationFeatures) string {
	if f.NodeConfig == nil && f.ConsensusConfig != nil {
		return "a consensus plugin (ConsensusConfig): the master–slave cases do not apply"
	}
	return ""
}

func needSync(f ReplicationFeatures) string {
	if why := needMasterSlave(f); why != "" {
		return why
	}
	if f.SyncReplicas < 1 {
		return "asynchronous (SyncReplicas 0): OK never waits for a replica"
	}
	return ""
}

// RunReplicationCase runs c on h.
func RunReplicationCase(c ReplicationCase, h ReplicationHarness) error {
	if c.Needs != nil {
		if why := c.Needs(h.Features()); why != "" {
			return Skip("%s", why)
		}
	}
	return c.Run(h)
}

// TestReplication runs the replication conformance cases against the
// plugins newReplication returns (unconfigured), through the plugin boundary
// on the shared-memory data plane ("ring") and on gRPC ("grpc"). The two
// planes run side by side (each case's nodes listen on the addresses its
// harness picked, so they do not meet), the cases of each one after
// another; TestReplication returns when both are done.
func TestReplication(t *testing.T, newReplication func(t *testing.T) sdk.Replication, f ReplicationFeatures) {
	var wg sync.WaitGroup
	for _, mode := range []string{"ring", "grpc"} {
		wg.Go(func() {
			t.Run(mode, func(t *testing.T) {
				for _, c := range ReplicationCases() {
					t.Run(c.Name, func(t *testing.T) {
						err := RunReplicationCase(c, NewGoReplicationHarness(t, mode, c.NodeCount(), newReplication, f))
						if why, ok := Skipped(err); ok {
							t.Skip(why)
						}
						if err != nil {
							t.Fatal(err)
						}
					})
				}
			})
		})
	}
	wg.Wait()
}

// NewGoReplicationHarness returns the harness TestReplication runs a case on
// in mode (direct, grpc or ring) with nodes nodes on addrs of its own, for
// tests that run single cases (negative controls).
func NewGoReplicationHarness(t *testing.T, mode string, nodes int, newReplication func(t *testing.T) sdk.Replication, f ReplicationFeatures) ReplicationHarness {
	h := &goReplicationHarness{t: t, mode: mode, newReplication: newReplication, f: f}
	for range nodes {
		h.addrs = append(h.addrs, freeLoopback(t))
		h.dirs = append(h.dirs, t.TempDir())
	}
	return h
}

type goReplicationHarness struct {
	t              *testing.T
	mode           string
	newReplication func(t *testing.T) sdk.Replication
	f              ReplicationFeatures
	addrs, dirs    []string
}

func (h *goReplicationHarness) Features() ReplicationFeatures { return h.f }
func (h *goReplicationHarness) Addrs() []string               { return h.addrs }

func (h *goReplicationHarness) Validate(config []byte) (sdk.Problems, error) {
	impl := h.newReplication(h.t)
	defer impl.Close()
	return impl.Validate(config), nil
}

func (h *goReplicationHarness) Start(i int, config []byte, core sdk.ReplicaCore) (*ServedReplication, error) {
	impl := h.newReplication(h.t)
	r := impl
	stop := func() {}
	if h.mode != "direct" {
		c, cstop := ServeReplication(h.t, impl, h.mode == "ring")
		r, stop = c, cstop
	}
	ctx, cancel := ctxT()
	defer cancel()
	if err := r.Configure(ctx, config, &sdk.Environment{Pipeline: "sdktest", Node: fmt.Sprint("node-", i), DataDir: h.dirs[i]}); err != nil {
		stop()
		_ = impl.Close()
		return nil, fmt.Errorf("node %d: Configure: %w", i, err)
	}
	s := NewServedReplication(r, core, func() {
		stop()
		_ = impl.Close()
	})
	h.t.Cleanup(s.Stop)
	return s, nil
}

// --- the cases ---

// The topic of the replication cases, with its queues.
const (
	replTopic  = "sdktest"
	replQueues = 2
)

// pair is a master and a slave of a case, each with its core.
type pair struct {
	h     ReplicationHarness
	cores [2]*ReplicaTestCore
	nodes [2]*ServedReplication
}

func newPair(h ReplicationHarness) *pair {
	return &pair{h: h, cores: [2]*ReplicaTestCore{NewReplicaTestCore("node-0", sdk.RoleMaster), NewReplicaTestCore("node-1", sdk.RoleSlave)}}
}

func (p *pair) start(i int) error {
	f := p.h.Features()
	if f.NodeConfig == nil {
		return Skip("two nodes: needs each node's config section (ReplicationFeatures.NodeConfig; --config with $LISTEN and $PEERS)")
	}
	n, err := p.h.Start(i, f.NodeConfig(i, p.h.Addrs()), p.cores[i])
	if err != nil {
		return err
	}
	p.nodes[i] = n
	return nil
}

func (p *pair) stopAll() {
	for _, n := range p.nodes {
		if n != nil {
			n.Stop()
		}
	}
}

// startBoth starts the master and the slave and waits until the master
// reports the slave connected.
func (p *pair) startBoth() error {
	if err := p.startMaster(); err != nil {
		return err
	}
	if err := p.start(1); err != nil {
		return err
	}
	return p.waitConnected(true)
}

// startMaster starts node 0, and skips the case for a plugin that is not
// master–slave.
func (p *pair) startMaster() error {
	if err := p.start(0); err != nil {
		return err
	}
	if m, ok := p.nodes[0].Replication.(sdk.ReplicationMode); ok {
		if mode := m.Mode(); mode != sdk.ModeApplyFirst && mode != sdk.ModeApplyWritten {
			return Skip("mode %q: the suite's two-node cases are for master–slave plugins (apply_first, apply_written)", mode)
		}
	}
	return nil
}

// waitConnected waits until the master's Status reports a connected replica
// (or, with want false, none).
func (p *pair) waitConnected(want bool) error {
	bound := p.h.Features().bound()
	deadline := time.Now().Add(bound)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := ctxT()
		st, err := p.nodes[0].Status(ctx)
		cancel()
		connected := false
		for _, r := range st.GetReplicas() {
			if r.Connected && !r.Diverged {
				connected = true
			}
		}
		if err == nil && connected == want {
			return nil
		}
		last = err
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	if want {
		return fmt.Errorf("the master did not report the slave connected within %s (last status error: %v)", bound, last)
	}
	return fmt.Errorf("the master still reports a connected slave %s after it stopped", bound)
}

// batch makes n messages of queue q named prefix-i.
func batch(prefix string, q int32, n int) []*sdk.Message {
	out := make([]*sdk.Message, n)
	for i := range out {
		out[i] = &sdk.Message{Id: fmt.Sprintf("%s-%d", prefix, i), Topic: replTopic, Queue: q, Body: []byte("sdktest " + prefix)}
	}
	return out
}

// replicate stores msgs on the master's core and hands them to Replicate,
// as the broker of a master does; it returns the stored messages and the
// wait.
func (p *pair) replicate(msgs []*sdk.Message) ([]*sdk.Message, sdk.ReplicateWait, error) {
	stored := p.cores[0].store(msgs)
	ctx, cancel := ctxT()
	defer cancel()
	wait, err := p.nodes[0].Replicate(ctx, stored)
	if err != nil {
		return stored, nil, fmt.Errorf("Replicate: %w", err)
	}
	return stored, wait, nil
}

// sameLogs waits until the slave's queues equal the master's, message by
// message at the same offsets.
func (p *pair) sameLogs(queues ...int32) error {
	bound := p.h.Features().bound()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for {
		ch := p.cores[1].changes()
		diff := ""
		for _, q := range queues {
			m, s := p.cores[0].queueLog(replTopic, q), p.cores[1].queueLog(replTopic, q)
			if d := logDiff(m, s); d != "" {
				diff = fmt.Sprintf("queue %d: %s", q, d)
				break
			}
		}
		if diff == "" {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return fmt.Errorf("the slave's log is not the master's after %s: %s", bound, diff)
		}
	}
}

// logDiff says how the slave's log s differs from the master's m ("" when
// they are the same).
func logDiff(m, s []*sdk.Message) string {
	for i := range min(len(m), len(s)) {
		if m[i].Id != s[i].Id {
			return fmt.Sprintf("offset %d holds %s on the slave, %s on the master", i, s[i].Id, m[i].Id)
		}
	}
	if len(s) != len(m) {
		return fmt.Sprintf("the slave has %d messages, the master %d", len(s), len(m))
	}
	return ""
}

func testReplicationBadConfig(h ReplicationHarness) error {
	const key = "sdktest_no_such_key"
	bad := []byte(`{"` + key + `": 1}`)
	ps, err := h.Validate(bad)
	if err != nil {
		return fmt.Errorf("Validate: %w", err)
	}
	for _, p := range ps {
		if strings.Contains(p.Path, key) {
			f := h.Features()
			var good []byte
			switch {
			case f.NodeConfig != nil:
				good = f.NodeConfig(0, h.Addrs())
			case f.ConsensusConfig != nil:
				var ms []ConsensusMember
				for i := range consensusNodes {
					ms = append(ms, ConsensusMember{ID: fmt.Sprint("node-", i), Listen: fmt.Sprintf("127.0.0.1:%d", 7100+i),
						Admin: fmt.Sprintf("127.0.0.1:%d", 7200+i), Broker: fmt.Sprintf("127.0.0.1:%d", 7300+i)})
				}
				good = f.ConsensusConfig(0, ms)
			}
			if good != nil {
				if ps, err := h.Validate(good); err != nil || len(ps) > 0 {
					return fmt.Errorf("Validate of node 0's config %s: %v %v, want no problem", good, ps, err)
				}
			}
			return nil
		}
	}
	return fmt.Errorf("Validate(%s) = %v, want a problem at key %s", bad, ps, key)
}

func testReplicateInOrder(h ReplicationHarness) error {
	p := newPair(h)
	defer p.stopAll()
	if err := p.startBoth(); err != nil {
		return err
	}
	syncLevel := h.Features().SyncReplicas > 0
	type sent struct {
		msgs []*sdk.Message
		wait sdk.ReplicateWait
	}
	var all []sent
	for i := range 20 {
		msgs, wait, err := p.replicate(batch(fmt.Sprintf("order-%d", i), int32(i%2), 3))
		if err != nil {
			return err
		}
		all = append(all, sent{msgs, wait})
	}
	for i, s := range all {
		ctx, cancel := ctxT()
		st, _, err := s.wait(ctx)
		cancel()
		if err != nil || st != 1 {
			return fmt.Errorf("batch %d: replication answered %v, %v with the slave connected, want STATUS_OK", i, st, err)
		}
		if syncLevel {
			for _, m := range s.msgs {
				if !p.cores[1].has(m) {
					return fmt.Errorf("batch %d: answered OK at level %d while the slave did not hold %s at offset %d", i, h.Features().SyncReplicas, m.Id, m.Offset)
				}
			}
		}
	}
	return p.sameLogs(0, 1)
}

func testNeverOKBelowLevel(h ReplicationHarness) error {
	p := newPair(h)
	defer p.stopAll()
	if err := p.startBoth(); err != nil {
		return err
	}
	p.nodes[1].Stop()
	if err := p.waitConnected(false); err != nil {
		return err
	}
	_, wait, err := p.replicate(batch("alone", 0, 2))
	if err != nil {
		return nil // refused at once: never OK
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.Features().bound()+CallTimeout)
	defer cancel()
	st, _, err := wait(ctx)
	if err == nil && st == 1 {
		return fmt.Errorf("answered STATUS_OK with the slave gone, at level %d", h.Features().SyncReplicas)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("no answer within %s with the slave gone: a producer would wait forever", h.Features().bound()+CallTimeout)
	}
	return nil
}

func testDivergenceRefused(h ReplicationHarness) error {
	p := newPair(h)
	defer p.stopAll()
	// The slave holds five messages the master never had; the master one,
	// and after the next batch three: the slave's log reaches past the
	// master's. (Logs of the same length that differ cannot be told apart
	// by their offsets, which is all a slave reports.)
	p.cores[0].store(batch("master-only", 0, 1))
	own := p.cores[1].store(batch("slave-only", 0, 5))
	if err := p.startMaster(); err != nil {
		return err
	}
	if err := p.start(1); err != nil {
		return err
	}
	msgs, wait, err := p.replicate(batch("after", 0, 2))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), h.Features().bound()+CallTimeout)
		st, _, werr := wait(ctx)
		cancel()
		if h.Features().SyncReplicas > 0 && werr == nil && st == 1 {
			return fmt.Errorf("answered STATUS_OK for %s at level %d with the only slave diverged", msgs[0].Id, h.Features().SyncReplicas)
		}
	}
	// The master must say it refused the slave (ReplicaInfo.diverged in its
	// status) and leave the slave's log as it was.
	bound := h.Features().bound()
	deadline := time.Now().Add(bound)
	for {
		if d := logDiff(own, p.cores[1].queueLog(replTopic, 0)); d != "" {
			return fmt.Errorf("the diverged slave's log was changed: %s", d)
		}
		ctx, cancel := ctxT()
		st, err := p.nodes[0].Status(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("the master's Status: %w", err)
		}
		for _, r := range st.GetReplicas() {
			if r.Diverged {
				if d := logDiff(own, p.cores[1].queueLog(replTopic, 0)); d != "" {
					return fmt.Errorf("the diverged slave's log was changed: %s", d)
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the master did not report the slave as diverged (ReplicaInfo.diverged) within %s; its replicas: %v", bound, st.GetReplicas())
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func testCatchUpAfterAbsence(h ReplicationHarness) error {
	p := newPair(h)
	defer p.stopAll()
	if err := p.startBoth(); err != nil {
		return err
	}
	for i := range 3 {
		_, wait, err := p.replicate(batch(fmt.Sprintf("before-%d", i), int32(i%2), 2))
		if err != nil {
			return err
		}
		ctx, cancel := ctxT()
		st, _, err := wait(ctx)
		cancel()
		if err != nil || st != 1 {
			return fmt.Errorf("batch %d with the slave connected: %v, %v", i, st, err)
		}
	}
	if err := p.sameLogs(0, 1); err != nil {
		return err
	}
	p.nodes[1].Stop()
	if err := p.waitConnected(false); err != nil {
		return err
	}
	// While the slave is away the master takes more (below a sync level
	// they are not OK, but the master stores them all the same).
	var waits []sdk.ReplicateWait
	for i := range 5 {
		_, wait, err := p.replicate(batch(fmt.Sprintf("away-%d", i), int32(i%2), 2))
		if err != nil {
			return err
		}
		waits = append(waits, wait)
	}
	if h.Features().SyncReplicas == 0 {
		for i, w := range waits {
			ctx, cancel := ctxT()
			st, _, err := w(ctx)
			cancel()
			if err != nil || st != 1 {
				return fmt.Errorf("asynchronous batch %d with the slave away: %v, %v, want STATUS_OK", i, st, err)
			}
		}
	}
	p.nodes[1] = nil
	if err := p.start(1); err != nil {
		return err
	}
	return p.sameLogs(0, 1)
}

// freeLoopback returns a loopback address whose port was free a moment ago
// (internal/freeport).
func freeLoopback(t testing.TB) string {
	a, err := freeport.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	return a[0]
}
