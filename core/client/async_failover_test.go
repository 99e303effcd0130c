package client_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// groupNode is one node of a two-node replication group over one shared log
// (a memCore): the node the group's leader index names takes produce; the
// other refuses it with sdk.ErrNotLeader, as a raft follower does. Both
// answer metadata naming the leader.
type groupNode struct {
	*memCore
	self   int32
	leader *atomic.Int32
	addrs  *[2]string // set once both transports listen
	// refuse, when set, runs before the leader stores a request; true
	// makes it refuse the request (nothing stored).
	refuse func(req *ferryv1.ProduceRequest) bool
}

func (n *groupNode) Produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	if n.leader.Load() != n.self || (n.refuse != nil && n.refuse(req)) {
		return nil, fmt.Errorf("%w: node %d is a follower", sdk.ErrNotLeader, n.self)
	}
	return n.memCore.Produce(ctx, req)
}

func (n *groupNode) Metadata(ctx context.Context, req *ferryv1.MetadataRequest) (*ferryv1.MetadataResponse, error) {
	resp, err := n.memCore.Metadata(ctx, req)
	if err != nil {
		return nil, err
	}
	l := n.leader.Load()
	resp.Brokers = nil
	for i, a := range n.addrs {
		role := sdk.RoleFollower
		if int32(i) == l {
			role = sdk.RoleLeader
		}
		resp.Brokers = append(resp.Brokers, &ferryv1.BrokerInfo{Node: "n" + strconv.Itoa(i), Address: a, Role: role})
	}
	for _, t := range resp.Topics {
		for q := range t.Leaders {
			t.Leaders[q] = l
		}
	}
	return resp, nil
}

// A key's async sends stay in order across a leader change. Node 0 leads;
// the request that carries message 10 of the key makes the group elect node
// 1 and is refused (not leader: nothing stored), so the producer retries it,
// after its backoff, on node 1. Messages sent meanwhile are routed to node 1
// at once; they must wait behind the retry (their queue's line), not
// overtake it. Before the fix the line was keyed on the broker too and they
// did: the control, …Control, has the line keyed on the broker again and
// must find the order broken.
func TestAsyncKeyOrderAcrossLeaderChange(t *testing.T) {
	if err := asyncAcrossLeaderChange(t); err != nil {
		t.Fatal(err)
	}
}

func TestAsyncKeyOrderAcrossLeaderChangeControl(t *testing.T) {
	defer client.SetLinePerBroker(true)()
	err := asyncAcrossLeaderChange(t)
	if err == nil {
		t.Fatal("with the line keyed on the broker the key's order held: the test cannot fail")
	}
	if !strings.Contains(err.Error(), "order broke") {
		t.Fatalf("want the order broken, got: %v", err)
	}
	t.Logf("as expected: %v", err)
}

// asyncAcrossLeaderChange runs the leader change and returns what went
// wrong: nil when every message was acknowledged and stored in order.
func asyncAcrossLeaderChange(t *testing.T) error {
	log := newMemCore(map[string]int32{"orders": 2})
	var leader atomic.Int32
	var addrs [2]string
	var flipped atomic.Bool
	n0 := &groupNode{memCore: log, self: 0, leader: &leader, addrs: &addrs}
	n0.refuse = func(req *ferryv1.ProduceRequest) bool {
		for _, m := range req.Messages {
			if strings.HasSuffix(m.Id, "-10") && flipped.CompareAndSwap(false, true) {
				leader.Store(1) // the election, while this request is at node 0
				return true
			}
		}
		return false
	}
	n1 := &groupNode{memCore: log, self: 1, leader: &leader, addrs: &addrs}
	b0 := startBroker(t, n0, "127.0.0.1:0")
	b1 := startBroker(t, n1, "127.0.0.1:0")
	addrs = [2]string{b0.addr, b1.addr}

	ctx := testCtx(t)
	c, err := client.DialCluster(ctx, []string{b0.addr, b1.addr}, client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p := c.NewProducer(client.ProducerOptions{ID: "p", Selector: client.KeyHash(), Backoff: 300 * time.Millisecond})

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		errs  []error
	)
	var retried atomic.Bool // message 10's callback came
	send := func(i int) {
		id := "p-" + strconv.Itoa(i)
		if err := p.SendAsync(ctx, client.Message{ID: id, Topic: "orders", Key: "k", Body: []byte(id)}, func(r client.Result, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				return
			}
			acked[id] = true
			if i == 10 {
				retried.Store(true)
			}
		}); err != nil {
			t.Fatalf("SendAsync %s: %v", id, err)
		}
	}
	// Messages one a millisecond until message 10 was answered (its
	// retry on node 1 is 300 ms after the election): a few hundred of
	// them are sent while it waits. Bounded at 3000.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	sent := 0
	for ; sent < 3000 && (sent <= 10 || !retried.Load()); sent++ {
		send(sent)
		<-tick.C
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !flipped.Load() || !retried.Load() {
		t.Fatalf("the leader change did not happen (flipped %v, message 10 answered %v)", flipped.Load(), retried.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("%d sends failed, e.g. %v", len(errs), errs[0])
	}
	var queue int32 = -1
	for q := range int32(2) {
		if len(log.stored("orders", q)) > 0 {
			queue = q
		}
	}
	stored := log.stored("orders", queue)
	if len(stored) != sent || len(acked) != sent {
		return fmt.Errorf("sent %d, acked %d, stored %d in queue %d (%d in all)", sent, len(acked), len(stored), queue, log.storedCount("orders"))
	}
	after := 0 // messages stored while message 10 waited for its retry
	for j, m := range stored {
		if m.Id != "p-"+strconv.Itoa(j) {
			return fmt.Errorf("offset %d holds %s, want p-%d: the key's order broke at the leader change (message 10 at offset %d)", j, m.Id, j, indexOf(stored, "p-10"))
		}
		if j > 10 {
			after++
		}
	}
	t.Logf("sent %d, %d after message 10's retry, in order", sent, after)
	return nil
}

func indexOf(ms []*ferryv1.Message, id string) int {
	for i, m := range ms {
		if m.Id == id {
			return i
		}
	}
	return -1
}
