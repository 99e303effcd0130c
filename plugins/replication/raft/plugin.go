package raft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// Defaults of the snapshot settings, and raft tuning that is not
// configurable.
const (
	defaultTrailingLogs      = 1 << 20 // entries kept after a snapshot: followers mostly catch up from the log
	defaultSnapshotThreshold = 1 << 16
	defaultSnapshotInterval  = 30 * time.Second
	minSnapshotInterval      = 5 * time.Millisecond // hashicorp/raft refuses less
	roleEvery                = 20 * time.Millisecond
)

// Plugin is the raft replication plugin.
type Plugin struct {
	cfg   Config
	dir   string
	node  string
	log   hclog.Logger
	audit hclog.Logger // audit lines (INFO)
	trans *hraft.NetworkTransport
	peers *security.Peers // TLS and the cluster secret on raft and admin links
	logs  raftLog         // raft's log and stable store (term, vote)
	admin *grpc.Server

	// startMu orders Close with Serve's start of raft, which reads the
	// log: Close waits until raft runs (or Serve gave up), and Serve
	// starts nothing once Close ran (closed). A host may stop a plugin
	// that is still starting.
	startMu sync.Mutex
	closed  bool
	// stopOnce/stopped: raft's shutdown, shared by Serve's end and Close
	// (stopRaft).
	stopOnce sync.Once
	stopped  hraft.Future

	mu      sync.Mutex
	raft    *hraft.Raft
	core    sdk.ReplicaCore
	role    string
	leader  Peer
	address string
	// members: peers' addresses the log recorded (members.go), by id.
	members map[string]Peer
	// conflictSeen: the membership conflict last logged.
	conflictSeen string

	// commits: consumer offsets waiting for their log entry (commit.go).
	commitMu sync.Mutex
	commits  offsetCommitter

	// conns: connections to peers' admin listeners, by address
	// (forward.go); closed once the plugin closes.
	connMu      sync.Mutex
	conns       map[string]*grpc.ClientConn
	connsClosed bool

	// Snapshot catch-up, for Status: snapshots restored, messages
	// fetched from peers for them, catch-ups served to peers.
	restored, caughtUp, served atomic.Int64
	// running is raft once it runs, for the links' readers (addressOwner),
	// which must not wait on mu.
	running atomic.Pointer[hraft.Raft]
}

var (
	_ sdk.Replication     = (*Plugin)(nil)
	_ sdk.ReplicationMode = (*Plugin)(nil)
)

// New returns a raft replication plugin.
func New() *Plugin {
	return &Plugin{
		log: hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr, JSONFormat: true}),
		// Audit lines are INFO, as the node's others: not held back by
		// the level that quiets hashicorp/raft's own chatter.
		audit: hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: os.Stderr, JSONFormat: true}),
	}
}

// Mode: raft replicates a batch before any node stores it.
func (p *Plugin) Mode() string { return sdk.ModeReplicateFirst }

// Validate checks a config section.
func (p *Plugin) Validate(config []byte) sdk.Problems {
	_, ps := decode(config)
	return ps
}

// Configure opens the raft log and binds the raft and admin listeners.
func (p *Plugin) Configure(_ context.Context, config []byte, env *sdk.Environment) error {
	cfg, ps := decode(config)
	if ps != nil {
		return ps
	}
	p.cfg, p.node = cfg, env.GetNode()
	found := false
	for _, peer := range cfg.Peers {
		if peer.ID == p.node {
			found = true
		}
	}
	if !found {
		return sdk.Problems{{Path: "peers", Message: fmt.Sprintf("must list this node (node.id %q)", p.node)}}
	}
	p.dir = filepath.Join(env.GetDataDir(), "replication-raft")
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	w, err := openWAL(p.dir, p.log.Named("wal"))
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	p.logs = w
	if err := p.loadMembers(); err != nil {
		return fmt.Errorf("raft members table: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	link := cfg.link()
	link.Node = p.node // claimed in every link it dials, checked against its certificate
	if p.peers, err = security.NewPeers(link, "plugins.replication.config.listen", p.log.Named("peers")); err != nil {
		return err
	}
	stream, err := newStreamLayer(cfg.Listen, adv, p.peers)
	if err != nil {
		return fmt.Errorf("raft listen %s: %w", cfg.Listen, err)
	}
	stream.owner = p.addressOwner
	p.trans = hraft.NewNetworkTransportWithLogger(stream, 4, 2*time.Second, p.log.Named("transport"))
	if cfg.Admin != "" {
		lis, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			return fmt.Errorf("raft admin listen %s: %w", cfg.Admin, err)
		}
		p.admin = grpc.NewServer(grpc.Creds(p.peers.GRPC()))
		ferryv1.RegisterReplicaLinkServer(p.admin, &admin{p: p})
		go func() { _ = p.admin.Serve(lis) }()
	}
	return nil
}

// addressOwner names the member of the group's latest configuration
// whose raft address is addr: the check of a raft request's claimed
// address (rpcguard.go), from the goroutine that reads a link.
func (p *Plugin) addressOwner(addr string) (string, bool) {
	r := p.running.Load()
	if r == nil {
		return "", false
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return "", false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.Address) == addr {
			return string(s.ID), true
		}
	}
	return "", false
}

