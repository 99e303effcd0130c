package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	hraft "github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// Membership changes (see the package doc, "Membership").
//
// `ferry cluster add-node` and `remove-node` call ChangeMembers on the
// leader's admin listener. An add first commits the new node's addresses
// (broker, admin: raft's configuration holds only its id and raft address)
// as an entry of kind kindMembers, so that every node can route clients to
// it and fetch a catch-up from it when it leads; then AddNonvoter; then, once
// the new node applied everything the leader had when it was added, AddVoter.
// A remove is RemoveServer, then an entry that drops the addresses.
//
// The members table (the addresses the log recorded) is kept in
// members.json in the plugin's dir, written before the entry counts as
// applied, and in every snapshot. The pipeline's peers list comes first
// when a peer is looked up; the live configuration is raft's. Where the
// pipeline and the live configuration disagree the node reports it (Status,
// `ferry cluster status`, a warning in its log) and never changes the
// group by itself.

// Defaults of a membership change.
const (
	// defaultCatchUpTimeout bounds how long an added node may take to
	// apply what the leader had when it was added before it is made a
	// voter.
	defaultCatchUpTimeout = 5 * time.Minute
	catchUpPoll           = 250 * time.Millisecond
	membersFile           = "members.json"
)

// memberChange is the payload of a kindMembers entry.
type memberChange struct {
	Op   string `json:"op"` // "add" or "remove"
	Peer Peer   `json:"peer"`
}

func encodeMembers(ch memberChange) ([]byte, error) {
	b, err := json.Marshal(ch)
	if err != nil {
		return nil, err
	}
	return append([]byte{entryTagged, kindMembers}, b...), nil
}

// isMembers reports whether a log entry is a members change.
func isMembers(l *hraft.Log) bool {
	return l.Type == hraft.LogCommand && len(l.Data) >= 2 && l.Data[0] == entryTagged && l.Data[1] == kindMembers
}

// applyMembersEntry applies one members entry: the table, then members.json,
// then the applied index. Like a topic change it is a barrier (ApplyBatch).
func (f *fsm) applyMembersEntry(l *hraft.Log) any {
	if l.Index <= f.applied {
		return nil
	}
	_, payload, err := decodeEntry(l.Data)
	var ch memberChange
	if err == nil {
		err = json.Unmarshal(payload, &ch)
	}
	if err == nil {
		f.p.mu.Lock()
		if f.p.members == nil {
			f.p.members = map[string]Peer{}
		}
		switch ch.Op {
		case "add":
			f.p.members[ch.Peer.ID] = ch.Peer
		case "remove":
			delete(f.p.members, ch.Peer.ID)
		default:
			err = fmt.Errorf("raft members entry: unknown op %q", ch.Op)
		}
		f.p.mu.Unlock()
	}
	if err == nil {
		err = f.p.saveMembers()
	}
	if err != nil {
		f.p.log.Error("a members change from the raft log was not applied", "index", l.Index, "error", err)
	}
	f.applied = l.Index
	f.saveApplied()
	if err != nil {
		return err
	}
	return nil
}

// memberTable is a copy of the members table (nil when empty), for a
// snapshot.
func (p *Plugin) memberTable() map[string]Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.members) == 0 {
		return nil
	}
	return maps.Clone(p.members)
}

// setMembers replaces the table (a snapshot restored).
func (p *Plugin) setMembers(m map[string]Peer) {
	p.mu.Lock()
	p.members = maps.Clone(m)
	p.mu.Unlock()
	if err := p.saveMembers(); err != nil {
		p.log.Error("recording the raft members table", "error", err)
	}
}

// loadMembers reads members.json (none: an empty table).
func (p *Plugin) loadMembers() error {
	b, err := os.ReadFile(filepath.Join(p.dir, membersFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var m map[string]Peer
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(p.dir, membersFile), err)
	}
	p.mu.Lock()
	p.members = m
	p.mu.Unlock()
	return nil
}

