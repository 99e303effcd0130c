package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// outcomes records async callbacks and fails the test on a second call for
// the same id.
type outcomes struct {
	t    *testing.T
	mu   sync.Mutex
	res  map[string]client.Result
	errs map[string]error
	all  sync.WaitGroup
}

func newOutcomes(t *testing.T) *outcomes {
	return &outcomes{t: t, res: map[string]client.Result{}, errs: map[string]error{}}
}

// cb returns the callback for one send; key tells sends apart before their
// ids are known.
func (o *outcomes) cb(key string) client.Callback {
	o.all.Add(1)
	var once atomic.Bool
	return func(r client.Result, err error) {
		if !once.CompareAndSwap(false, true) {
			o.t.Errorf("callback of %s called twice (%+v, %v)", key, r, err)
			return
		}
		o.mu.Lock()
		o.res[key], o.errs[key] = r, err
		o.mu.Unlock()
		o.all.Done()
	}
}

// abandon forgets one expected callback (its SendAsync returned an error).
func (o *outcomes) abandon() { o.all.Done() }

func (o *outcomes) wait(t *testing.T, within time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { o.all.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("callbacks missing after %v", within)
	}
}

func TestSendAsyncOrderPerKeyAndOnce(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 4})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Selector: client.KeyHash(), MaxInflight: 32})
	o := newOutcomes(t)
	const keys, each = 8, 150
	for i := range each {
		for k := range keys {
			key := fmt.Sprintf("k%d", k)
			if err := p.SendAsync(ctx, client.Message{Topic: "t", Key: key, Body: fmt.Append(nil, i)}, o.cb(fmt.Sprint(key, "/", i))); err != nil {
				t.Fatalf("SendAsync: %v", err)
			}
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	o.wait(t, time.Second) // Flush returned: every callback ran
	for k, err := range o.errs {
		if err != nil {
			t.Fatalf("send %s: %v", k, err)
		}
	}
	if n := core.storedCount("t"); n != keys*each {
		t.Fatalf("stored %d, want %d", n, keys*each)
	}
	// Order per key: stored in the order sent, and each result names the
	// offset that holds its message.
	next := map[string]int{}
	for q := range int32(4) {
		for _, m := range core.stored("t", q) {
			var i int
			fmt.Sscan(string(m.Body), &i)
			if i != next[m.Key] {
				t.Fatalf("key %s: stored message %d where %d was expected (order per key broken)", m.Key, i, next[m.Key])
			}
			next[m.Key]++
			if r := o.res[fmt.Sprint(m.Key, "/", i)]; r.ID != m.Id || r.Offset != m.Offset || r.Queue != q || r.Status != ferryv1.Status_STATUS_OK {
				t.Fatalf("result %+v for message %s at %d/%d", r, m.Id, q, m.Offset)
			}
		}
	}
	// Batching: fewer requests than messages (at least two messages a
	// request on average; how many more depends on scheduling, and a loaded
	// machine made 322 requests where an idle one makes ~40).
	if calls := core.produceCalls.Load(); calls >= keys*each/2 {
		t.Errorf("%d produce requests for %d async messages: not batched", calls, keys*each)
	}
}

func TestSendAsyncLingerAndBatchBytes(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)

	// A long linger: 20 small messages form one batch, sent by Flush.
	p := c.NewProducer(client.ProducerOptions{Linger: time.Hour})
	o := newOutcomes(t)
	for i := range 20 {
		if err := p.SendAsync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}, o.cb(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := core.produceCalls.Load(); n != 0 {
		t.Fatalf("%d requests before the linger time passed, want 0", n)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := core.produceCalls.Load(); n != 1 {
		t.Fatalf("%d requests for 20 lingering messages, want 1", n)
	}

	// A short linger sends without Flush.
	core.produceCalls.Store(0)
	p2 := c.NewProducer(client.ProducerOptions{Linger: 10 * time.Millisecond})
	o2 := newOutcomes(t)
	for i := range 5 {
		if err := p2.SendAsync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}, o2.cb(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	o2.wait(t, 5*time.Second)
	if n := core.produceCalls.Load(); n != 1 {
		t.Errorf("%d requests for 5 messages within one linger, want 1", n)
	}

	// MaxBatchBytes splits: 10 messages of 1000 bytes, batches of at most
	// about 2500 bytes.
	core.produceCalls.Store(0)
	var sizes []int
	var mu sync.Mutex
	core.beforeStore = func(_ context.Context, req *ferryv1.ProduceRequest) error {
		mu.Lock()
		sizes = append(sizes, len(req.Messages))
		mu.Unlock()
		return nil
	}
	p3 := c.NewProducer(client.ProducerOptions{Linger: time.Hour, MaxBatchBytes: 2500})
	o3 := newOutcomes(t)
	for i := range 10 {
		if err := p3.SendAsync(ctx, client.Message{Topic: "t", Body: make([]byte, 1000)}, o3.cb(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := p3.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sizes) != "[2 2 2 2 2]" {
		t.Errorf("batch sizes %v, want [2 2 2 2 2] (2 messages of ~1064 bytes fit 2500)", sizes)
	}
}

// The window bounds accepted, unanswered messages: SendAsync blocks while it
// is full and gives up when its ctx ends.
func TestSendAsyncBackpressure(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 2})
	release := make(chan struct{})
	core.beforeStore = func(ctx context.Context, _ *ferryv1.ProduceRequest) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{MaxInflight: 8, Timeout: 10 * time.Second})
	o := newOutcomes(t)
	for i := range 8 {
		if err := p.SendAsync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}, o.cb(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.SendAsync(short, client.Message{Topic: "t", Body: []byte("9th")}, func(client.Result, error) {
		t.Error("callback of a send that was refused")
	})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 90*time.Millisecond {
		t.Fatalf("9th SendAsync with a full window of 8: %v after %v, want DeadlineExceeded after ~100ms", err, time.Since(start))
	}
	// A blocked sender goes on once the window has room.
	sent := make(chan error, 1)
	go func() { sent <- p.SendAsync(ctx, client.Message{Topic: "t", Body: []byte("late")}, o.cb("late")) }()
	select {
	case err := <-sent:
		t.Fatalf("SendAsync returned (%v) while the window was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	o.wait(t, time.Second)
	if n := core.storedCount("t"); n != 9 {
		t.Fatalf("stored %d, want 9", n)
	}
	if err := p.SendAsync(ctx, client.Message{Topic: "t"}, nil); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("SendAsync after Close: %v, want ErrClosed", err)
	}
}

// Close past its ctx abandons what is left: every callback is still called,
// once, with an error.
func TestCloseAbandonsAndCallsBack(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	core.beforeStore = func(ctx context.Context, _ *ferryv1.ProduceRequest) error {
		<-ctx.Done()
		return ctx.Err()
	}
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second, Linger: client.NoLinger})
	o := newOutcomes(t)
	for i := range 10 {
		if err := p.SendAsync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}, o.cb(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Close(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with stuck sends: %v, want DeadlineExceeded", err)
	}
	o.wait(t, time.Second) // Close returned: all called
	for k, err := range o.errs {
		if err == nil {
			t.Errorf("send %s abandoned by Close got no error", k)
		}
	}
}

func TestRequireDurable(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	weak := &statusCore{memCore: core, status: ferryv1.Status_STATUS_FLUSH_TIMEOUT}
	b := startBroker(t, weak, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)

	lax := c.NewProducer(client.ProducerOptions{})
	r, err := lax.SendSync(ctx, client.Message{Topic: "t", Body: []byte("x")})
	if err != nil || r.Status != ferryv1.Status_STATUS_FLUSH_TIMEOUT || r.Offset != 0 {
		t.Fatalf("SendSync with FLUSH_TIMEOUT = %+v, %v; want the status, offset 0, no error", r, err)
	}
	strict := c.NewProducer(client.ProducerOptions{RequireDurable: true})
	r, err = strict.SendSync(ctx, client.Message{Topic: "t", Body: []byte("y")})
	if !errors.Is(err, client.ErrNotDurable) || !errors.Is(err, sdk.ErrFlushTimeout) || r.Offset != 1 || r.Status != ferryv1.Status_STATUS_FLUSH_TIMEOUT {
		t.Fatalf("RequireDurable SendSync with FLUSH_TIMEOUT = %+v, %v; want ErrNotDurable+ErrFlushTimeout with offset 1", r, err)
	}
	done := make(chan error, 1)
	if err := strict.SendAsync(ctx, client.Message{Topic: "t", Body: []byte("z")}, func(r client.Result, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, sdk.ErrFlushTimeout) {
		t.Fatalf("RequireDurable SendAsync callback: %v, want ErrFlushTimeout", err)
	}
	// Replication statuses map to their sentinels; no status at all is an
	// error even without RequireDurable.
	for _, tc := range []struct {
		status   ferryv1.Status
		strict   bool
		sentinel error
	}{
		{ferryv1.Status_STATUS_REPLICA_TIMEOUT, true, sdk.ErrReplicaTimeout},
		{ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE, true, sdk.ErrReplicaNotAvailable},
		{ferryv1.Status_STATUS_UNSPECIFIED, false, client.ErrNotDurable},
	} {
		weak.setStatus(tc.status)
		p := lax
		if tc.strict {
			p = strict
		}
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("w")})
		if !errors.Is(err, tc.sentinel) || r.Status == ferryv1.Status_STATUS_OK {
			t.Errorf("status %v: %+v, %v; want an error matching %v", tc.status, r, err, tc.sentinel)
		}
	}
}

// statusCore answers every produce with a given status.
type statusCore struct {
	*memCore
	mu     sync.Mutex
	status ferryv1.Status
}

func (s *statusCore) setStatus(st ferryv1.Status) {
	s.mu.Lock()
	s.status = st
	s.mu.Unlock()
}

func (s *statusCore) Produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	resp, err := s.memCore.Produce(ctx, req)
	if err == nil {
		s.mu.Lock()
		resp.Status = s.status
		s.mu.Unlock()
	}
	return resp, err
}

func TestLimitsHaveClearErrors(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	bigHeaders := map[string]string{"h": strings.Repeat("x", 64<<10)}
	for _, tc := range []struct {
		name     string
		m        client.Message
		sentinel error
		text     string
	}{
		{"empty topic", client.Message{Body: []byte("x")}, sdk.ErrInvalidArgument, "empty topic name"},
		{"unknown topic", client.Message{Topic: "nope", Body: []byte("x")}, sdk.ErrNotFound, `topic "nope"`},
		{"body too large", client.Message{Topic: "t", Body: make([]byte, 4<<20+1)}, sdk.ErrInvalidArgument, "max_message_bytes = 4194304"},
		{"headers too large", client.Message{Topic: "t", Headers: bigHeaders}, sdk.ErrInvalidArgument, "max_header_bytes = 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(mode string, err error) {
				if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.text) {
					t.Errorf("%s: %v; want %v mentioning %q", mode, err, tc.sentinel, tc.text)
				}
			}
			_, err := p.SendSync(ctx, tc.m)
			check("sync", err)
			check("async", p.SendAsync(ctx, tc.m, func(client.Result, error) { t.Error("callback of a refused send") }))
			_, err = p.SendOneway(ctx, tc.m)
			check("oneway", err)
		})
	}
	if n := core.produceCalls.Load(); n != 0 {
		t.Errorf("%d requests reached the broker", n)
	}
}