// Serve starts raft (bootstrapping a new group from peers), applies
// committed entries to the store through core, and keeps the broker's role in
// step with raft's until ctx ends.
func (p *Plugin) Serve(ctx context.Context, core sdk.ReplicaCore) error {
	p.startMu.Lock()
	starting := true
	defer func() {
		if starting {
			p.startMu.Unlock()
		}
	}()
	if p.closed {
		return errors.New("raft: the plugin was closed before Serve")
	}
	info, err := core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.core, p.address = core, info.Address // peers' catch-up reads the store from now on
	p.mu.Unlock()
	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(p.node)
	rc.HeartbeatTimeout = time.Duration(p.cfg.HeartbeatTimeout)
	rc.ElectionTimeout = time.Duration(p.cfg.ElectionTimeout)
	rc.LeaderLeaseTimeout = time.Duration(p.cfg.LeaderLeaseTimeout)
	rc.CommitTimeout = 5 * time.Millisecond
	rc.TrailingLogs = uint64(p.cfg.TrailingLogs)
	rc.SnapshotThreshold = uint64(p.cfg.SnapshotThreshold)
	rc.SnapshotInterval = time.Duration(p.cfg.SnapshotInterval)
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.NoSnapshotRestoreOnStart = true // the store is the state
	// A leader that removes itself stays up as a follower outside the
	// group: its admin listener keeps reporting that it was removed.
	rc.ShutdownOnRemove = false
	rc.Logger = p.log
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(p.dir, 2, p.log.Named("snapshots"))
	if err != nil {
		return err
	}
	has, err := hraft.HasExistingState(p.logs, p.logs, snaps)
	if err != nil {
		return err
	}
	if !has && p.cfg.Join {
		p.log.Info("no raft state and join is set: waiting to be added to the group (ferry cluster add-node)")
	}
	if !has && !p.cfg.Join {
		var servers []hraft.Server
		for _, peer := range p.cfg.Peers {
			servers = append(servers, hraft.Server{Suffrage: hraft.Voter, ID: hraft.ServerID(peer.ID), Address: hraft.ServerAddress(peer.Raft)})
		}
		if err := hraft.BootstrapCluster(rc, p.logs, p.logs, snaps, p.trans, hraft.Configuration{Servers: servers}); err != nil {
			return fmt.Errorf("raft bootstrap: %w", err)
		}
	}
	f := newFSM(p, ctx, core, p.dir)
	if err := f.resume(ctx, snaps); err != nil {
		return err
	}
	r, err := hraft.NewRaft(rc, f, p.logs, p.logs, snaps, p.trans)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	p.mu.Lock()
	p.raft = r
	p.mu.Unlock()
	p.running.Store(r)
	starting = false
	p.startMu.Unlock()
	defer p.stopRaft(r)
	tick := time.NewTicker(roleEvery)
	defer tick.Stop()
	var last *sdk.SetRoleRequest
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if n%50 == 0 {
			p.reportConflict(r)
		}
		want := p.observe(r)
		if last == nil || want.Role != last.Role || want.LeaderAddress != last.LeaderAddress {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := core.SetRole(sctx, want)
			cancel()
			if err == nil {
				last = want
			}
		}
	}
}

