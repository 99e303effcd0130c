package raft

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// memCore is a broker core over queues in memory. skew is added to the
// offsets it assigns (a store that diverged).
type memCore struct {
	sdk.ReplicaCore // methods the catch-up does not use
	mu              sync.Mutex
	queues          map[string][]*sdk.Message
	skew            int64
	applied         []string // topic changes, "op name"
}

func newMemCore(queues ...string) *memCore {
	c := &memCore{queues: map[string][]*sdk.Message{}}
	for _, q := range queues {
		c.queues[q] = nil
	}
	return c
}

func (c *memCore) Apply(_ context.Context, msgs []*sdk.Message) (sdk.ApplyWait, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var offs []int64
	for _, m := range msgs {
		k := queueKey(m.Topic, m.Queue)
		if _, ok := c.queues[k]; !ok {
			return nil, fmt.Errorf("%w: no queue %s", sdk.ErrInvalidArgument, k)
		}
		cp := &sdk.Message{Id: m.Id, Topic: m.Topic, Queue: m.Queue, Key: m.Key, Body: m.Body, BornUnixNano: m.BornUnixNano,
			Headers: maps.Clone(m.Headers), Offset: int64(len(c.queues[k])) + c.skew}
		c.queues[k] = append(c.queues[k], cp)
		offs = append(offs, cp.Offset)
	}
	return func(context.Context) ([]int64, error) { return offs, nil }, nil
}

func (c *memCore) Read(_ context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[queueKey(req.Topic, req.Queue)]
	resp := &sdk.ReadResponse{}
	for i := req.Offset; i < int64(len(q)) && len(resp.Messages) < int(req.MaxMessages); i++ {
		resp.Messages = append(resp.Messages, q[i])
	}
	return resp, nil
}

func (c *memCore) NodeInfo(context.Context) (*sdk.NodeInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	info := &sdk.NodeInfo{}
	topics := map[string]int32{}
	for k, q := range c.queues {
		topic, queue, _ := parseQueueKey(k)
		info.Offsets = append(info.Offsets, &ferryv1.QueueOffsets{Topic: topic, Queue: queue, End: int64(len(q))})
		topics[topic] = max(topics[topic], queue+1)
	}
	for _, n := range slices.Sorted(maps.Keys(topics)) {
		info.Topics = append(info.Topics, &sdk.ReplicatedTopic{Name: n, Queues: topics[n]})
	}
	return info, nil
}

// ApplyTopics creates, grows and deletes topics' queues as the broker
// would (idempotently); applied records each change.
func (c *memCore) ApplyTopics(_ context.Context, ch *sdk.TopicChange) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applied = append(c.applied, ch.Op+" "+ch.Name)
	ensure := func(name string, n int32) {
		for q := range n {
			if _, ok := c.queues[queueKey(name, q)]; !ok {
				c.queues[queueKey(name, q)] = nil
			}
		}
	}
	drop := func(name string) {
		for k := range c.queues {
			if t, _, _ := parseQueueKey(k); t == name {
				delete(c.queues, k)
			}
		}
	}
	switch ch.Op {
	case sdk.TopicCreate, sdk.TopicAlter:
		ensure(ch.Name, ch.Queues)
	case sdk.TopicDelete:
		drop(ch.Name)
	case sdk.TopicSet:
		keep := map[string]bool{}
		for _, t := range ch.Topics {
			ensure(t.Name, t.Queues)
			keep[t.Name] = true
		}
		for k := range c.queues {
			if t, _, _ := parseQueueKey(k); !keep[t] {
				delete(c.queues, k)
			}
		}
	}
	return nil
}

// fill appends n messages to a queue, as raft entries would.
func (c *memCore) fill(topic string, queue int32, n int) {
	for i := range n {
		m := &sdk.Message{Id: fmt.Sprintf("%s-%d-%d", topic, queue, i), Topic: topic, Queue: queue, Key: fmt.Sprint("k", i), Body: []byte(fmt.Sprint(i)),
			BornUnixNano: int64(1000 + i), Headers: map[string]string{HeaderRaftIndex: fmt.Sprint(10 + i), "app": "x"}}
		w, _ := c.Apply(context.Background(), []*sdk.Message{m})
		_, _ = w(context.Background())
	}
}

func (c *memCore) log(k string) []*sdk.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*sdk.Message(nil), c.queues[k]...)
}

func quietLog() hclog.Logger { return hclog.NewNullLogger() }

// servePeer runs a plugin's admin listener over core, as node id.
func servePeer(t *testing.T, id string, core sdk.ReplicaCore) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{node: id, log: quietLog(), core: core}
	srv := grpc.NewServer()
	ferryv1.RegisterReplicaLinkServer(srv, &admin{p: p})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// follower is node n1's fsm over core, with peers at the given admin
// addresses.
func follower(t *testing.T, core sdk.ReplicaCore, admins ...string) *fsm {
	t.Helper()
	peers := []Peer{{ID: "n1", Admin: "127.0.0.1:1"}}
	for i, a := range admins {
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i+2), Admin: a})
	}
	p := &Plugin{node: "n1", log: quietLog(), cfg: Config{Peers: peers}}
	f := newFSM(p, context.Background(), core, t.TempDir())
	f.patience = 300 * time.Millisecond
	return f
}