// saveMembers writes the table: a temporary file renamed over the old one.
func (p *Plugin) saveMembers() error {
	b, err := json.Marshal(p.memberTable())
	if err != nil {
		return err
	}
	path := filepath.Join(p.dir, membersFile)
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// peer looks a node up: in the pipeline's peers first, then in the
// members table.
func (p *Plugin) peer(id string) (Peer, bool) {
	for _, peer := range p.cfg.Peers {
		if peer.ID == id {
			return peer, true
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	peer, ok := p.members[id]
	return peer, ok
}

// servers lists a configuration's servers for Status and ChangeMembers.
func servers(c hraft.Configuration) []*ferryv1.RaftServer {
	var out []*ferryv1.RaftServer
	for _, s := range c.Servers {
		suf := "voter"
		if s.Suffrage != hraft.Voter {
			suf = "nonvoter"
		}
		out = append(out, &ferryv1.RaftServer{Id: string(s.ID), Raft: string(s.Address), Suffrage: suf})
	}
	return out
}

// conflict says how the pipeline's peers and the live configuration
// disagree ("" when they agree). It is reported, never acted on: the
// group changes only through ChangeMembers.
func (p *Plugin) conflict(c hraft.Configuration) string {
	if len(c.Servers) == 0 {
		if p.cfg.Join {
			return "this node has not been added to the group yet (join: true): run ferry cluster add-node with its pipeline"
		}
		return "this node knows no configuration of the group yet"
	}
	live := map[string]hraft.Server{}
	for _, s := range c.Servers {
		live[string(s.ID)] = s
	}
	var ps []string
	if _, ok := live[p.node]; !ok {
		ps = append(ps, fmt.Sprintf("this node (%s) is not a member of the group (removed, or not added yet): it serves no writes", p.node))
	}
	listed := map[string]bool{}
	for _, peer := range p.cfg.Peers {
		listed[peer.ID] = true
		s, ok := live[peer.ID]
		switch {
		case !ok && peer.ID != p.node:
			ps = append(ps, fmt.Sprintf("the pipeline lists %s, which is not in the group (ferry cluster add-node adds it)", peer.ID))
		case ok && string(s.Address) != peer.Raft:
			ps = append(ps, fmt.Sprintf("the pipeline gives %s raft address %s, the group %s", peer.ID, peer.Raft, s.Address))
		}
	}
	var extra []string
	for id := range live {
		if !listed[id] {
			extra = append(extra, id)
		}
	}
	sort.Strings(extra)
	for _, id := range extra {
		ps = append(ps, fmt.Sprintf("the group has %s, which the pipeline does not list (add it to peers, or ferry cluster remove-node)", id))
	}
	return strings.Join(ps, "; ")
}

// membersError is a refused membership change, for the admin's caller.
func membersError(format string, args ...any) error {
	return status.Errorf(codes.FailedPrecondition, format, args...)
}

// changeMembers serves ChangeMembers on the leader.
func (p *Plugin) changeMembers(ctx context.Context, req *ferryv1.ChangeMembersRequest) (*ferryv1.ChangeMembersResponse, error) {
	p.mu.Lock()
	r := p.raft
	p.mu.Unlock()
	if r == nil {
		return nil, status.Error(codes.Unavailable, "raft is starting")
	}
	if r.State() != hraft.Leader {
		_, id := r.LeaderWithID()
		leader, _ := p.peer(string(id))
		return nil, membersError("not the raft leader (leader: %q, admin %q): membership changes go to the leader", id, leader.Admin)
	}
	if req.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	timeout := time.Duration(p.cfg.ApplyTimeout)
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "raft configuration: %v", err)
	}
	var cur *hraft.Server
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == req.Id {
			cur = &s
		}
	}
	var detail string
	switch req.Op {
	case "add":
		for path, v := range map[string]string{"raft": req.Raft, "broker": req.Broker, "admin": req.Admin} {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "%s: must be host:port (got %q)", path, v)
			}
		}
		if cur != nil && string(cur.Address) != req.Raft {
			return nil, membersError("%s is in the group with raft address %s, not %s: remove it first", req.Id, cur.Address, req.Raft)
		}
		if cur != nil && cur.Suffrage == hraft.Voter {
			detail = fmt.Sprintf("%s is a voter of the group already", req.Id)
			break
		}
		if err := p.applyMembers(ctx, r, memberChange{Op: "add", Peer: Peer{ID: req.Id, Raft: req.Raft, Broker: req.Broker, Admin: req.Admin}}, timeout); err != nil {
			return nil, err
		}
		if err := r.AddNonvoter(hraft.ServerID(req.Id), hraft.ServerAddress(req.Raft), 0, timeout).Error(); err != nil {
			return nil, raftError("adding "+req.Id+" as a non-voter", err)
		}
		target := r.LastIndex()
		wait := defaultCatchUpTimeout
		if req.CatchUpTimeoutMs > 0 {
			wait = time.Duration(req.CatchUpTimeoutMs) * time.Millisecond
		}
		applied, err := p.awaitCatchUp(ctx, req.Admin, target, wait)
		if err != nil {
			return nil, membersError("%s was added as a non-voter but did not catch up (applied %d of %d): %v; it stays a non-voter (add-node again to retry, remove-node to drop it)", req.Id, applied, target, err)
		}
		if err := r.AddVoter(hraft.ServerID(req.Id), hraft.ServerAddress(req.Raft), 0, timeout).Error(); err != nil {
			return nil, raftError("promoting "+req.Id+" to voter", err)
		}
		detail = fmt.Sprintf("%s added: a non-voter until it applied entry %d (it had applied %d), then a voter", req.Id, target, applied)
	case "remove":
		if cur == nil {
			detail = fmt.Sprintf("%s is not in the group", req.Id)
			break
		}
		if err := r.RemoveServer(hraft.ServerID(req.Id), 0, timeout).Error(); err != nil {
			return nil, raftError("removing "+req.Id, err)
		}
		detail = fmt.Sprintf("%s removed from the group", req.Id)
		if req.Id == p.node {
			detail += " (it was the leader: the others elect a new one)"
		} else if err := p.applyMembers(ctx, r, memberChange{Op: "remove", Peer: Peer{ID: req.Id}}, timeout); err != nil {
			detail += fmt.Sprintf("; its addresses stay in the members table: %v", err)
		}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "op: must be add or remove (got %q)", req.Op)
	}
	resp := &ferryv1.ChangeMembersResponse{Detail: detail}
	if cf := r.GetConfiguration(); cf.Error() == nil {
		resp.Servers = servers(cf.Configuration())
	}
	return resp, nil
}

