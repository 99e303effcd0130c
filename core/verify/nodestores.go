package verify

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// NodeStore is what one node of a cluster run held after healing, read
// back from its own store through its Broker API (a follower or slave
// serves fetches). The run's Result is the leader's read-back; a loss only
// a follower has shows here.
type NodeStore struct {
	Node string `json:"node"`
	// Role at the read-back: leader (the node the run's Result was read
	// from), follower (raft), slave, or down (failed over: not read).
	Role string `json:"role" jsonschema:"enum=leader,enum=follower,enum=slave,enum=down"`
	// Behind: the node's queue ends had not reached the leader's within
	// the catch-up deadline, or (raft) stood short of them after the node
	// had applied all the leader had; it was read back as it was.
	Behind bool `json:"behind,omitempty"`
	// MissingHeld counts the messages acknowledged OK that the leader's
	// store holds and this node's does not; PermittedLoss of them were
	// acknowledged within the flush window before this node's own power
	// loss (flush async), the rest fail the run.
	MissingHeld   int     `json:"missing_held"`
	PermittedLoss int     `json:"permitted_loss"`
	Result        *Result `json:"result,omitempty"`
	Error         string  `json:"error,omitempty"`
}

// catchUp bounds the wait for a follower's queue ends to reach the
// leader's after the heal.
const catchUp = 60 * time.Second

// endsStill is how long a raft follower's queue ends, short of the
// leader's, must stand still after it applied what the leader had before
// the wait gives up on it.
const endsStill = 3 * time.Second

// readNodes reads every live node's store back after healing: leader is the
// node the run's result was read from (its NodeStore gets that result).
// Each other node is first given until its queue ends reach the leader's
// (catchUp), then read like the leader (ReadBack) and checked against the
// sends.
func (c *cluster) readNodes(ctx context.Context, leaderAddr, topic, prefix string, sends []Send, leaderRes *Result) []*NodeStore {
	var out []*NodeStore
	want, werr := queueEnds(ctx, leaderAddr, c.members[0].n.p.creds, topic)
	// Raft: what the leader had applied once its queue ends were read. A
	// follower that applied as much holds all it will of them: if its
	// ends are short then and stay so, it lost what it lacks, and the
	// wait ends there rather than at catchUp.
	var applied uint64
	if c.mode == "raft" {
		for _, m := range c.members {
			if m.n.p.addr != leaderAddr {
				continue
			}
			if st, err := status1(ctx, m.statusAddr(), m.peer); err == nil {
				applied = st.AppliedIndex
			}
		}
	}
	for _, m := range c.members {
		ns := &NodeStore{Node: m.id}
		out = append(out, ns)
		switch {
		case c.isDown(m):
			ns.Role, ns.Error = "down", "failed over, stays down: not read back"
			continue
		case m.n.p.addr == leaderAddr:
			ns.Role, ns.Result = "leader", leaderRes
			continue
		case c.mode == "raft":
			ns.Role = "follower"
		default:
			ns.Role = "slave"
		}
		if werr != nil {
			ns.Error = "the leader's queue ends: " + werr.Error()
			continue
		}
		var done func() bool
		if applied > 0 {
			done = func() bool {
				st, err := status1(ctx, m.statusAddr(), m.peer)
				return err == nil && st.AppliedIndex >= applied
			}
		}
		ns.Behind = !waitEnds(ctx, m.n.p.addr, m.n.p.creds, topic, want, catchUp, done)
		stored, err := readBack(ctx, m.n.p.addr, m.n.p.creds, topic, prefix)
		if err != nil {
			ns.Error = err.Error()
			continue
		}
		ns.Result = Check(sends, stored)
	}
	return out
}