// observe maps raft's state to the broker's role and the leader's broker.
func (p *Plugin) observe(r *hraft.Raft) *sdk.SetRoleRequest {
	_, id := r.LeaderWithID()
	var leader Peer
	if id != "" {
		leader, _ = p.peer(string(id))
	}
	role := sdk.RoleFollower
	switch r.State() {
	case hraft.Leader:
		role = sdk.RoleLeader
	case hraft.Candidate:
		role = sdk.RoleCandidate
	}
	p.mu.Lock()
	p.role, p.leader = role, leader
	p.mu.Unlock()
	return &sdk.SetRoleRequest{Role: role, LeaderNode: leader.ID, LeaderAddress: leader.Broker}
}

// Replicate commits a batch through raft. Only the leader takes it; the
// answer comes once a quorum holds the entry and this node's FSM stored it,
// with the offsets its store assigned. A leader deposed meanwhile answers an
// error (outcome unknown), never OK.
func (p *Plugin) Replicate(ctx context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("%w: raft is starting", sdk.ErrNotLeader)
	}
	if r.State() != hraft.Leader {
		_, id := r.LeaderWithID()
		return nil, fmt.Errorf("%w: this node is not the raft leader (leader: %q)", sdk.ErrNotLeader, id)
	}
	data, err := proto.Marshal(&ferryv1.ApplyRequest{Messages: msgs})
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(p.cfg.ApplyTimeout)
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	fut := r.Apply(data, timeout)
	return func(ctx context.Context) (sdk.Status, []int64, error) {
		done := make(chan error, 1)
		go func() { done <- fut.Error() }()
		var err error
		select {
		case err = <-done:
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("%w: raft commit not confirmed in time, outcome unknown", ctx.Err())
		}
		switch {
		case err == nil:
		case errors.Is(err, hraft.ErrNotLeader):
			return 0, nil, fmt.Errorf("%w: %v", sdk.ErrNotLeader, err)
		case errors.Is(err, hraft.ErrEnqueueTimeout):
			return 0, nil, fmt.Errorf("%w: raft apply queue full", sdk.ErrReplicaTimeout)
		default:
			// Leadership lost, raft shut down: the entry may still
			// commit under the next leader.
			return 0, nil, fmt.Errorf("%w: raft: %v (outcome unknown)", sdk.ErrUnavailable, err)
		}
		resp := fut.Response()
		if pa, ok := resp.(*pendingApply); ok {
			// Committed; this node's store append runs in the apply
			// pipeline (pipeline.go).
			offs, err := pa.result(ctx)
			switch {
			case err == nil:
				resp = offs
			case ctx.Err() != nil:
				return 0, nil, fmt.Errorf("%w: committed, but storing it here not confirmed in time", ctx.Err())
			default:
				resp = err
			}
		}
		switch v := resp.(type) {
		case []int64:
			return ferryv1.Status_STATUS_OK, v, nil
		case error:
			return 0, nil, fmt.Errorf("%w: committed, but storing it here failed: %v", sdk.ErrUnavailable, v)
		default:
			return 0, nil, fmt.Errorf("%w: committed entry applied before this node's restart", sdk.ErrUnavailable)
		}
	}, nil
}

