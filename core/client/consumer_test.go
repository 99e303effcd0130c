package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

func TestAllocateAveragely(t *testing.T) {
	qs := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(i)
		}
		return out
	}
	for _, tc := range []struct {
		queues  int
		members []string
		want    map[string]string
	}{
		{4, []string{"a"}, map[string]string{"a": "[0 1 2 3]"}},
		{4, []string{"a", "b"}, map[string]string{"a": "[0 1]", "b": "[2 3]"}},
		{4, []string{"a", "b", "c"}, map[string]string{"a": "[0 1]", "b": "[2]", "c": "[3]"}},
		{18, []string{"a", "b", "c", "d"}, map[string]string{"a": "[0 1 2 3 4]", "b": "[5 6 7 8 9]", "c": "[10 11 12 13]", "d": "[14 15 16 17]"}},
		{2, []string{"a", "b", "c"}, map[string]string{"a": "[0]", "b": "[1]", "c": "[]"}},
		{4, []string{"a", "b"}, map[string]string{"z": "[]"}}, // not a member
	} {
		seen := map[int32]int{}
		for m, want := range tc.want {
			got := client.Allocate(qs(tc.queues), tc.members, m)
			if fmt.Sprint(got) != want {
				t.Errorf("Allocate(%d queues, %v, %s) = %v, want %s", tc.queues, tc.members, m, got, want)
			}
			for _, q := range got {
				seen[q]++
			}
		}
		if len(tc.want) == len(tc.members) && len(seen) != tc.queues {
			t.Errorf("%d queues over %v: %d assigned, want all exactly once (%v)", tc.queues, tc.members, len(seen), seen)
		}
	}
}

// A poison message is delivered exactly MaxAttempts times, through the retry
// topic, then dead-lettered with its reason and history; the other messages
// are delivered once each and never wait for it.
func TestPoisonMessageGoesToDLQ(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"orders": 2})
	c := connect(t, n.addr)
	ids := produceN(t, c, "orders", 60)
	poison := ids[17]

	rec := newRecord()
	var lastGood atomic.Int64 // unix nanos of the last good message handled
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "billing", Concurrency: 4,
		Retry: client.RetryPolicy{MaxAttempts: 4, Delays: []time.Duration{150 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		rec.add(d)
		if d.ID == poison {
			return fmt.Errorf("cannot parse order %s", d.Message.Body)
		}
		lastGood.Store(time.Now().UnixNano())
		return nil
	})
	// Stopped only once the consumer has settled the dead letter: the broker
	// stores it a moment before the consumer's send returns, and a stop in
	// between leaves its outcome unknown to the consumer (it is sent again,
	// de-duplicated, by the group's next run).
	waitFor(t, 10*time.Second, "the poison message in the DLQ", func() bool {
		depth, err := c.DLQDepth(bgCtx(t), "billing")
		return err == nil && depth == 1 && cons.Stats().DeadLettered == 1
	})
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}

	if got := rec.get(poison); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("poison message delivered with attempts %v, want [1 2 3 4]", got)
	}
	for _, id := range ids {
		if id != poison && fmt.Sprint(rec.get(id)) != "[1]" {
			t.Errorf("message %s delivered with attempts %v, want [1]", id, rec.get(id))
		}
	}
	rec.mu.Lock()
	firstRetry := rec.times[poison][1]
	rec.mu.Unlock()
	if time.Unix(0, lastGood.Load()).After(firstRetry) {
		t.Errorf("the last good message was handled after the poison message's first retry: the others waited for it")
	}
	if st := cons.Stats(); st.DeadLettered != 1 || st.Retried != 3 || st.Acked != 59 {
		t.Errorf("stats %+v, want 59 acked, 3 retried, 1 dead-lettered", st)
	}

	dls, s, err := c.DeadLetters(bgCtx(t), "billing", 0)
	if err != nil || len(dls) != 1 || s.Depth() != 1 {
		t.Fatalf("DeadLetters = %v, %+v, %v; want one", dls, s, err)
	}
	dl := dls[0]
	if dl.ID != poison || dl.Topic != "orders" || dl.Attempts != 4 || dl.Reason != "max attempts (4) reached" ||
		dl.LastError != "cannot parse order 17" || string(dl.Message.Body) != "17" || dl.Message.Key != "k17" {
		t.Errorf("dead letter = %+v (headers %v)", dl, dl.Message.Headers)
	}
	if dl.Offset < 0 || dl.Queue < 0 || dl.FirstFailure.IsZero() || !dl.LastFailure.After(dl.FirstFailure) {
		t.Errorf("dead letter origin %d@%d, failures %v .. %v; want an origin and first < last", dl.Queue, dl.Offset, dl.FirstFailure, dl.LastFailure)
	}
	// Every original offset is committed: the poison message's too.
	for q, off := range committed(t, c, "billing", "orders", 2) {
		if off != 30 {
			t.Errorf("queue %d committed %d, want 30 (all)", q, off)
		}
	}
}