// queueEnds is the end offset of each queue of topic at addr.
func queueEnds(ctx context.Context, addr string, creds brokerCreds, topic string) (map[int32]int64, error) {
	cc, err := dialBroker(addr, creds)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rpc := ferryv1.NewBrokerClient(cc)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md, err := rpc.Metadata(ctx, &ferryv1.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var refs []*ferryv1.QueueRef
	for _, t := range md.Topics {
		if t.Name == topic {
			for q := range t.Queues {
				refs = append(refs, &ferryv1.QueueRef{Topic: topic, Queue: q})
			}
		}
	}
	offs, err := rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Queues: refs})
	if err != nil {
		return nil, fmt.Errorf("offsets: %w", err)
	}
	ends := map[int32]int64{}
	for _, o := range offs.Offsets {
		ends[o.Queue] = o.End
	}
	return ends, nil
}

// waitEnds waits until every queue's end at addr reached want's, for at
// most d; it says whether they did. applied, when not nil, says whether the
// node has applied everything it is waited for (raft): once it has, and
// its ends then stood still for endsStill, they will not reach want, and
// the wait ends early.
func waitEnds(ctx context.Context, addr string, creds brokerCreds, topic string, want map[int32]int64, d time.Duration, applied func() bool) bool {
	var (
		last  string
		still time.Time // when the ends, the node having applied all, last changed
	)
	for deadline := time.Now().Add(d); ; {
		if got, err := queueEnds(ctx, addr, creds, topic); err == nil {
			caught := true
			for q, end := range want {
				caught = caught && got[q] >= end
			}
			if caught {
				return true
			}
			if applied != nil && applied() {
				now := fmt.Sprint(got)
				switch {
				case still.IsZero() || now != last:
					last, still = now, time.Now()
				case time.Since(still) >= endsStill:
					return false
				}
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// judgeNodes fails the run for what a node lacks that the leader holds, or
// for any duplicate, stranger, disorder or wrong offset in a node's store.
// Under flush async a node may lack what was acknowledged within the flush
// window before its own power loss.
func judgeNodes(rep *Report, sends []Send, start time.Time, fail func(format string, args ...any)) {
	leaderLost := map[string]bool{}
	for _, id := range rep.Result.LostIDs {
		leaderLost[id] = true
	}
	for _, ns := range rep.NodeStores {
		r := ns.Result
		if ns.Role == "down" {
			continue
		}
		if r == nil {
			fail("node %s: its store was not read back after healing: %s", ns.Node, ns.Error)
			continue
		}
		if ns.Role == "leader" {
			continue // the run's Result, judged already
		}
		missing := map[string]bool{}
		for _, id := range r.LostIDs {
			if !leaderLost[id] {
				missing[id] = true
			}
		}
		ns.MissingHeld = len(missing)
		other := make([]string, 0, len(missing))
		if rep.Flush == "async" && rep.FlushInterval > 0 && len(missing) > 0 {
			// Only this node's own power losses may cost it data.
			own := *rep
			own.Faults = nil
			for _, f := range rep.Faults {
				if f.Kind == "power-loss" && f.Node == ns.Node {
					own.Faults = append(own.Faults, f)
				}
			}
			ns.PermittedLoss, _, other = permittedLoss(&own, sends, missing, start)
		} else {
			for _, s := range sends {
				if missing[s.ID] {
					other = append(other, s.ID)
				}
			}
		}
		behind := ""
		if ns.Behind {
			behind = fmt.Sprintf("; its queue ends did not reach the leader's (within %s, or once it had applied all the leader had)", catchUp)
		}
		if len(other) > 0 {
			fail("node %s (%s): %d acknowledged message(s) the leader holds are missing from its store after healing (e.g. %s)%s", ns.Node, ns.Role, len(other), other[0], behind)
		}
		if r.Duplicated > 0 {
			fail("node %s (%s): %d message(s) stored more than once", ns.Node, ns.Role, r.Duplicated)
		}
		if r.Unexpected > 0 {
			fail("node %s (%s): %d message(s) stored that no producer sent", ns.Node, ns.Role, r.Unexpected)
		}
		if r.OutOfOrder > 0 {
			fail("node %s (%s): %d acknowledged message(s) of a key stored out of order", ns.Node, ns.Role, r.OutOfOrder)
		}
		if r.WrongOffset > 0 {
			fail("node %s (%s): %d acknowledged message(s) stored at another offset than acknowledged", ns.Node, ns.Role, r.WrongOffset)
		}
	}
}