func TestSendOneway(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 2})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	ids := map[string]bool{}
	for i := range 200 {
		r, err := p.SendOneway(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Offset != -1 || r.Status != ferryv1.Status_STATUS_UNSPECIFIED || r.Queue < 0 || r.ID == "" {
			t.Fatalf("oneway result %+v: want an id and queue, no offset or status", r)
		}
		ids[r.ID] = true
	}
	waitUntil(t, 5*time.Second, func() bool { return core.storedCount("t") == 200 })
	for q := range int32(2) {
		for _, m := range core.stored("t", q) {
			if !ids[m.Id] {
				t.Fatalf("stored id %s was not sent", m.Id)
			}
		}
	}
	// A broker that cannot be reached is an error, not a silent loss.
	b.stop()
	short := c.NewProducer(client.ProducerOptions{Timeout: 200 * time.Millisecond, Retries: client.NoRetries})
	if _, err := short.SendOneway(ctx, client.Message{Topic: "t", Body: []byte("x")}); !errors.Is(err, sdk.ErrUnavailable) {
		t.Fatalf("oneway to a stopped broker: %v, want ErrUnavailable", err)
	}
}

func waitUntil(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two brokers, each with its own store: the client routes over both from a
// seed list; once one is stopped, sync sends fail over to the other and
// async sends to its queues fail after their retries (same broker).
func TestClusterFailover(t *testing.T) {
	coreA, coreB := newMemCore(map[string]int32{"t": 2}), newMemCore(map[string]int32{"t": 2})
	a, b := startBroker(t, coreA, "127.0.0.1:0"), startBroker(t, coreB, "127.0.0.1:0")
	ctx := testCtx(t)
	c, err := client.DialCluster(ctx, []string{a.addr, b.addr}, client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Backoff: 10 * time.Millisecond})
	brokers := map[string]int{}
	for i := range 20 {
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)})
		if err != nil {
			t.Fatal(err)
		}
		brokers[r.Broker]++
	}
	if brokers[a.addr] != 10 || brokers[b.addr] != 10 {
		t.Fatalf("round robin over 4 queues on 2 brokers sent %v", brokers)
	}
	a.stop()
	for i := range 20 {
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)})
		if err != nil {
			t.Fatalf("SendSync %d with broker A stopped: %v", i, err)
		}
		if r.Broker != b.addr {
			t.Fatalf("result %+v: stored on %s, want the live broker %s", r, r.Broker, b.addr)
		}
	}
	if coreA.storedCount("t") != 10 || coreB.storedCount("t") != 30 {
		t.Fatalf("A holds %d, B %d; want 10 and 30", coreA.storedCount("t"), coreB.storedCount("t"))
	}
}

// A broker that accepts connections and then says nothing (a frozen process,
// a black-holed link) holds up neither the dial nor a send: the client goes on
// with the brokers that answered, a short grace after the first answer.
func TestFrozenSeedDoesNotHoldUpTheClient(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 2})
	live := startBroker(t, core, "127.0.0.1:0")
	frozen := ferrytest.NewProxy(t, live.addr)
	frozen.Blackhole()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := client.DialCluster(ctx, []string{frozen.Addr(), live.addr}, client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("DialCluster took %s with one seed frozen", d)
	}
	// Sends go to the broker that answered; none waits on the frozen one.
	p := c.NewProducer(client.ProducerOptions{Timeout: 3 * time.Second})
	for i := range 10 {
		start := time.Now()
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if r.Broker != live.addr {
			t.Fatalf("send %d stored on %s, want %s", i, r.Broker, live.addr)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("send %d took %s", i, d)
		}
	}
}