// applyMembers commits a members entry and waits for this node's FSM.
func (p *Plugin) applyMembers(ctx context.Context, r *hraft.Raft, ch memberChange, timeout time.Duration) error {
	data, err := encodeMembers(ch)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	fut := r.Apply(data, timeout)
	if err := fut.Error(); err != nil {
		return raftError("recording the addresses of "+ch.Peer.ID, err)
	}
	if err, ok := fut.Response().(error); ok {
		return status.Errorf(codes.Internal, "recording the addresses of %s: %v", ch.Peer.ID, err)
	}
	return nil
}

// awaitCatchUp polls the added node's admin listener until it applied the
// entry target, for up to wait; it returns the last applied index seen.
func (p *Plugin) awaitCatchUp(ctx context.Context, adminAddr string, target uint64, wait time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	cc, err := grpc.NewClient(adminAddr, grpc.WithTransportCredentials(p.peers.GRPC()))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	lc := ferryv1.NewReplicaLinkClient(cc)
	var applied uint64
	var last error
	for {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := lc.Status(sctx, &ferryv1.ReplicationStatusRequest{})
		scancel()
		if err == nil {
			applied = st.AppliedIndex
			if applied >= target {
				return applied, nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return applied, fmt.Errorf("%w (last status error: %v)", ctx.Err(), last)
			}
			return applied, ctx.Err()
		case <-time.After(catchUpPoll):
		}
	}
}

// raftError maps a raft future's error for the admin's caller.
func raftError(what string, err error) error {
	code := codes.Unavailable
	if errors.Is(err, hraft.ErrNotLeader) || errors.Is(err, hraft.ErrLeadershipLost) {
		code = codes.FailedPrecondition
	}
	return status.Errorf(code, "%s: %v", what, err)
}
