package masterslave

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// session is the master's side of one slave's Follow stream.
type session struct {
	node, addr string
	sent       map[qkey]int64 // next offset to send per queue
	acked      map[qkey]int64 // ends the slave confirmed durable
	unacked    int64          // messages sent and not confirmed
	offSent    uint64         // group offsets up to this version were sent
	topicSent  uint64         // the master's topic set up to this version was sent
	topicAcked uint64         // the slave applied the master's topic set of this version
	lastHeard  time.Time
	cancel     context.CancelCauseFunc
	warning    string // the slave is older than this master expects (status detail)
}

// runMaster serves followers and Replicate until the node steps down or ctx
// ends.
func (p *Plugin) runMaster(ctx context.Context) error {
	info, err := p.core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ends = endsOf(info.Offsets)
	p.tails = map[qkey]*tail{}
	p.okEnds = map[qkey]int64{}
	p.topics = nil // a set from an earlier term as master is stale: NodeInfo's until the broker sends one
	p.stepDown = make(chan struct{})
	stepDown := p.stepDown
	p.leader, p.leaderUp = nil, false
	p.mu.Unlock()
	if err := p.core.SetRole(ctx, &sdk.SetRoleRequest{Role: sdk.RoleMaster, LeaderNode: info.Node, LeaderAddress: info.Address}); err != nil {
		return err
	}
	tick := time.NewTicker(peerCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p.endSessions(ctx.Err())
			return nil
		case <-stepDown:
			p.endSessions(errors.New("stepped down"))
			return nil
		case <-tick.C:
			p.checkPeers(ctx)
		}
	}
}

// checkPeers steps down when a peer is master with a higher epoch.
func (p *Plugin) checkPeers(ctx context.Context) {
	for addr, st := range p.peerStatus(ctx) {
		p.mu.Lock()
		if st.Role == sdk.RoleMaster && st.Epoch > p.st.Epoch && p.role == sdk.RoleMaster {
			p.st = state{Role: sdk.RoleSlave, Epoch: st.Epoch}
			if err := saveState(p.dir, p.st); err != nil {
				p.mu.Unlock()
				return
			}
			p.role = sdk.RoleSlave
			close(p.stepDown)
			p.mu.Unlock()
			_ = addr
			return
		}
		p.mu.Unlock()
	}
}

func (p *Plugin) endSessions(cause error) {
	p.mu.Lock()
	for s := range p.sessions {
		s.cancel(cause)
	}
	p.mu.Unlock()
}

// signal wakes what waits on ch and replaces it. Called with p.mu held.
func signal(ch *chan struct{}) {
	close(*ch)
	*ch = make(chan struct{})
}

// Replicate records a stored batch and, for sync, waits for min_replicas
// slaves to confirm it.
func (p *Plugin) Replicate(ctx context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	p.mu.Lock()
	if p.role != sdk.RoleMaster || p.stepDown == nil {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: this node is not master", sdk.ErrNotLeader)
	}
	target := map[qkey]int64{}
	for _, m := range msgs {
		k := qkey{m.Topic, m.Queue}
		end := m.Offset + 1
		if end > target[k] {
			target[k] = end
		}
		if m.Offset < p.ends[k] {
			continue // a re-stored duplicate: shipped already
		}
		p.ends[k] = end
		t := p.tails[k]
		if t == nil || t.first+int64(len(t.msgs)) != m.Offset {
			t = &tail{first: m.Offset}
			p.tails[k] = t
		}
		t.msgs = append(t.msgs, m)
		if len(t.msgs) > tailMessages {
			drop := len(t.msgs) - tailMessages/2
			t.msgs = append([]*sdk.Message(nil), t.msgs[drop:]...)
			t.first += int64(drop)
		}
	}
	signal(&p.wake)
	p.mu.Unlock()
	if p.mode == ModeAsync {
		return func(context.Context) (sdk.Status, []int64, error) { return ferryv1.Status_STATUS_OK, nil, nil }, nil
	}
	deadline := time.Now().Add(time.Duration(p.cfg.Timeout))
	return func(ctx context.Context) (sdk.Status, []int64, error) {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		for {
			p.mu.Lock()
			confirmed, connected := p.countLocked(target)
			progress := p.progress
			p.mu.Unlock()
			if confirmed >= p.cfg.MinReplicas {
				p.mu.Lock()
				for k, e := range target {
					p.okEnds[k] = max(p.okEnds[k], e)
				}
				p.mu.Unlock()
				return ferryv1.Status_STATUS_OK, nil, nil
			}
			if connected < p.cfg.MinReplicas {
				return ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE, nil, nil
			}
			select {
			case <-progress:
			case <-timer.C:
				return ferryv1.Status_STATUS_REPLICA_TIMEOUT, nil, nil
			case <-ctx.Done():
				return ferryv1.Status_STATUS_REPLICA_TIMEOUT, nil, nil
			}
		}
	}, nil
}

