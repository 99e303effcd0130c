package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// broker is the real grpc transport on 127.0.0.1 serving a memCore.
type broker struct {
	addr string
	stop func()
}

func startBroker(t *testing.T, core sdk.Core, listen string) *broker {
	t.Helper()
	tr := grpctransport.New()
	cfg := fmt.Sprintf(`{"listen": %q, "shutdown_timeout": "200ms"}`, listen)
	if err := tr.Configure(context.Background(), []byte(cfg), nil); err != nil {
		t.Fatalf("configure transport: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Serve(ctx, core) }()
	var once sync.Once
	b := &broker{addr: tr.Addr(), stop: func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("transport Serve: %v", err)
			}
			tr.Close()
		})
	}}
	t.Cleanup(b.stop)
	return b
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.WithLogger(quiet))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// consume runs a consumer until stop says so (after a message was handled)
// and returns every message the handler accepted, in order.
func consume(t *testing.T, c *client.Client, opts client.ConsumerOptions, handler client.Handler, stop func(got []*ferryv1.Message) bool) []*ferryv1.Message {
	t.Helper()
	cons, err := c.NewConsumer(opts)
	if err != nil {
		t.Fatalf("NewConsumer: %v", err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 15*time.Second)
	defer cancel()
	var got []*ferryv1.Message
	err = cons.Run(ctx, func(ctx context.Context, m *ferryv1.Message) error {
		if handler != nil {
			if err := handler(ctx, m); err != nil {
				return err
			}
		}
		got = append(got, m)
		if stop(got) {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return got
}

func atLeast(n int) func([]*ferryv1.Message) bool {
	return func(got []*ferryv1.Message) bool { return len(got) >= n }
}

func TestRoundTrip(t *testing.T) {
	core := newMemCore(map[string]int32{"orders": 2, "audit": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)

	md, err := c.Metadata(ctx)
	if err != nil || len(md.Topics) != 2 {
		t.Fatalf("Metadata = %v, %v; want 2 topics", md, err)
	}
	p := c.NewProducer(client.ProducerOptions{ID: "app"})
	r, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: "k1", Headers: map[string]string{"h": "v"}, Body: []byte("first")})
	if err != nil {
		t.Fatalf("SendSync: %v", err)
	}
	if !strings.HasPrefix(r.ID, "app-") || r.Topic != "orders" || r.Offset != 0 || r.Status != ferryv1.Status_STATUS_OK {
		t.Fatalf("SendSync result = %+v", r)
	}
	rs, err := p.SendBatchSync(ctx, []client.Message{
		{Topic: "orders", Body: []byte("b0")},
		{Topic: "audit", Body: []byte("a0")},
		{Topic: "orders", Body: []byte("b1")},
		{Topic: "orders", Body: []byte("b2")},
	})
	if err != nil {
		t.Fatalf("SendBatchSync: %v", err)
	}
	if rs[1].Topic != "audit" || rs[1].Offset != 0 || rs[1].Queue != 0 {
		t.Errorf("audit result = %+v", rs[1])
	}
	ids := map[string]bool{r.ID: true}
	for _, r := range rs {
		if ids[r.ID] || r.Offset < 0 {
			t.Errorf("result %+v: repeated id or no offset", r)
		}
		ids[r.ID] = true
	}

	got := consume(t, c, client.ConsumerOptions{Topic: "orders", Group: "g"}, nil, atLeast(4))
	if len(got) != 4 {
		t.Fatalf("consumed %d messages, want 4", len(got))
	}
	bodies := map[string]*ferryv1.Message{}
	for _, m := range got {
		bodies[string(m.Body)] = m
	}
	first := bodies["first"]
	if first == nil || first.Id != r.ID || first.Key != "k1" || first.Headers["h"] != "v" || first.BornUnixNano == 0 {
		t.Fatalf("consumed first message = %v, want id %s key k1 header h=v", first, r.ID)
	}
	for _, b := range []string{"b0", "b1", "b2"} {
		if bodies[b] == nil {
			t.Errorf("message %q not consumed", b)
		}
	}
	offs, err := c.GetOffsets(ctx, "g", []*ferryv1.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}})
	if err != nil || len(offs) != 2 || offs[0].Committed != offs[0].End || offs[1].Committed != offs[1].End || offs[0].End+offs[1].End != 4 {
		t.Errorf("GetOffsets after consuming all = %v, %v; want committed = end on both queues, 4 messages", offs, err)
	}
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "g"})
	if lag, err := cons.Lag(ctx); err != nil || lag != 0 {
		t.Errorf("Lag after consuming all = %d, %v; want 0", lag, err)
	}
	other, _ := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "other"})
	if lag, err := other.Lag(ctx); err != nil || lag != 4 {
		t.Errorf("Lag of a new group = %d, %v; want 4", lag, err)
	}
}

