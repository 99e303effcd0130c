package raft

import (
	"context"
	"errors"
	"fmt"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Consumer commits made through a follower (the package doc, "Consumer
// offsets").
//
// A consumer reading from a follower commits there. The follower's broker
// stores the offsets and hands them to CommitOffsets, as the leader's does;
// the follower forwards them to the leader's admin listener
// (ReplicaLink.CommitOffsets), where they join the leader's group commit,
// and answers with the leader's answer. So the commit is acknowledged only
// once it is committed through the log, wherever the consumer made it.
// While no leader answers (an election, a leader just killed), the
// forward is tried again every forwardRetry until ctx ends.
//
// The forward carries the commit's group generation. The leader hands the
// forwarded commit to its core (sdk.CommitForwarder), which takes it as a
// commit of its own clients: through the group's gate (ordered with a
// deletion of the group made on the leader: a commit under way holds the
// deletion back, one arriving during it is refused UNAVAILABLE and tried
// again here) and the generation check (a commit sent before the deletion
// is refused STALE_GENERATION), then through this plugin's group commit.

// forwardRetry is the pause between two forwards of one commit.
const forwardRetry = 100 * time.Millisecond

// forwardOffsets forwards a group's offsets to the leader and waits for
// its answer, trying again while there is no leader or the leader answers
// that it is not (any more) the leader or cannot confirm the entry. ctx has
// a deadline.
func (p *Plugin) forwardOffsets(ctx context.Context, group string, generation uint64, offsets []*sdk.GroupOffset) error {
	if offsetsNoForward {
		// The fault hook of test builds (faults_on.go): the commit stays
		// on this node, as before commits were forwarded.
		return nil
	}
	req := &ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets, Generation: generation}
	for {
		err := p.forwardOnce(ctx, req)
		if err == nil || !(errors.Is(err, sdk.ErrNotLeader) || errors.Is(err, sdk.ErrUnavailable)) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: consumer offsets of group %q not committed through the raft leader in time (outcome unknown; commit again): %v", sdk.ErrUnavailable, group, err)
		case <-time.After(forwardRetry):
		}
	}
}

// forwardOnce sends the commit to the leader this node knows now (or
// commits it here, if this node has become the leader).
func (p *Plugin) forwardOnce(ctx context.Context, req *ferryv1.CommitOffsetsRequest) error {
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r == nil {
		return fmt.Errorf("%w: raft is starting", sdk.ErrNotLeader)
	}
	if r.State() == hraft.Leader {
		return p.commitOnLeader(ctx, req.Group, req.Offsets)
	}
	_, id := r.LeaderWithID()
	if id == "" {
		return fmt.Errorf("%w: this node is a raft follower and knows no leader now (an election is under way); its consumer commits go through the leader", sdk.ErrNotLeader)
	}
	leader, ok := p.peer(string(id))
	if !ok || leader.Admin == "" {
		// Not retried: a configuration error (admin is required in a
		// group of more than one node).
		return fmt.Errorf("the raft leader %s has no admin address in this node's peers or members table: consumer commits made here cannot be forwarded to it", id)
	}
	cc, err := p.adminConn(leader.Admin, string(id))
	if err != nil {
		return fmt.Errorf("raft leader %s's admin %s: %w", id, leader.Admin, err)
	}
	if _, err := ferryv1.NewReplicaLinkClient(cc).CommitOffsets(ctx, req); err != nil {
		return fmt.Errorf("consumer offsets forwarded to the raft leader %s (admin %s): %w", id, leader.Admin, sdk.ErrorFromStatus(err))
	}
	return nil
}

// adminConn returns the plugin's connection to the admin listener of
// the peer node at addr, dialled once and kept until Close (connections
// are lazy: a peer that is down costs nothing until a call, which then
// fails UNAVAILABLE). When the links bind node ids, the peer's certificate
// must name node, or every call fails with the refusal naming both.
func (p *Plugin) adminConn(addr, node string) (*grpc.ClientConn, error) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	key := addr + " " + node
	if cc := p.conns[key]; cc != nil {
		return cc, nil
	}
	if p.connsClosed {
		return nil, fmt.Errorf("%w: the raft plugin is closing", sdk.ErrUnavailable)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(p.peers.GRPCTo([]string{node}, "the raft leader")))
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[key] = cc
	return cc, nil
}

// closeConns closes the connections adminConn made (Close).
func (p *Plugin) closeConns() {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	p.connsClosed = true
	for _, cc := range p.conns {
		_ = cc.Close()
	}
	p.conns = nil
}

// CommitOffsets serves a follower's forwarded consumer commit, on the
// leader only (never forwarded again: two nodes that each believe the
// other leads answer NOT_LEADER instead of passing it around).
func (a *admin) CommitOffsets(ctx context.Context, req *ferryv1.CommitOffsetsRequest) (*ferryv1.CommitOffsetsResponse, error) {
	if req.GetGroup() == "" {
		return nil, status.Error(codes.InvalidArgument, "group: is required")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, offsetCommitTimeout)
		defer cancel()
	}
	if err := a.p.commitForwarded(ctx, req); err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	return &ferryv1.CommitOffsetsResponse{}, nil
}

// commitForwarded takes a follower's forwarded commit on the leader: its
// core checks it as a commit of its own clients and commits it through
// this plugin's CommitOffsets (never forwarded: the core refuses once this
// node does not lead). Without a core that takes forwarded commits (not
// connected yet, or without sdk.CommitForwarder) the offsets go through the
// group commit unchecked, as before the check existed.
func (p *Plugin) commitForwarded(ctx context.Context, req *ferryv1.CommitOffsetsRequest) error {
	if forwardNoGate {
		// The fault hook of test builds (faults_on.go): the forwarded
		// commit bypasses the leader's core, as before it was checked.
		return p.commitOnLeader(ctx, req.Group, req.Offsets)
	}
	p.mu.Lock()
	core := p.core
	p.mu.Unlock()
	if cf, ok := core.(sdk.CommitForwarder); ok {
		err := cf.CommitForwarded(ctx, req)
		if !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
		p.log.Warn("the core does not check forwarded consumer commits; committed through the log unchecked", "group", req.Group, "error", err)
	}
	return p.commitOnLeader(ctx, req.Group, req.Offsets)
}