// Status reports the node's raft role, term and log positions.
func (p *Plugin) Status(ctx context.Context) (*sdk.ReplicationStatus, error) {
	p.mu.Lock()
	r, core, role, leader, addr := p.raft, p.core, p.role, p.leader, p.address
	p.mu.Unlock()
	st := &ferryv1.ReplicationStatusResponse{Node: p.node, Role: role, Address: addr, Mode: "raft",
		LeaderNode: leader.ID, LeaderAddress: leader.Broker, LeaderConnected: leader.ID != ""}
	if r == nil || core == nil {
		st.Role = "starting"
		return st, nil
	}
	stats := r.Stats()
	st.Epoch, _ = strconv.ParseUint(stats["term"], 10, 64)
	commit, _ := strconv.ParseInt(stats["commit_index"], 10, 64)
	applied, _ := strconv.ParseInt(stats["applied_index"], 10, 64)
	last, _ := strconv.ParseInt(stats["last_log_index"], 10, 64)
	snap, _ := strconv.ParseInt(stats["last_snapshot_index"], 10, 64)
	info, err := core.NodeInfo(ctx)
	if err != nil {
		return nil, err
	}
	st.Offsets = info.Offsets
	st.AppliedIndex = uint64(applied)
	if first, err := p.logs.FirstIndex(); err == nil {
		st.LogFirstIndex = first
	}
	if cf := r.GetConfiguration(); cf.Error() == nil {
		st.Servers = servers(cf.Configuration())
		st.MembershipConflict = p.conflict(cf.Configuration())
	}
	st.Replicas = []*ferryv1.ReplicaInfo{{Node: p.node, Address: addr, Connected: leader.ID != "",
		Lag: commit - applied, Detail: fmt.Sprintf("raft log: last %d, committed %d, applied %d (lag in entries); snapshots restored %d, %d messages fetched from peers, %d catch-ups served; last snapshot at index %d",
			last, commit, applied, p.restored.Load(), p.caughtUp.Load(), p.served.Load(), snap)}}
	return st, nil
}

// Close stops raft's listeners and closes the log, once Serve's start of
// raft is over.
func (p *Plugin) Close() error {
	p.startMu.Lock()
	p.closed = true
	p.startMu.Unlock()
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r != nil {
		p.stopRaft(r)
	}
	if p.admin != nil {
		p.admin.Stop()
	}
	p.closeConns()
	if p.trans != nil {
		_ = p.trans.Close()
	}
	if p.logs.WAL != nil {
		return p.logs.Close()
	}
	return nil
}

// stopRaft shuts raft down and waits until it is down: its goroutines are
// done with the log, which Close closes next. Every caller waits on the
// first Shutdown's future; hashicorp/raft's later ones do not wait.
func (p *Plugin) stopRaft(r *hraft.Raft) {
	p.stopOnce.Do(func() { p.stopped = r.Shutdown() })
	_ = p.stopped.Error()
}

// admin serves `ferry cluster status` for a raft node, and peers'
// catch-up after a snapshot.
type admin struct {
	ferryv1.UnimplementedReplicaLinkServer
	p *Plugin
}

func (a *admin) Status(ctx context.Context, _ *ferryv1.ReplicationStatusRequest) (*ferryv1.ReplicationStatusResponse, error) {
	return a.p.Status(ctx)
}

// Follow serves a peer's catch-up after a snapshot (catchup.go).
func (a *admin) Follow(stream ferryv1.ReplicaLink_FollowServer) error { return a.p.follow(stream) }

// ChangeMembers adds or removes a node, on the leader (members.go).
func (a *admin) ChangeMembers(ctx context.Context, req *ferryv1.ChangeMembersRequest) (*ferryv1.ChangeMembersResponse, error) {
	return a.p.changeMembers(ctx, req)
}

// Promote is always refused: raft elects its leader by itself. The
// refusal is audited as master–slave's Promote is (`audit: admin action`,
// action Promote, with the caller's address and certificate), so that an
// attempt to take over a raft group shows in the log.
func (a *admin) Promote(ctx context.Context, req *ferryv1.PromoteRequest) (*ferryv1.PromoteResponse, error) {
	const refusal = "raft elects its leader by itself; promote is for master–slave replication"
	args := []any{"action", "Promote", "resource", "Cluster", "node", a.p.node, "force", req.GetForce(), "result", refusal}
	a.p.audit.Info("audit: admin action", append(args, security.PeerAuditArgs(ctx)...)...)
	return nil, status.Error(codes.FailedPrecondition, refusal)
}

// reportConflict logs, once per change, how the pipeline's peers and the
// live configuration disagree (members.go); it changes nothing.
func (p *Plugin) reportConflict(r *hraft.Raft) {
	cf := r.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	c := p.conflict(cf.Configuration())
	p.mu.Lock()
	changed := c != p.conflictSeen
	p.conflictSeen = c
	p.mu.Unlock()
	if changed && c != "" {
		p.log.Warn("the pipeline's peers and the raft group's live configuration disagree; nothing is changed by itself (ferry cluster add-node / remove-node change the group)", "conflict", c)
	}
}