func TestConcurrentSendSync(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 4})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})

	const goroutines, each = 8, 100
	results := make([][]client.Result, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Appendf(nil, "%d-%d", g, i)})
				if err != nil {
					t.Errorf("SendSync: %v", err)
					return
				}
				results[g] = append(results[g], r)
			}
		})
	}
	wg.Wait()
	seen := map[[2]int64]string{}
	ids := map[string]bool{}
	for _, rs := range results {
		for _, r := range rs {
			k := [2]int64{int64(r.Queue), r.Offset}
			if prev, ok := seen[k]; ok {
				t.Fatalf("%s and %s both at queue %d offset %d", prev, r.ID, r.Queue, r.Offset)
			}
			seen[k] = r.ID
			ids[r.ID] = true
		}
	}
	if len(ids) != goroutines*each || core.storedCount("t") != goroutines*each {
		t.Fatalf("%d distinct ids, %d stored; want %d", len(ids), core.storedCount("t"), goroutines*each)
	}
	for q := range int32(4) {
		if n := len(core.stored("t", q)); n < each {
			t.Errorf("round robin put %d messages on queue %d, want about %d", n, q, goroutines*each/4)
		}
	}
}

func TestOrderPerKey(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 4})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Selector: client.KeyHash()})

	const keys, each = 6, 40
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			for i := range each {
				if _, err := p.SendSync(ctx, client.Message{Topic: "t", Key: fmt.Sprint("key", k), Body: fmt.Append(nil, i)}); err != nil {
					t.Errorf("SendSync: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()

	got := consume(t, c, client.ConsumerOptions{Topic: "t", Group: "g"}, nil, atLeast(keys*each))
	next := map[string]int{}
	queue := map[string]int32{}
	for _, m := range got {
		var i int
		fmt.Sscan(string(m.Body), &i)
		if i != next[m.Key] {
			t.Fatalf("key %s: got message %d, want %d (order per key broken)", m.Key, i, next[m.Key])
		}
		next[m.Key]++
		if q, ok := queue[m.Key]; ok && q != m.Queue {
			t.Fatalf("key %s on queues %d and %d", m.Key, q, m.Queue)
		}
		queue[m.Key] = m.Queue
	}
	if len(next) != keys {
		t.Fatalf("consumed %d keys, want %d", len(next), keys)
	}
}

func TestConsumerCommitsOnlyAfterHandlerSuccess(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	for i := range 10 {
		if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}); err != nil {
			t.Fatal(err)
		}
	}
	opts := client.ConsumerOptions{Topic: "t", Group: "g", MaxMessages: 3, CommitInterval: client.CommitEachBatch}

	// The handler fails on offset 4: Run retries it in place, and stops
	// (ctx cancelled) after the third failure.
	cons, err := c.NewConsumer(opts)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var handled []int64
	attempts := 0
	err = cons.Run(rctx, func(_ context.Context, m *ferryv1.Message) error {
		if m.Offset == 4 {
			if attempts++; attempts == 3 {
				cancel()
			}
			return errors.New("cannot process 4")
		}
		handled = append(handled, m.Offset)
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if fmt.Sprint(handled) != "[0 1 2 3]" || attempts != 3 {
		t.Fatalf("handled %v with %d attempts at offset 4; want [0 1 2 3] and 3 (retried in place, nothing past it)", handled, attempts)
	}
	core.mu.Lock()
	commits := append([]commitRecord(nil), core.commits...)
	core.mu.Unlock()
	for _, cr := range commits {
		if cr.offset > 4 {
			t.Fatalf("committed offset %d past the failing message 4 (commits %v)", cr.offset, commits)
		}
	}
	if off := core.committedOffset("g", "t", 0); off != 4 {
		t.Fatalf("committed offset after Run = %d, want 4 (all before the failing message)", off)
	}

	// A new consumer of the group gets the failed message again.
	got := consume(t, c, opts, nil, atLeast(6))
	if got[0].Offset != 4 || got[len(got)-1].Offset != 9 || len(got) != 6 {
		t.Fatalf("restarted consumer got offsets %v, want 4..9", offsetsOf(got))
	}
	if off := core.committedOffset("g", "t", 0); off != 10 {
		t.Fatalf("committed offset = %d, want 10", off)
	}
}

func offsetsOf(ms []*ferryv1.Message) []int64 {
	var out []int64
	for _, m := range ms {
		out = append(out, m.Offset)
	}
	return out
}

func TestConsumerResumesAtCommittedOffset(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 2})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	for i := range 20 {
		if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}); err != nil {
			t.Fatal(err)
		}
	}
	opts := client.ConsumerOptions{Topic: "t", Group: "g"}
	first := consume(t, c, opts, nil, atLeast(7))
	second := consume(t, c, opts, nil, atLeast(20-len(first)))
	seen := map[string]int{}
	for _, m := range append(first, second...) {
		seen[m.Id]++
	}
	if len(first) != 7 || len(seen) != 20 || len(first)+len(second) != 20 {
		t.Fatalf("first run %d, second run %d, distinct %d; want 7 + 13 = 20 distinct", len(first), len(second), len(seen))
	}
	// Nothing left: a third run must not see anything within its wait.
	cons, _ := c.NewConsumer(opts)
	if lag, err := cons.Lag(ctx); err != nil || lag != 0 {
		t.Fatalf("Lag = %d, %v; want 0", lag, err)
	}
}

