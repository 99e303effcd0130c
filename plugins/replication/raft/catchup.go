package raft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Catch-up after a snapshot.
//
// A snapshot holds no messages, only the end offset of every queue (the
// store is the state machine). A follower that is sent one, because the
// leader compacted entries it lacks, fetches the messages between its own
// ends and the snapshot's from a peer's store over ReplicaLink.Follow on the
// peers' `admin` listeners, and appends them before raft applies any later
// entry. Every node's store holds only committed entries, in log order, so
// any peer whose store reaches the snapshot's ends can serve: the leader is
// asked first, then the others.
//
// On this plugin's Follow, the first (and only) FollowRequest lists, per
// queue, End: where the asking node's queue ends, and Committed: the end to
// fetch up to (the snapshot's). The server streams FollowResponses with the
// messages it stores in [End, min(Committed, its own end)) in offset order,
// then ends the stream; the asking node checks that it got everything.

const (
	catchUpFrameMessages = 512
	catchUpFrameBytes    = 1 << 20
	// catchUpIdle: a peer that sends nothing for this long is given up.
	catchUpIdle = 5 * time.Second
	// catchUpPatience: Restore gives up (and raft retries the install)
	// once no peer made progress for this long.
	catchUpPatience = 20 * time.Second
	catchUpRetry    = 250 * time.Millisecond
)

// queueKey names a queue in a snapshot: "topic/queue".
func queueKey(topic string, queue int32) string { return topic + "/" + strconv.Itoa(int(queue)) }

func parseQueueKey(k string) (string, int32, error) {
	i := strings.LastIndexByte(k, '/')
	if i < 0 {
		return "", 0, fmt.Errorf("snapshot queue %q: want topic/queue", k)
	}
	q, err := strconv.ParseInt(k[i+1:], 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("snapshot queue %q: %v", k, err)
	}
	return k[:i], int32(q), nil
}

// gap is the range of one queue a node lacks: [from, to).
type gap struct {
	topic    string
	queue    int32
	from, to int64
}

// gaps compares the store's ends with a snapshot's. When the snapshot was
// sent by the leader (installed), a queue that ends beyond it is reported:
// raft sends a snapshot only to a follower that applied less, so the logs
// diverged. (This node's own snapshot is usually behind its store.)
func (f *fsm) gaps(ctx context.Context, ends map[string]int64, installed bool) ([]*gap, error) {
	info, err := f.core.NodeInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the store's ends: %w", err)
	}
	local := map[string]int64{}
	for _, o := range info.Offsets {
		local[queueKey(o.Topic, o.Queue)] = o.End
	}
	held := map[string]bool{}
	for _, t := range info.Topics {
		held[t.Name] = true
	}
	var out []*gap
	for k, want := range ends {
		topic, queue, err := parseQueueKey(k)
		if err != nil {
			return nil, err
		}
		if _, _, internal := sdk.InternalTopic(topic); !internal && !held[topic] {
			// A topic this node does not hold (deleted after the
			// snapshot, in log order): nothing of it is to be stored.
			continue
		}
		switch have := local[k]; {
		case have < want:
			out = append(out, &gap{topic: topic, queue: queue, from: have, to: want})
		case have > want && installed:
			f.p.log.Error("the store holds more than the snapshot installed over it", "queue", k, "end", have, "snapshot_end", want)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].queue < out[j].queue
	})
	return out, nil
}

// errDiverged: a fetched message was stored at another offset than on the
// peer. Retrying cannot help.
var errDiverged = errors.New("logs diverged")