// countLocked counts the connected slaves and those that confirmed target.
func (p *Plugin) countLocked(target map[qkey]int64) (confirmed, connected int) {
	for s := range p.sessions {
		connected++
		ok := true
		for k, e := range target {
			if s.acked[k] < e {
				ok = false
				break
			}
		}
		if ok {
			confirmed++
		}
	}
	return confirmed, connected
}

// Follow serves one slave: it checks the slave's ends against this log,
// then streams what the slave lacks and takes its confirmations.
func (l *link) Follow(stream ferryv1.ReplicaLink_FollowServer) error {
	p := l.p
	hello, err := stream.Recv()
	if err != nil {
		return err
	}
	// The node it claims to be must be the one its certificate names:
	// refused before anything is read or shipped.
	if err := p.peers.CheckNode(stream.Context(), hello.Node); err != nil {
		return err
	}
	p.mu.Lock()
	isMaster := p.role == sdk.RoleMaster && p.stepDown != nil && p.core != nil
	epoch := p.st.Epoch
	p.mu.Unlock()
	if !isMaster {
		return status.Error(codes.FailedPrecondition, "NOT_LEADER: this node is not master")
	}
	if hello.Epoch > epoch {
		return status.Errorf(codes.FailedPrecondition, "NOT_LEADER: follower has seen epoch %d, this master is at %d", hello.Epoch, epoch)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	// The master's ends as stored now (stored but not yet handed over
	// counts: the slave may legitimately have it only if we sent it, which
	// we cannot have; so the stored end is the bound).
	info, err := p.core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	stored := endsOf(info.Offsets)
	held := heldTopics(info)
	s := &session{node: hello.Node, addr: hello.Address, sent: map[qkey]int64{}, acked: map[qkey]int64{}, lastHeard: time.Now(), cancel: cancel}
	if hello.GroupDeletionsVersion < groupDeletionsVersion {
		s.warning = oldSlaveWarning(hello.Node, hello.GroupDeletionsVersion)
		logger.Warn(s.warning)
	}
	for _, o := range hello.Ends {
		k := qkey{o.Topic, o.Queue}
		if _, _, internal := sdk.InternalTopic(o.Topic); !internal && !held[o.Topic] {
			// A topic the master deleted (or never had): the slave
			// deletes it with the master's topic set, which opens
			// the stream; nothing of it is shipped.
			continue
		}
		p.mu.Lock()
		bound := max(stored[k], p.ends[k])
		p.mu.Unlock()
		if o.End > bound {
			detail := fmt.Sprintf("refused: its %s/%d ends at %d, beyond this master's log (%d): it holds messages the master does not", o.Topic, o.Queue, o.End, bound)
			p.mu.Lock()
			p.refused[hello.Node] = &ferryv1.ReplicaInfo{Node: hello.Node, Address: hello.Address, Diverged: true, Detail: detail}
			p.mu.Unlock()
			return status.Error(codes.FailedPrecondition, "CORRUPT: "+detail)
		}
		s.sent[k], s.acked[k] = o.End, o.End
	}
	p.mu.Lock()
	delete(p.refused, hello.Node)
	for old := range p.sessions {
		if old.node == s.node {
			old.cancel(errors.New("replaced by a new link from the same node"))
			delete(p.sessions, old)
		}
	}
	p.sessions[s] = struct{}{}
	signal(&p.progress)
	groups, deleted := p.takeOffsetsLocked(s) // every group this master knows, and deleted
	topics := p.openingTopicsLocked(s, info)
	topicVer := s.topicSent
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if _, ok := p.sessions[s]; ok {
			delete(p.sessions, s)
			signal(&p.progress)
		}
		p.mu.Unlock()
	}()
	if err := stream.Send(&ferryv1.FollowResponse{MasterNode: info.Node, MasterAddress: info.Address, Epoch: epoch, Ends: l.ends(), GroupOffsets: groups, DeletedGroups: deletedNames(deleted), GroupDeletions: deleted, Topics: topics, TopicsVersion: topicVer}); err != nil {
		return err
	}
	go l.acks(ctx, stream, s)
	err = l.ship(ctx, stream, s)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return status.Error(codes.Aborted, cause.Error())
	}
	return err
}

func (l *link) ends() []*ferryv1.QueueOffsets {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return offsetsOf(l.p.ends)
}