func TestConsumerMovesPastRetention(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	for i := range 10 {
		if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Append(nil, i)}); err != nil {
			t.Fatal(err)
		}
	}
	opts := client.ConsumerOptions{Topic: "t", Group: "g"}
	consume(t, c, opts, nil, atLeast(2))
	core.truncate("t", 0, 5)
	got := consume(t, c, opts, nil, atLeast(5))
	if fmt.Sprint(offsetsOf(got)) != "[5 6 7 8 9]" {
		t.Fatalf("after retention removed 2..4 the consumer got %v, want [5 6 7 8 9]", offsetsOf(got))
	}
}

// TestTransportRestartMidStream stops the broker's transport while sends are
// in flight (some stored with their answers pending) and starts a new one on
// the same port: every send succeeds, every message is stored once, and a
// consumer running across the restart sees every offset once, in order.
func TestTransportRestartMidStream(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 2})
	b1 := startBroker(t, core, "127.0.0.1:0")
	var (
		stall   atomic.Bool
		stored  atomic.Int64
		stalled = make(chan struct{}, 64)
	)
	stall.Store(true)
	core.afterStore = func(ctx context.Context, _ *ferryv1.ProduceRequest) {
		if stored.Add(1) > 100 && stall.Load() {
			stalled <- struct{}{}
			<-ctx.Done() // stored, but the answer never leaves
		}
	}
	c := dial(t, b1.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Retries: 10, Timeout: 5 * time.Second, Backoff: 20 * time.Millisecond})

	var consumed []*ferryv1.Message
	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan error, 1)
	go func() {
		cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", MaxWait: 100 * time.Millisecond})
		consumerDone <- cons.Run(cctx, func(_ context.Context, m *ferryv1.Message) error {
			consumed = append(consumed, m)
			return nil
		})
	}()

	const goroutines, each = 8, 50
	results := make([][]client.Result, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: fmt.Appendf(nil, "%d-%d", g, i)})
				if err != nil {
					t.Errorf("SendSync across the restart: %v", err)
					return
				}
				results[g] = append(results[g], r)
			}
		})
	}
	select {
	case <-stalled:
	case <-ctx.Done():
		t.Fatal("no send reached the stall")
	}
	stall.Store(false)
	b1.stop()
	startBroker(t, core, b1.addr)
	wg.Wait()

	if n := core.storedCount("t"); n != goroutines*each {
		t.Fatalf("stored %d messages, want %d (each exactly once)", n, goroutines*each)
	}
	for _, rs := range results {
		for _, r := range rs {
			if m := core.stored("t", r.Queue)[r.Offset]; m.Id != r.ID {
				t.Fatalf("result %+v, but that offset holds %s", r, m.Id)
			}
		}
	}
	if calls := core.produceCalls.Load(); calls <= goroutines*each {
		t.Errorf("%d produce calls for %d sends: nothing was retried", calls, goroutines*each)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		core.mu.Lock()
		done := core.committed[groupKey{"g", queueKey{"t", 0}}]+core.committed[groupKey{"g", queueKey{"t", 1}}] == goroutines*each
		core.mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopConsumer()
	if err := <-consumerDone; err != nil {
		t.Fatalf("consumer Run: %v", err)
	}
	next := map[int32]int64{}
	for _, m := range consumed {
		if m.Offset != next[m.Queue] {
			t.Fatalf("consumer got queue %d offset %d, want %d", m.Queue, m.Offset, next[m.Queue])
		}
		next[m.Queue]++
	}
	if next[0]+next[1] != goroutines*each {
		t.Fatalf("consumer got %d messages, want %d", next[0]+next[1], goroutines*each)
	}
}