// catchUp appends to the store every message it lacks up to the snapshot's
// ends, fetched from peers (installed: the snapshot came from the leader,
// not from this node's own snapshots). With patience > 0 it gives up once no peer made
// progress for that long; with 0 it tries until ctx ends. It returns the
// number of messages appended.
func (f *fsm) catchUp(ctx context.Context, ends map[string]int64, patience time.Duration, installed bool) (int64, error) {
	gs, err := f.gaps(ctx, ends, installed)
	if err != nil || len(gs) == 0 {
		return 0, err
	}
	var missing int64
	for _, g := range gs {
		missing += g.to - g.from
	}
	f.p.log.Warn("the store lacks messages of the raft snapshot; fetching them from peers", "queues", len(gs), "messages", missing)
	start := time.Now()
	var total int64
	lastProgress := time.Now()
	var lastErr error
	var lastLog time.Time
	for {
		peers := f.p.catchUpPeers()
		if len(peers) == 0 {
			return 0, fmt.Errorf("%w: the store lacks %d messages of the raft snapshot and no peer has an admin address to fetch them from", sdk.ErrUnavailable, missing)
		}
		for _, peer := range peers {
			n, err := f.fetch(ctx, peer, gs)
			total += n
			if n > 0 {
				lastProgress = time.Now()
			}
			if err != nil {
				if errors.Is(err, errDiverged) {
					return total, err
				}
				lastErr = fmt.Errorf("peer %s (%s): %w", peer.ID, peer.Admin, err)
				if time.Since(lastLog) > 5*time.Second {
					f.p.log.Warn("catch-up from a peer failed; trying the others", "peer", peer.ID, "admin", peer.Admin, "fetched", n, "error", err)
					lastLog = time.Now()
				}
			}
			if done(gs) {
				f.p.log.Warn("caught up with the raft snapshot", "messages", total, "took", time.Since(start).Round(time.Millisecond))
				return total, nil
			}
		}
		if lastErr == nil {
			lastErr = errors.New("no peer holds the snapshot's messages yet")
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
		if patience > 0 && time.Since(lastProgress) > patience {
			return total, fmt.Errorf("%w: the store still lacks %d messages of the raft snapshot; no peer could serve them for %s (last: %v)",
				sdk.ErrUnavailable, remaining(gs), patience, lastErr)
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(catchUpRetry):
		}
	}
}

func done(gs []*gap) bool { return remaining(gs) == 0 }

func remaining(gs []*gap) int64 {
	var n int64
	for _, g := range gs {
		n += g.to - g.from
	}
	return n
}

// catchUpPeers lists the peers to fetch from: the leader as this node knows
// it first, then the others; never this node.
func (p *Plugin) catchUpPeers() []Peer {
	p.mu.Lock()
	leader := p.leader
	p.mu.Unlock()
	var out []Peer
	if leader.ID != "" && leader.ID != p.node && leader.Admin != "" {
		out = append(out, leader)
	}
	seen := map[string]bool{}
	for _, peer := range p.cfg.Peers {
		seen[peer.ID] = true
		if peer.ID != p.node && peer.ID != leader.ID && peer.Admin != "" {
			out = append(out, peer)
		}
	}
	// Then nodes added to the group that the pipeline does not list.
	for _, peer := range p.memberTable() {
		if !seen[peer.ID] && peer.ID != p.node && peer.ID != leader.ID && peer.Admin != "" {
			out = append(out, peer)
		}
	}
	return out
}

// fetch streams the gaps from one peer and appends what it sends, moving
// each gap's from. A peer that lacks part of a gap sends what it has.
func (f *fsm) fetch(ctx context.Context, peer Peer, gs []*gap) (int64, error) {
	hello := &ferryv1.FollowRequest{Node: f.p.node}
	byQueue := map[string]*gap{}
	for _, g := range gs {
		if g.from < g.to {
			hello.Ends = append(hello.Ends, &ferryv1.QueueOffsets{Topic: g.topic, Queue: g.queue, End: g.from, Committed: g.to})
			byQueue[queueKey(g.topic, g.queue)] = g
		}
	}
	if len(hello.Ends) == 0 {
		return 0, nil
	}
	// The peer must be the node asked (its certificate names peer.ID):
	// what it sends is stored here as the group's log.
	cc, err := grpc.NewClient(peer.Admin, grpc.WithTransportCredentials(f.p.peers.GRPCTo([]string{peer.ID}, "the catch-up source")))
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(catchUpIdle, cancel)
	defer idle.Stop()
	stream, err := ferryv1.NewReplicaLinkClient(cc).Follow(ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(hello); err != nil {
		return 0, err
	}
	_ = stream.CloseSend()
	var n int64
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		idle.Reset(catchUpIdle)
		if len(resp.Messages) == 0 {
			continue
		}
		want := make([]int64, len(resp.Messages))
		for i, m := range resp.Messages {
			g := byQueue[queueKey(m.Topic, m.Queue)]
			if g == nil || m.Offset != g.from+int64(countBefore(resp.Messages[:i], m.Topic, m.Queue)) || m.Offset >= g.to {
				return n, fmt.Errorf("peer sent %s/%d offset %d, not the next one asked for", m.Topic, m.Queue, m.Offset)
			}
			want[i] = m.Offset
		}
		offs, err := f.applyAll(ctx, resp.Messages)
		if err != nil {
			return n, err
		}
		for i, off := range offs {
			m := resp.Messages[i]
			if off != want[i] {
				err := fmt.Errorf("%w: %s/%d message %q stored at offset %d here, %d on peer %s", errDiverged, m.Topic, m.Queue, m.Id, off, want[i], peer.ID)
				f.p.log.Error("catch-up after a raft snapshot", "error", err)
				return n, err
			}
		}
		for _, m := range resp.Messages {
			byQueue[queueKey(m.Topic, m.Queue)].from++
		}
		n += int64(len(resp.Messages))
		f.p.caughtUp.Add(int64(len(resp.Messages)))
	}
}

func countBefore(msgs []*sdk.Message, topic string, queue int32) int {
	n := 0
	for _, m := range msgs {
		if m.Topic == topic && m.Queue == queue {
			n++
		}
	}
	return n
}

// applyAll appends messages to the store and returns their offsets.
func (f *fsm) applyAll(ctx context.Context, msgs []*sdk.Message) ([]int64, error) {
	w, err := f.core.Apply(ctx, msgs)
	if err != nil {
		return nil, err
	}
	offs, err := w(ctx)
	if err != nil {
		return nil, err
	}
	if len(offs) != len(msgs) {
		return nil, fmt.Errorf("%w: the store answered %d offsets for %d messages", errDiverged, len(offs), len(msgs))
	}
	return offs, nil
}

// follow serves a peer's catch-up (see the top of this file): the messages
// of this node's store in every range the peer asks for, up to what this
// store holds. Any node serves, leader or not: every store holds committed
// entries only, in log order.
func (p *Plugin) follow(stream ferryv1.ReplicaLink_FollowServer) error {
	hello, err := stream.Recv()
	if err != nil {
		return err
	}
	// The node it claims to be must be the one its certificate names:
	// refused before anything is read or sent.
	if err := p.peers.CheckNode(stream.Context(), hello.Node); err != nil {
		return err
	}
	p.mu.Lock()
	core := p.core
	p.mu.Unlock()
	if core == nil {
		return status.Error(codes.Unavailable, "raft is starting")
	}
	ctx := stream.Context()
	info, err := core.NodeInfo(ctx)
	if err != nil {
		return err
	}
	local := map[string]int64{}
	for _, o := range info.Offsets {
		local[queueKey(o.Topic, o.Queue)] = o.End
	}
	p.served.Add(1)
	for _, o := range hello.Ends {
		from, to := o.End, min(o.Committed, local[queueKey(o.Topic, o.Queue)])
		for from < to {
			resp, err := core.Read(ctx, &sdk.ReadRequest{Topic: o.Topic, Queue: o.Queue, Offset: from, MaxMessages: catchUpFrameMessages, MaxBytes: catchUpFrameBytes})
			if err != nil {
				return err
			}
			var frame []*sdk.Message
			for i, m := range resp.Messages {
				if m.Offset != from+int64(i) {
					return status.Errorf(codes.DataLoss, "%s/%d: read offset %d, want %d (retention removed what the peer lacks)", o.Topic, o.Queue, m.Offset, from+int64(i))
				}
				if m.Offset >= to {
					break
				}
				frame = append(frame, m)
			}
			if len(frame) == 0 {
				return status.Errorf(codes.Unavailable, "%s/%d: nothing readable at %d before the end %d", o.Topic, o.Queue, from, to)
			}
			if err := stream.Send(&ferryv1.FollowResponse{MasterNode: p.node, Messages: frame}); err != nil {
				return err
			}
			from += int64(len(frame))
		}
	}
	return nil
}