// A re-driven dead letter is delivered to the group again, on attempt 1,
// and the DLQ's depth counts it out; purge drops the rest.
func TestRedriveAndPurge(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"orders": 1})
	c := connect(t, n.addr)
	ids := produceN(t, c, "orders", 5)

	var fixed atomic.Bool
	rec := newRecord()
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "g", Concurrency: 2,
		Retry: client.RetryPolicy{MaxAttempts: 2, Delays: []time.Duration{50 * time.Millisecond}}})
	stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		rec.add(d)
		if fixed.Load() {
			return nil
		}
		if d.ID == ids[4] {
			return client.Permanent(errors.New("unknown customer"))
		}
		return errors.New("downstream is down")
	})
	waitFor(t, 10*time.Second, "5 dead letters", func() bool {
		d, err := cons.DLQDepth(bgCtx(t))
		return err == nil && d == 5
	})
	if got := rec.get(ids[4]); fmt.Sprint(got) != "[1]" {
		t.Errorf("permanently failing message delivered %v times, want once", got)
	}
	dls, _, err := c.DeadLetters(bgCtx(t), "g", 0)
	if err != nil {
		t.Fatal(err)
	}
	var dl client.DeadLetter
	for _, x := range dls {
		if x.ID == ids[4] {
			dl = x
		}
	}
	if dl.ID != ids[4] || dl.Reason != "permanent error" || dl.Attempts != 1 || dl.LastError != "unknown customer" {
		t.Errorf("permanent dead letter = %+v", dl)
	}

	fixed.Store(true)
	sent, err := c.RedriveDeadLetters(bgCtx(t), "g", 3)
	if err != nil || len(sent) != 3 {
		t.Fatalf("RedriveDeadLetters(3) = %d, %v", len(sent), err)
	}
	if d, _ := c.DLQDepth(bgCtx(t), "g"); d != 2 {
		t.Errorf("DLQ depth after re-driving 3 of 5 = %d, want 2", d)
	}
	waitFor(t, 10*time.Second, "the re-driven messages handled", func() bool {
		for _, dl := range sent {
			if a := rec.get(dl.ID); len(a) == 0 || a[len(a)-1] != 1 || len(a) < 2 {
				return false
			}
		}
		return true
	})
	// Running redrive again sends nothing twice: the cursor moved.
	purged, err := c.PurgeDeadLetters(bgCtx(t), "g", 0)
	if err != nil || purged != 2 {
		t.Fatalf("PurgeDeadLetters = %d, %v; want 2", purged, err)
	}
	if d, _ := c.DLQDepth(bgCtx(t), "g"); d != 0 {
		t.Errorf("DLQ depth after purge = %d", d)
	}
	if again, err := c.RedriveDeadLetters(bgCtx(t), "g", 0); err != nil || len(again) != 0 {
		t.Errorf("redrive of an empty DLQ = %d, %v", len(again), err)
	}
	if _, err := c.DeadLetterAt(bgCtx(t), "g", 0); err != nil {
		t.Errorf("a purged dead letter is still shown by offset: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, dl := range sent {
		a := rec.get(dl.ID)
		if fmt.Sprint(a[len(a)-1:]) != "[1]" {
			t.Errorf("re-driven %s attempts %v: want its last delivery on attempt 1", dl.ID, a)
		}
	}
}

// Nack(delay) gives a message back for a later attempt; RetryAfter does the
// same from a returned error.
func TestNackAndRetryAfter(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 1})
	c := connect(t, n.addr)
	ids := produceN(t, c, "t", 2)
	rec := newRecord()
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g"})
	stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		rec.add(d)
		if d.Attempt > 1 {
			return nil
		}
		if d.ID == ids[0] {
			return d.Nack(300 * time.Millisecond)
		}
		return client.RetryAfter(300*time.Millisecond, errors.New("busy"))
	})
	waitFor(t, 5*time.Second, "both messages on attempt 2", func() bool {
		return len(rec.get(ids[0])) == 2 && len(rec.get(ids[1])) == 2
	})
	stop()
	for _, id := range ids {
		rec.mu.Lock()
		gap := rec.times[id][1].Sub(rec.times[id][0])
		rec.mu.Unlock()
		if gap < 300*time.Millisecond || gap > 3*time.Second {
			t.Errorf("%s retried after %v, want about 300ms (not the 1s default)", id, gap)
		}
	}
}