func TestErrorsAcrossTheWire(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Backoff: time.Millisecond})

	for _, sentinel := range []error{sdk.ErrFull, sdk.ErrInvalidArgument, sdk.ErrCorrupt} {
		core.produceCalls.Store(0)
		core.beforeStore = func(context.Context, *ferryv1.ProduceRequest) error {
			return fmt.Errorf("test core: %w", sentinel)
		}
		_, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("x")})
		if !errors.Is(err, sentinel) {
			t.Errorf("SendSync error = %v, want one matching %v", err, sentinel)
		}
		if n := core.produceCalls.Load(); n != 1 {
			t.Errorf("%v: %d produce calls, want 1 (a permanent error is not retried)", sentinel, n)
		}
	}

	// A core that is briefly unavailable is retried, with the same id.
	var ids []string
	core.produceCalls.Store(0)
	core.beforeStore = func(_ context.Context, req *ferryv1.ProduceRequest) error {
		ids = append(ids, req.Messages[0].Id)
		if len(ids) <= 2 {
			return fmt.Errorf("storage restarting: %w", sdk.ErrUnavailable)
		}
		return nil
	}
	if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("x")}); err != nil {
		t.Fatalf("SendSync with 2 unavailable answers and 2 retries: %v", err)
	}
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("attempts carried ids %v, want the same id 3 times", ids)
	}
	core.beforeStore = nil

	// Unknown topic: from the client's metadata, and from the broker's
	// Fetch (a unary call).
	if _, err := p.SendSync(ctx, client.Message{Topic: "nope", Body: []byte("x")}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("send to an unknown topic: %v, want ErrNotFound", err)
	}
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "nope", Group: "g", Queues: []int32{0}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cons.Run(ctx, func(context.Context, *ferryv1.Message) error { return nil }); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Run on an unknown topic: %v, want ErrNotFound", err)
	}
	if _, err := c.NewConsumer(client.ConsumerOptions{Topic: "t"}); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("NewConsumer without a group: %v, want ErrInvalidArgument", err)
	}
}

func TestQueueCountChangeIsRefreshed(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 4})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr) // caches 4 queues
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	core.setQueues("t", 2)
	for range 4 {
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("x")})
		if err != nil || r.Queue >= 2 {
			t.Fatalf("SendSync after the topic shrank to 2 queues = %+v, %v", r, err)
		}
	}
}

func TestOversizeMessage(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	_, err := p.SendSync(ctx, client.Message{Topic: "t", Body: bytes.Repeat([]byte("x"), 4<<20+1)})
	if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "max_message_bytes") {
		t.Fatalf("oversize SendSync: %v, want ErrInvalidArgument naming max_message_bytes", err)
	}
	if n := core.produceCalls.Load(); n != 0 {
		t.Fatalf("core saw %d produce calls for an oversize message", n)
	}
	// The stream is still usable.
	if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("ok")}); err != nil {
		t.Fatalf("SendSync after an oversize one: %v", err)
	}

	small, err := client.Dial(ctx, b.addr, client.WithMaxRequestBytes(1024), client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	_, err = small.NewProducer(client.ProducerOptions{}).SendSync(ctx, client.Message{Topic: "t", Body: make([]byte, 2048)})
	if !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Fatalf("batch over the client's own limit: %v, want ErrInvalidArgument", err)
	}
}

func TestTimeoutIsNotRetriedByDefault(t *testing.T) {
	core := newMemCore(map[string]int32{"t": 1})
	b := startBroker(t, core, "127.0.0.1:0")
	c := dial(t, b.addr)
	ctx := testCtx(t)
	core.beforeStore = func(ctx context.Context, _ *ferryv1.ProduceRequest) error {
		<-ctx.Done() // the broker never gets it stored in time
		return ctx.Err()
	}
	for _, tc := range []struct {
		retryOnTimeout bool
		calls          int64
	}{{false, 1}, {true, 2}} {
		core.produceCalls.Store(0)
		p := c.NewProducer(client.ProducerOptions{Timeout: 150 * time.Millisecond, Retries: 1, RetryOnTimeout: tc.retryOnTimeout, Backoff: time.Millisecond})
		_, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("x")})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RetryOnTimeout=%v: %v, want DeadlineExceeded", tc.retryOnTimeout, err)
		}
		if n := core.produceCalls.Load(); n != tc.calls {
			t.Errorf("RetryOnTimeout=%v: %d produce calls, want %d", tc.retryOnTimeout, n, tc.calls)
		}
	}
}

func TestDialUnreachableBroker(t *testing.T) {
	b := startBroker(t, newMemCore(nil), "127.0.0.1:0")
	b.stop() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, b.addr, client.WithLogger(quiet))
	if !errors.Is(err, sdk.ErrUnavailable) {
		t.Fatalf("Dial to a closed port: %v, want ErrUnavailable", err)
	}
}

func TestClosedClient(t *testing.T) {
	b := startBroker(t, newMemCore(map[string]int32{"t": 1}), "127.0.0.1:0")
	c := dial(t, b.addr)
	p := c.NewProducer(client.ProducerOptions{})
	c.Close()
	if _, err := p.SendSync(testCtx(t), client.Message{Topic: "t"}); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("SendSync on a closed client: %v, want ErrClosed", err)
	}
}
