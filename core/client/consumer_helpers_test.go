package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	brokercore "github.com/ferrymq/ferry/core/broker"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/memory"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// storeSource gives the broker one in-process store (no restarts).
type storeSource struct{ s sdk.Storage }

func (s storeSource) Current() (sdk.Plugin, uint64, <-chan struct{}) { return s.s, 1, nil }
func (s storeSource) Next(ctx context.Context, gen uint64) (sdk.Plugin, uint64, error) {
	if gen < 1 {
		return s.s, 1, nil
	}
	<-ctx.Done()
	return nil, 0, ctx.Err()
}
func (s storeSource) Broken(uint64) {}

// node is a real broker core over an in-process store, served by the real
// grpc transport on 127.0.0.1.
type node struct {
	addr  string
	store sdk.Storage
	stop  func()
}

func newMemoryStore(t *testing.T) sdk.Storage {
	t.Helper()
	m := memory.New()
	if err := m.Configure(context.Background(), nil, &sdk.Environment{}); err != nil {
		t.Fatal(err)
	}
	return m
}

// startNode serves store with topics (name → queues) on listen
// ("127.0.0.1:0" for any port). stop closes transport and broker, not the
// store.
func startNode(t *testing.T, store sdk.Storage, listen string, topics map[string]int) *node {
	t.Helper()
	var ts []brokercore.Topic
	for name, q := range topics {
		ts = append(ts, brokercore.Topic{Name: name, Queues: q})
	}
	b := brokercore.New(brokercore.Options{Node: "n1", Topics: ts}, storeSource{store})
	b.Start()
	tr := grpctransport.New()
	if err := tr.Configure(context.Background(), fmt.Appendf(nil, `{"listen": %q, "shutdown_timeout": "200ms"}`, listen), nil); err != nil {
		t.Fatalf("configure transport: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Serve(ctx, b) }()
	var once sync.Once
	n := &node{addr: tr.Addr(), store: store}
	n.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			tr.Close()
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			_ = b.Close(cctx)
		})
	}
	t.Cleanup(n.stop)
	return n
}

// produceN sends n messages with bodies "0".."n-1" (keys k<i>) and returns
// their ids in order.
func produceN(t *testing.T, c *client.Client, topic string, n int) []string {
	t.Helper()
	p := c.NewProducer(client.ProducerOptions{})
	ids := make([]string, 0, n)
	const batch = 200
	for i := 0; i < n; i += batch {
		var msgs []client.Message
		for j := i; j < min(n, i+batch); j++ {
			msgs = append(msgs, client.Message{Topic: topic, Key: fmt.Sprint("k", j), Body: fmt.Append(nil, j)})
		}
		rs, err := p.SendBatchSync(bgCtx(t), msgs)
		if err != nil {
			t.Fatalf("produce: %v", err)
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// committed returns the group's committed offsets on the topic's queues.
func committed(t *testing.T, c *client.Client, group, topic string, queues int) []int64 {
	t.Helper()
	var refs []*ferryv1.QueueRef
	for q := range queues {
		refs = append(refs, &ferryv1.QueueRef{Topic: topic, Queue: int32(q)})
	}
	offs, err := c.GetOffsets(bgCtx(t), group, refs)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(offs))
	for i, o := range offs {
		out[i] = o.Committed
	}
	return out
}

func bgCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var silent = slog.New(slog.NewTextHandler(io.Discard, nil))

// connect dials addr with a silent logger.
func connect(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(bgCtx(t), addr, client.WithLogger(silent))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond every 10ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// record collects deliveries from many goroutines.
type record struct {
	mu       sync.Mutex
	attempts map[string][]int // id → attempts seen, in order
	order    []string         // ids in the order they were handled
	times    map[string][]time.Time
}

func newRecord() *record {
	return &record{attempts: map[string][]int{}, times: map[string][]time.Time{}}
}

func (r *record) add(d *client.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[d.ID] = append(r.attempts[d.ID], d.Attempt)
	r.times[d.ID] = append(r.times[d.ID], time.Now())
	r.order = append(r.order, d.ID)
}

func (r *record) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.attempts)
}

func (r *record) get(id string) []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.attempts[id]...)
}

// runConsumer runs cons.Consume(handler) in the background until the
// returned stop is called; stop returns Consume's error.
func runConsumer(t *testing.T, cons *client.Consumer, h client.DeliveryHandler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cons.Consume(ctx, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				err = fmt.Errorf("Consume did not return within 15s of its cancellation")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