// Orderly mode retries in place: the queue does not move past a failing
// message until it succeeds or runs out of attempts (then it is
// dead-lettered and the queue moves on).
func TestOrderlyRetriesInPlace(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 2})
	c := connect(t, n.addr)
	p := c.NewProducer(client.ProducerOptions{Selector: client.KeyHash()})
	for i := range 40 {
		if _, err := p.SendSync(bgCtx(t), client.Message{Topic: "t", Key: fmt.Sprint("key", i%2), Body: fmt.Append(nil, i)}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string // bodies, in handling order per key
	perKey := map[string][]string{}
	fails := map[string]int{}
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Orderly: true, Concurrency: 2,
		Retry: client.RetryPolicy{MaxAttempts: 3, Delays: []time.Duration{20 * time.Millisecond}}})
	stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		b := string(d.Message.Body)
		mu.Lock()
		defer mu.Unlock()
		if b == "4" && fails[b] < 2 || b == "7" { // 4 fails twice then passes; 7 always fails
			fails[b]++
			return fmt.Errorf("fail %s", b)
		}
		got = append(got, b)
		perKey[d.Message.Key] = append(perKey[d.Message.Key], b)
		return nil
	})
	waitFor(t, 10*time.Second, "39 messages handled and one dead-lettered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 39 && fails["7"] == 3
	})
	stop()
	for k, bodies := range perKey {
		prev := -1
		for _, b := range bodies {
			var i int
			fmt.Sscan(b, &i)
			if i <= prev {
				t.Fatalf("key %s handled out of order: %v", k, bodies)
			}
			prev = i
		}
	}
	if fails["4"] != 2 || fails["7"] != 3 {
		t.Errorf("fails %v: want 4 failed twice (then passed), 7 three times (max attempts)", fails)
	}
	dls, _, err := c.DeadLetters(bgCtx(t), "g", 0)
	if err != nil || len(dls) != 1 || string(dls[0].Message.Body) != "7" || dls[0].Attempts != 3 {
		t.Fatalf("dead letters = %+v, %v; want message 7 after 3 attempts", dls, err)
	}
}

// Pull: Fetch a batch, settle each delivery; the committed offset is the
// lowest unacked one, and Nacked messages come back.
func TestPullCommitsLowestUnacked(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 1})
	c := connect(t, n.addr)
	ids := produceN(t, c, "t", 10)
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", MaxWait: 200 * time.Millisecond, CommitInterval: 20 * time.Millisecond})
	if err := cons.Start(bgCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	ds, err := cons.Fetch(bgCtx(t), 10)
	if err != nil || len(ds) != 10 {
		t.Fatalf("Fetch = %d deliveries, %v; want 10", len(ds), err)
	}
	for i, d := range ds {
		if d.ID != ids[i] || d.Offset != int64(i) || d.Attempt != 1 {
			t.Fatalf("delivery %d = %s@%d attempt %d", i, d.ID, d.Offset, d.Attempt)
		}
		if i != 3 && i != 6 {
			d.Ack()
		}
	}
	waitFor(t, 5*time.Second, "commit of offset 3", func() bool { return committed(t, c, "g", "t", 1)[0] == 3 })
	time.Sleep(100 * time.Millisecond)
	if off := committed(t, c, "g", "t", 1)[0]; off != 3 {
		t.Fatalf("committed %d, want 3 (the lowest unacked)", off)
	}
	if err := ds[3].Nack(50 * time.Millisecond); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	waitFor(t, 5*time.Second, "commit of offset 6", func() bool { return committed(t, c, "g", "t", 1)[0] == 6 })
	var again []*client.Delivery
	waitFor(t, 5*time.Second, "the nacked message back", func() bool {
		more, err := cons.Fetch(bgCtx(t), 10)
		if err != nil {
			t.Fatal(err)
		}
		again = append(again, more...)
		return len(again) > 0
	})
	if len(again) != 1 || again[0].ID != ids[3] || again[0].Attempt != 2 || again[0].Offset != 3 || again[0].Message.Topic != sdk.RetryTopic("g") {
		t.Fatalf("after Nack Fetch got %v, want %s on attempt 2 from the retry topic", again, ids[3])
	}
	again[0].Ack()
	ds[6].Ack()
	waitFor(t, 5*time.Second, "commit of everything", func() bool { return committed(t, c, "g", "t", 1)[0] == 10 })
	if err := cons.Close(); err != nil {
		t.Fatal(err)
	}
	if st := cons.Stats(); st.Acked != 10 || st.Retried != 1 || st.Delivered != 11 {
		t.Errorf("stats %+v", st)
	}
}