// acks takes a slave's confirmations until the stream ends.
func (l *link) acks(ctx context.Context, stream ferryv1.ReplicaLink_FollowServer, s *session) {
	p := l.p
	for {
		req, err := stream.Recv()
		if err != nil {
			s.cancel(err)
			return
		}
		p.mu.Lock()
		s.lastHeard = time.Now()
		s.topicAcked = max(s.topicAcked, req.TopicsApplied)
		for _, o := range req.Ends {
			k := qkey{o.Topic, o.Queue}
			if o.End > s.sent[k] {
				detail := fmt.Sprintf("disconnected: confirmed %s/%d up to %d, more than it was sent (%d)", o.Topic, o.Queue, o.End, s.sent[k])
				p.refused[s.node] = &ferryv1.ReplicaInfo{Node: s.node, Address: s.addr, Diverged: true, Detail: detail}
				delete(p.sessions, s)
				signal(&p.progress)
				p.mu.Unlock()
				s.cancel(errors.New(detail))
				return
			}
			if o.End > s.acked[k] {
				s.unacked -= o.End - s.acked[k]
				s.acked[k] = o.End
			}
		}
		signal(&p.progress)
		p.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

// ship sends the slave what it lacks, from the tail in memory or from
// storage, with a heartbeat every heartbeatEvery.
func (l *link) ship(ctx context.Context, stream ferryv1.ReplicaLink_FollowServer, s *session) error {
	p := l.p
	lastBeat := time.Now()
	for ctx.Err() == nil {
		p.mu.Lock()
		if time.Since(s.lastHeard) > silenceLimit {
			p.mu.Unlock()
			return status.Error(codes.DeadlineExceeded, "slave silent for too long")
		}
		var (
			frame []*sdk.Message
			read  *qkey
			bytes int
		)
		// The topic set first: any queue in p.ends now is in it.
		topics := p.takeTopicsLocked(s)
		topicVer := s.topicSent
		if s.unacked < maxUnacked {
			for k, end := range p.ends {
				from := s.sent[k]
				if from >= end {
					continue
				}
				t := p.tails[k]
				if t == nil || from < t.first || from >= t.first+int64(len(t.msgs)) {
					kk := k
					read = &kk
					break
				}
				for _, m := range t.msgs[from-t.first:] {
					if len(frame) >= frameMessages || bytes >= frameBytes || m.Offset >= end {
						break
					}
					frame = append(frame, m)
					bytes += len(m.Body) + 64
				}
				s.sent[k] = from + int64(countQueue(frame, k))
				if len(frame) >= frameMessages || bytes >= frameBytes {
					break
				}
			}
		}
		from := int64(0)
		if read != nil {
			from = s.sent[*read]
		}
		wake, progress := p.wake, p.progress
		p.mu.Unlock()
		if read != nil && len(frame) == 0 {
			resp, err := p.core.Read(ctx, &sdk.ReadRequest{Topic: read.topic, Queue: read.queue, Offset: from, MaxMessages: frameMessages, MaxBytes: frameBytes})
			if err != nil {
				return err
			}
			for i, m := range resp.Messages {
				if m.Offset != from+int64(i) {
					return status.Errorf(codes.DataLoss, "%s/%d: read offset %d, want %d (retention removed what the slave lacks)", read.topic, read.queue, m.Offset, from+int64(i))
				}
			}
			frame = resp.Messages
			p.mu.Lock()
			s.sent[*read] = from + int64(len(frame))
			p.mu.Unlock()
			if len(frame) == 0 {
				// Handed over but not yet readable: wait a little.
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
				continue
			}
		}
		// Groups' offsets committed since the last frame ride with this
		// one (or go alone).
		groups, deleted := p.takeOffsets(s)
		if len(frame) > 0 || len(groups) > 0 || len(deleted) > 0 || topics != nil {
			p.mu.Lock()
			s.unacked += int64(len(frame))
			p.mu.Unlock()
			if err := stream.Send(&ferryv1.FollowResponse{Messages: frame, GroupOffsets: groups, DeletedGroups: deletedNames(deleted), GroupDeletions: deleted, Topics: topics, TopicsVersion: topicVer}); err != nil {
				return err
			}
		}
		if time.Since(lastBeat) >= heartbeatEvery {
			p.mu.Lock()
			acked := offsetsOf(p.okEnds)
			p.mu.Unlock()
			if err := stream.Send(&ferryv1.FollowResponse{Ends: l.ends(), AckedEnds: acked}); err != nil {
				return err
			}
			lastBeat = time.Now()
		}
		if len(frame) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-progress:
		case <-time.After(heartbeatEvery):
		}
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func countQueue(msgs []*sdk.Message, k qkey) int {
	n := 0
	for _, m := range msgs {
		if m.Topic == k.topic && m.Queue == k.queue {
			n++
		}
	}
	return n
}
