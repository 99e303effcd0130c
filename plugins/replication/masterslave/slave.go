package masterslave

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// runSlave follows the master until the node is promoted or ctx ends.
func (p *Plugin) runSlave(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	p.promote = cancel
	p.stepDown = nil
	leader := p.leader
	p.mu.Unlock()
	role := &sdk.SetRoleRequest{Role: sdk.RoleSlave}
	if leader != nil {
		role.LeaderNode, role.LeaderAddress = leader.Node, leader.Address
	}
	if err := p.core.SetRole(ctx, role); err != nil {
		return err
	}
	backoff := 100 * time.Millisecond
	for sctx.Err() == nil {
		addr, st := p.findMaster(sctx)
		if st != nil {
			err := p.follow(sctx, addr, st)
			if sctx.Err() != nil {
				break
			}
			p.log("link to master %s (%s) ended: %v", st.Node, addr, err)
		}
		select {
		case <-sctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
	return nil
}

// log reports link events; the plugin's stderr reaches the host's log.
func (p *Plugin) log(format string, args ...any) {
	logger.Info(fmt.Sprintf(format, args...))
}

var logger = hclog.New(&hclog.LoggerOptions{Name: "replication", Output: os.Stderr, JSONFormat: true})

// findMaster asks the peers who is master; the highest epoch wins.
func (p *Plugin) findMaster(ctx context.Context) (string, *ferryv1.ReplicationStatusResponse) {
	var (
		best     *ferryv1.ReplicationStatusResponse
		bestAddr string
	)
	for a, st := range p.peerStatus(ctx) {
		if st.Role == sdk.RoleMaster && (best == nil || st.Epoch > best.Epoch) {
			best, bestAddr = st, a
		}
	}
	return bestAddr, best
}

// follow runs one Follow stream: hello with this node's ends, then apply
// what the master sends, in order, confirming each batch once durable.
func (p *Plugin) follow(ctx context.Context, addr string, master *ferryv1.ReplicationStatusResponse) error {
	info, err := p.core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	cc, rpc, err := p.dialMaster(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// With a core in another process the master's messages stay in their
	// wire form from the link to the core (followCodec, ApplyEncoded).
	ea, _ := p.core.(sdk.EncodedApplier)
	var copts []grpc.CallOption
	if ea != nil {
		copts = append(copts, grpc.ForceCodecV2(followCodec{sdk.GRPCCodec()}))
	}
	stream, err := rpc.Follow(fctx, copts...)
	if err != nil {
		return err
	}
	p.mu.Lock()
	epoch := p.st.Epoch
	p.localEnds = endsOf(info.Offsets)
	// The master sends every group it knows when the stream opens, and
	// its offsets rule while linked: forget what an earlier link sent.
	clear(p.offs)
	clear(p.offDone)
	p.mu.Unlock()
	if err := stream.Send(&ferryv1.FollowRequest{Node: info.Node, Address: info.Address, Ends: info.Offsets, Epoch: epoch, GroupDeletionsVersion: groupDeletionsVersion}); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		p.peerRefused(addr, err) // refused at the handshake (masters), say
		return err
	}
	// The master it reached must be the node its certificate names, and
	// the one it asked to follow (the status answer's node).
	pr, _ := peer.FromContext(stream.Context())
	if err := p.peers.CheckAnswer(pr, addr, first.MasterNode); err != nil {
		p.peerRefused(addr, err)
		return err
	}
	if err := p.mayFollow(addr, first.MasterNode); err != nil {
		p.peerRefused(addr, err)
		return err
	}
	if p.peers.Authenticated() && first.MasterNode != master.Node {
		err := &security.PeerError{Peer: addr, Reason: fmt.Sprintf("the peer answered its status as node %q and its follow as master %q", master.Node, first.MasterNode)}
		p.peerRefused(addr, err)
		return err
	}
	p.mu.Lock()
	p.leader = &ferryv1.ReplicationStatusResponse{Node: first.MasterNode, Address: first.MasterAddress, Epoch: first.Epoch}
	p.leaderUp = true
	p.leaderEnds = endsOf(first.Ends)
	p.leaderAcked = endsOf(first.AckedEnds)
	if first.Epoch > p.st.Epoch {
		p.st.Epoch = first.Epoch
		_ = saveState(p.dir, p.st)
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.leaderUp = false
		p.mu.Unlock()
	}()
	// Groups' offsets are committed here by their own goroutine, kicked
	// when the master sends some and when the log grows.
	offKick := make(chan struct{}, 1)
	offDone := make(chan struct{})
	go func() {
		defer close(offDone)
		p.commitOffsets(fctx, offKick)
	}()
	defer func() {
		cancel(nil)
		<-offDone
	}()
	if dels := followDeletions(first); len(dels) > 0 {
		p.masterDeletes(dels)
		kickChan(offKick)
	}
	if len(first.GroupOffsets) > 0 {
		p.masterOffsets(first.GroupOffsets)
		kickChan(offKick)
	}
	if err := p.core.SetRole(ctx, &sdk.SetRoleRequest{Role: sdk.RoleSlave, LeaderNode: first.MasterNode, LeaderAddress: first.MasterAddress}); err != nil {
		return err
	}
	var sendMu sync.Mutex
	send := func(r *ferryv1.FollowRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	if first.Topics != nil {
		if err := p.core.ApplyTopics(fctx, first.Topics); err != nil {
			return fmt.Errorf("applying the master's topics: %w", err)
		}
		if first.TopicsVersion > 0 {
			if err := send(&ferryv1.FollowRequest{TopicsApplied: first.TopicsVersion}); err != nil {
				return err
			}
		}
	}
	// Applies are started in order here and confirmed in order by acker.
	type applied struct {
		wait sdk.ApplyWait
		pos  []sdk.MessagePosition
		// barrier, when set, is closed once every apply before it
		// is confirmed (a topic set waits for it).
		barrier chan struct{}
	}
	waits := make(chan applied, 256)
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		for a := range waits {
			if a.barrier != nil {
				close(a.barrier)
				continue
			}
			if _, err := a.wait(fctx); err != nil {
				cancel(fmt.Errorf("apply: %w", err))
				for range waits {
				}
				return
			}
			ends := map[qkey]int64{}
			for _, m := range a.pos {
				ends[qkey{m.Topic, m.Queue}] = m.Offset + 1
			}
			p.mu.Lock()
			for k, e := range ends {
				p.localEnds[k] = max(p.localEnds[k], e)
			}
			p.mu.Unlock()
			kickChan(offKick) // offsets clamped to the old ends may move
			if err := send(&ferryv1.FollowRequest{Ends: offsetsOf(ends)}); err != nil {
				cancel(err)
			}
		}
	}()
	defer func() {
		close(waits)
		<-ackerDone
	}()
	// Heartbeats, and a watchdog on the master's silence.
	heard := make(chan struct{}, 1)
	go func() {
		tick := time.NewTicker(heartbeatEvery)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-fctx.Done():
				return
			case <-heard:
				last = time.Now()
			case <-tick.C:
				if time.Since(last) > silenceLimit {
					cancel(errors.New("master silent for too long"))
					return
				}
				p.mu.Lock()
				ends := offsetsOf(p.localEnds)
				p.mu.Unlock()
				if err := send(&ferryv1.FollowRequest{Ends: ends}); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if c := context.Cause(fctx); c != nil && !errors.Is(c, context.Canceled) {
				return c
			}
			return err
		}
		select {
		case heard <- struct{}{}:
		default:
		}
		if len(resp.Ends) > 0 || len(resp.AckedEnds) > 0 {
			p.mu.Lock()
			if len(resp.Ends) > 0 {
				p.leaderEnds = endsOf(resp.Ends)
			}
			for k, e := range endsOf(resp.AckedEnds) {
				p.leaderAcked[k] = max(p.leaderAcked[k], e)
			}
			p.mu.Unlock()
		}
		if dels := followDeletions(resp); len(dels) > 0 {
			p.masterDeletes(dels) // before this frame's offsets
			kickChan(offKick)
		}
		if len(resp.GroupOffsets) > 0 {
			p.masterOffsets(resp.GroupOffsets)
			kickChan(offKick)
		}
		if resp.Topics != nil {
			// After the applies before it, before this frame's.
			barrier := make(chan struct{})
			select {
			case waits <- applied{barrier: barrier}:
			case <-fctx.Done():
				return context.Cause(fctx)
			}
			select {
			case <-barrier:
			case <-fctx.Done():
				return context.Cause(fctx)
			}
			if err := p.core.ApplyTopics(fctx, resp.Topics); err != nil {
				return fmt.Errorf("applying the master's topics: %w", err)
			}
			if resp.TopicsVersion > 0 {
				// Confirmed: a sync master answers the change now.
				if err := send(&ferryv1.FollowRequest{TopicsApplied: resp.TopicsVersion}); err != nil {
					return err
				}
			}
		}
		var (
			pos []sdk.MessagePosition
			enc sdk.EncodedMessages
		)
		if ea != nil {
			// Kept encoded by followCodec: its unknown fields are the
			// records of field 1, and only them.
			enc.Records = resp.ProtoReflect().GetUnknown()
			if pos, err = enc.Positions(); err != nil {
				return fmt.Errorf("the master's messages: %w", err)
			}
			enc.N = len(pos)
		} else {
			pos = make([]sdk.MessagePosition, len(resp.Messages))
			for i, m := range resp.Messages {
				pos[i] = sdk.MessagePosition{Topic: m.Topic, Queue: m.Queue, Offset: m.Offset}
			}
		}
		if len(pos) == 0 {
			continue
		}
		p.mu.Lock()
		for _, m := range pos {
			k := qkey{m.Topic, m.Queue}
			p.leaderEnds[k] = max(p.leaderEnds[k], m.Offset+1)
		}
		p.mu.Unlock()
		var wait sdk.ApplyWait
		if enc.N > 0 {
			wait, err = ea.ApplyEncoded(fctx, enc)
		} else {
			wait, err = p.core.Apply(fctx, resp.Messages)
		}
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		select {
		case waits <- applied{wait: wait, pos: pos}:
		case <-fctx.Done():
			return context.Cause(fctx)
		}
	}
}

// Promote makes this slave the master, under the rules of the package doc,
// and logs an audit line (`audit: admin action`, action Promote) with the
// caller's address, the names of its certificate under mutual TLS, whether
// it forced, and the result. Only a peer that proved it belongs to the
// cluster reaches it (security.Peers).
func (l *link) Promote(ctx context.Context, req *ferryv1.PromoteRequest) (*ferryv1.PromoteResponse, error) {
	resp, err := l.promote(ctx, req)
	result := "ok"
	if err != nil {
		result = status.Convert(err).Message()
	}
	args := []any{"action", "Promote", "resource", "Cluster", "node", l.p.self, "force", req.GetForce(), "result", result}
	args = append(args, security.PeerAuditArgs(ctx)...)
	logger.Info("audit: admin action", args...)
	return resp, err
}

func (l *link) promote(ctx context.Context, req *ferryv1.PromoteRequest) (*ferryv1.PromoteResponse, error) {
	p := l.p
	p.mu.Lock()
	role, up, core := p.role, p.leaderUp, p.core
	p.mu.Unlock()
	if core == nil {
		return nil, status.Error(codes.Unavailable, "the node is not serving yet")
	}
	if role != sdk.RoleSlave {
		return nil, status.Errorf(codes.FailedPrecondition, "node is %s, not a slave", role)
	}
	peers := p.peerStatus(ctx)
	maxEpoch := uint64(0)
	var masters []string
	for a, st := range peers {
		maxEpoch = max(maxEpoch, st.Epoch)
		if st.Role == sdk.RoleMaster {
			masters = append(masters, fmt.Sprintf("%s (%s)", st.Node, a))
		}
	}
	if !req.Force && (up || len(masters) > 0) {
		return nil, status.Errorf(codes.FailedPrecondition,
			"a master is reachable (link up: %v; masters: %v): stop it first, or --force (two masters may then take writes)", up, masters)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.role != sdk.RoleSlave {
		return nil, status.Errorf(codes.FailedPrecondition, "node is %s, not a slave", p.role)
	}
	behind, missingAcked := int64(0), int64(0)
	for k, e := range p.leaderEnds {
		if d := e - p.localEnds[k]; d > 0 {
			behind += d
		}
	}
	for k, e := range p.leaderAcked {
		if d := e - p.localEnds[k]; d > 0 {
			missingAcked += d
		}
	}
	if missingAcked > 0 && p.mode == ModeSync && !req.Force {
		return nil, status.Errorf(codes.FailedPrecondition,
			"this slave lacks %d message(s) its master answered OK to producers: promote a slave that holds them, or --force (they would be lost)", missingAcked)
	}
	epoch := max(maxEpoch, p.st.Epoch) + 1
	ns := state{Role: sdk.RoleMaster, Epoch: epoch}
	if err := saveState(p.dir, ns); err != nil {
		return nil, status.Errorf(codes.Internal, "persist the promotion: %v", err)
	}
	p.st = ns
	p.role = sdk.RoleMaster
	p.promotedOffsetsLocked()
	if p.promote != nil {
		p.promote()
	}
	detail := fmt.Sprintf("promoted %s to master at epoch %d", p.self, epoch)
	if behind > 0 {
		detail += fmt.Sprintf("; it lacked %d message(s) of the old master's last known log (lost unless the old master's data is recovered)", behind)
	}
	return &ferryv1.PromoteResponse{Epoch: epoch, Detail: detail}, nil
}