// Flow control: never more than MaxInflight unsettled deliveries, never more
// than Concurrency handlers at once; a slow message holds the commit at its
// offset while later ones are processed.
func TestFlowControlAndConcurrency(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 1})
	c := connect(t, n.addr)
	produceN(t, c, "t", 200)
	var running, peak atomic.Int32
	var peakInflight atomic.Int64
	release := make(chan struct{})
	var handled atomic.Int32
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Concurrency: 4, MaxInflight: 16, CommitInterval: 10 * time.Millisecond})
	stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		if st := cons.Stats(); st.Inflight > peakInflight.Load() {
			peakInflight.Store(st.Inflight)
		}
		if d.Offset == 5 {
			<-release
		} else {
			time.Sleep(time.Millisecond)
		}
		handled.Add(1)
		return nil
	})
	waitFor(t, 10*time.Second, "199 messages handled", func() bool { return handled.Load() == 199 })
	time.Sleep(50 * time.Millisecond)
	if off := committed(t, c, "g", "t", 1)[0]; off != 5 {
		t.Errorf("committed %d while offset 5 is in progress, want 5", off)
	}
	close(release)
	waitFor(t, 5*time.Second, "commit of everything", func() bool { return committed(t, c, "g", "t", 1)[0] == 200 })
	stop()
	if p := peak.Load(); p > 4 || p < 2 {
		t.Errorf("peak concurrent handlers %d, want 2..4", p)
	}
	if p := peakInflight.Load(); p > 16 {
		t.Errorf("peak unsettled %d, want at most MaxInflight 16", p)
	}
}

// Three members join and leave while 10,000 messages flow (one of them dies
// without leaving): every message is processed at least once, and the queues
// are shared out.
func TestMembersJoinAndLeave(t *testing.T) {
	if testing.Short() {
		t.Skip("rebalancing takes seconds")
	}
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 6})
	prodClient := connect(t, n.addr)
	const total = 10000
	rec := newRecord()
	perMember := make([]atomic.Int64, 3)
	opts := func(i int) client.ConsumerOptions {
		return client.ConsumerOptions{Topic: "t", Group: "g", Member: fmt.Sprint("m", i), Concurrency: 2,
			HeartbeatInterval: 100 * time.Millisecond, SessionTimeout: time.Second, CommitInterval: 50 * time.Millisecond}
	}
	start := func(i int, c *client.Client) func() error {
		cons, err := c.NewConsumer(opts(i))
		if err != nil {
			t.Fatal(err)
		}
		return runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
			rec.add(d)
			perMember[i].Add(1)
			time.Sleep(50 * time.Microsecond)
			return nil
		})
	}
	var ids []string
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		p := prodClient.NewProducer(client.ProducerOptions{})
		for i := 0; i < total; i += 100 {
			var msgs []client.Message
			for j := i; j < i+100; j++ {
				msgs = append(msgs, client.Message{Topic: "t", Body: fmt.Append(nil, j)})
			}
			rs, err := p.SendBatchSync(bgCtx(t), msgs)
			if err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			time.Sleep(4 * time.Millisecond)
		}
	}()
	c0, c1 := connect(t, n.addr), connect(t, n.addr)
	c2, err := client.Dial(bgCtx(t), n.addr, client.WithLogger(silent))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	stop0 := start(0, c0)
	time.Sleep(300 * time.Millisecond)
	stop1 := start(1, c1)
	time.Sleep(300 * time.Millisecond)
	stop2 := start(2, c2)
	time.Sleep(400 * time.Millisecond)
	if err := stop0(); err != nil { // leaves
		t.Errorf("member 0: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	c2.Close() // member 2 dies: no leave, no final commit
	stop2()
	<-produced
	waitFor(t, 20*time.Second, "every message processed", func() bool { return rec.distinct() == total })
	waitFor(t, 10*time.Second, "everything committed", func() bool {
		for _, off := range committed(t, c1, "g", "t", 6) {
			if off < 0 {
				return false
			}
		}
		offs := committed(t, c1, "g", "t", 6)
		var sum int64
		for _, o := range offs {
			sum += o
		}
		return sum == total
	})
	stop1()
	for _, id := range ids {
		if len(rec.get(id)) == 0 {
			t.Fatalf("message %s never processed", id)
		}
	}
	dups := len(rec.order) - total
	t.Logf("processed %d deliveries for %d messages (%d duplicates); per member %d %d %d", len(rec.order), total, dups,
		perMember[0].Load(), perMember[1].Load(), perMember[2].Load())
	for i := range perMember {
		if perMember[i].Load() == 0 {
			t.Errorf("member %d processed nothing: the queues were not shared", i)
		}
	}
}

// Scheduled retries are stored: a retry pending when the broker stops is
// delivered after it restarts on the same files.
func TestRetrySurvivesBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	openStore := func() sdk.Storage {
		s := file.New()
		if err := s.Configure(context.Background(), []byte(`{"flush": "sync"}`), &sdk.Environment{DataDir: dir}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1 := openStore()
	n1 := startNode(t, s1, "127.0.0.1:0", map[string]int{"t": 1})
	c1 := connect(t, n1.addr)
	ids := produceN(t, c1, "t", 1)
	cons, _ := c1.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", CommitInterval: 10 * time.Millisecond,
		Retry: client.RetryPolicy{Delays: []time.Duration{1500 * time.Millisecond}}})
	var failed atomic.Bool
	stop := runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		failed.Store(true)
		return errors.New("not now")
	})
	waitFor(t, 5*time.Second, "the first attempt to fail and commit", func() bool {
		return failed.Load() && committed(t, c1, "g", "t", 1)[0] == 1
	})
	stop()
	c1.Close()
	n1.stop()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := startNode(t, openStore(), n1.addr, map[string]int{"t": 1})
	c2 := connect(t, n2.addr)
	rec := newRecord()
	cons2, _ := c2.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g"})
	stop2 := runConsumer(t, cons2, func(_ context.Context, d *client.Delivery) error {
		rec.add(d)
		return nil
	})
	waitFor(t, 10*time.Second, "the retry after the restart", func() bool { return len(rec.get(ids[0])) == 1 })
	stop2()
	if got := rec.get(ids[0]); fmt.Sprint(got) != "[2]" {
		t.Fatalf("after the restart the message came with attempts %v, want [2]", got)
	}
}