func snapshotOf(t *testing.T, index uint64, ends map[string]int64) io.ReadCloser {
	t.Helper()
	b, err := json.Marshal(&snapshot{Index: index, Ends: ends})
	if err != nil {
		t.Fatal(err)
	}
	return io.NopCloser(bytes.NewReader(b))
}

// A follower restoring a snapshot ends with the peer's messages exactly up
// to the snapshot's ends (not what the peer stored after), with their
// offsets, ids, keys, headers and timestamps, and the snapshot's index as
// its applied index.
func TestRestoreFetchesUpToTheSnapshot(t *testing.T) {
	leader := newMemCore("orders/0", "orders/1", "audit/0")
	leader.fill("orders", 0, 1500)
	leader.fill("orders", 1, 10)
	leader.fill("audit", 0, 3)
	local := newMemCore("orders/0", "orders/1", "audit/0")
	local.fill("orders", 0, 100)
	local.fill("audit", 0, 3)
	f := follower(t, local, "127.0.0.1:1", servePeer(t, "n3", leader)) // n2 is down
	ends := map[string]int64{"orders/0": 1200, "orders/1": 10, "audit/0": 3}
	if err := f.Restore(snapshotOf(t, 777, ends)); err != nil {
		t.Fatal(err)
	}
	for k, end := range ends {
		got, want := local.log(k), leader.log(k)[:end]
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %d", k, len(got), len(want))
		}
		for i := range want {
			a, b := want[i], got[i]
			if a.Offset != b.Offset || a.Id != b.Id || a.Key != b.Key || a.BornUnixNano != b.BornUnixNano || !maps.Equal(a.Headers, b.Headers) {
				t.Fatalf("%s message %d: %v, want %v", k, i, b, a)
			}
		}
	}
	if f.applied != 777 || f.p.restored.Load() != 1 || f.p.caughtUp.Load() != 1110 {
		t.Fatalf("applied %d, restored %d, caught up %d; want 777, 1, 1110", f.applied, f.p.restored.Load(), f.p.caughtUp.Load())
	}
	if b, _ := os.ReadFile(filepath.Join(filepath.Dir(f.path), "applied")); strings.TrimSpace(string(b)) != "777" {
		t.Fatalf("applied file %q, want 777", b)
	}
}

// No peer can serve (down, or its store is behind the snapshot too):
// Restore fails and the applied index stays where it was.
func TestRestoreFailsWhenNoPeerCanServe(t *testing.T) {
	behind := newMemCore("orders/0")
	behind.fill("orders", 0, 50)
	for name, admins := range map[string][]string{
		"peers down":    {"127.0.0.1:1"},
		"peer behind":   {servePeer(t, "n2", behind)},
		"no other peer": nil,
	} {
		t.Run(name, func(t *testing.T) {
			local := newMemCore("orders/0")
			f := follower(t, local, admins...)
			f.applied = 5
			start := time.Now()
			err := f.Restore(snapshotOf(t, 777, map[string]int64{"orders/0": 1200}))
			if !errors.Is(err, sdk.ErrUnavailable) {
				t.Fatalf("Restore: %v, want ErrUnavailable", err)
			}
			if f.applied != 5 || f.p.restored.Load() != 0 {
				t.Fatalf("applied %d, restored %d after a failed restore", f.applied, f.p.restored.Load())
			}
			if n := len(local.log("orders/0")); n > 50 {
				t.Fatalf("stored %d messages, the peer had 50", n)
			}
			t.Logf("%v after %s", err, time.Since(start).Round(time.Millisecond))
		})
	}
}

// A store that assigns other offsets than the peer's fails the restore
// loudly (the broker checks offsets only in apply_first mode).
func TestRestoreDetectsDivergedOffsets(t *testing.T) {
	leader := newMemCore("orders/0")
	leader.fill("orders", 0, 20)
	local := newMemCore("orders/0")
	local.skew = 1
	f := follower(t, local, servePeer(t, "n2", leader))
	err := f.Restore(snapshotOf(t, 30, map[string]int64{"orders/0": 20}))
	if !errors.Is(err, errDiverged) {
		t.Fatalf("Restore: %v, want logs diverged", err)
	}
}

// A snapshot older than what the node applied from the log (sent by a new
// leader of a later term) is refused, and nothing changes: raft would
// otherwise drop log entries it still needs. Negative control: the same
// snapshot over a node whose applied index is below it is taken.
func TestRestoreRefusesAnOlderSnapshot(t *testing.T) {
	local := newMemCore("orders/0")
	local.fill("orders", 0, 30)
	f := follower(t, local)
	f.applied = 40
	if err := f.Restore(snapshotOf(t, 25, map[string]int64{"orders/0": 20})); !errors.Is(err, errStaleSnapshot) {
		t.Fatalf("Restore of an older snapshot: %v, want it refused", err)
	}
	if f.applied != 40 || len(local.log("orders/0")) != 30 {
		t.Fatalf("applied %d, store %d messages; want 40 and 30 kept", f.applied, len(local.log("orders/0")))
	}
	f.applied = 20
	if err := f.Restore(snapshotOf(t, 25, map[string]int64{"orders/0": 20})); err != nil {
		t.Fatalf("Restore of a snapshot beyond the applied index: %v", err)
	}
	if f.applied != 25 {
		t.Fatalf("applied %d after the restore, want 25", f.applied)
	}
}