// Broadcast: every member gets every message, each with its own offsets.
func TestBroadcast(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 3})
	c := connect(t, n.addr)
	produceN(t, c, "t", 30)
	var counts [2]atomic.Int32
	for i := range 2 {
		cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Member: fmt.Sprint("m", i), Broadcast: true})
		if g := cons.Group(); g != fmt.Sprint("g@m", i) {
			t.Fatalf("broadcast group = %s", g)
		}
		runConsumer(t, cons, func(context.Context, *client.Delivery) error { counts[i].Add(1); return nil })
	}
	waitFor(t, 5*time.Second, "both members with all 30", func() bool { return counts[0].Load() == 30 && counts[1].Load() == 30 })
}

// A handler that panics fails its attempt; the consumer goes on.
func TestHandlerPanic(t *testing.T) {
	n := startNode(t, newMemoryStore(t), "127.0.0.1:0", map[string]int{"t": 1})
	c := connect(t, n.addr)
	produceN(t, c, "t", 3)
	cons, _ := c.NewConsumer(client.ConsumerOptions{Topic: "t", Group: "g", Retry: client.RetryPolicy{MaxAttempts: 1}})
	var ok atomic.Int32
	runConsumer(t, cons, func(_ context.Context, d *client.Delivery) error {
		if d.Offset == 1 {
			panic("boom")
		}
		ok.Add(1)
		return nil
	})
	waitFor(t, 5*time.Second, "the panicking message dead-lettered", func() bool {
		d, _ := c.DLQDepth(bgCtx(t), "g")
		return d == 1 && ok.Load() == 2
	})
	dls, _, _ := c.DeadLetters(bgCtx(t), "g", 1)
	if len(dls) != 1 || !strings.Contains(dls[0].LastError, "boom") || dls[0].Reason != "max attempts (1) reached" {
		t.Errorf("dead letter %+v", dls)
	}
}

// Retry delays come from the policy: the n-th retry waits Delays[n-1], the
// last repeating; the default is RocketMQ's levels.
func TestRetryPolicyDelay(t *testing.T) {
	p := client.RetryPolicy{Delays: []time.Duration{time.Second, 5 * time.Second}}
	var got []time.Duration
	for a := 1; a <= 4; a++ {
		got = append(got, p.Delay(a))
	}
	if !slices.Equal(got, []time.Duration{time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second}) {
		t.Errorf("delays %v", got)
	}
	levels := client.RetryPolicy{Delays: sdk.DelayLevels}
	if d1, d17, d30 := levels.Delay(1), levels.Delay(17), levels.Delay(30); d1 != time.Second || d17 != time.Hour || d30 != 2*time.Hour {
		t.Errorf("RocketMQ levels: retries 1, 17, 30 wait %v %v %v; want 1s 1h 2h", d1, d17, d30)
	}
}
