package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

// source is a StorageSource over stores the test controls: Broken switches to
// the next store, as the plugin host does when it restarts a plugin.
type source struct {
	mu      sync.Mutex
	stores  []sdk.Storage
	gen     int
	changed chan struct{}
}

func newSource(stores ...sdk.Storage) *source {
	return &source{stores: stores, changed: make(chan struct{})}
}

func (s *source) Current() (sdk.Plugin, uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stores[s.gen], uint64(s.gen + 1), s.changed
}

func (s *source) Next(ctx context.Context, gen uint64) (sdk.Plugin, uint64, error) {
	for {
		impl, g, ch := s.Current()
		if g > gen {
			return impl, g, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

func (s *source) Broken(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if uint64(s.gen+1) == gen && s.gen+1 < len(s.stores) {
		s.gen++
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

func newMemory(t *testing.T) *memory.Store {
	t.Helper()
	m := memory.New()
	if err := m.Configure(context.Background(), nil, &sdk.Environment{}); err != nil {
		t.Fatal(err)
	}
	return m
}

func newBroker(t *testing.T, src StorageSource) *Broker {
	t.Helper()
	b := New(Options{Node: "n1", Topics: []Topic{{Name: "orders", Queues: 2}}}, src)
	b.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return b
}

func produce(t *testing.T, b *Broker, queue int32, ids ...string) []int64 {
	t.Helper()
	req := &sdk.ProduceRequest{}
	for _, id := range ids {
		req.Messages = append(req.Messages, &sdk.Message{Id: id, Topic: "orders", Queue: queue, Body: []byte(id)})
	}
	resp, err := b.Produce(context.Background(), req)
	if err != nil {
		t.Fatalf("produce %v: %v", ids, err)
	}
	if resp.Status != sdk.Status(1) {
		t.Fatalf("status %v", resp.Status)
	}
	return resp.Offsets
}

func TestProduceFetchCommit(t *testing.T) {
	b := newBroker(t, newSource(newMemory(t)))
	if got := produce(t, b, 0, "a", "b"); fmt.Sprint(got) != "[0 1]" {
		t.Fatalf("offsets %v", got)
	}
	produce(t, b, 1, "c")
	// A retry of a stored message returns its original offset.
	if got := produce(t, b, 0, "b"); fmt.Sprint(got) != "[1]" {
		t.Fatalf("re-produced b got offsets %v, want [1]", got)
	}
	ctx := context.Background()
	resp, err := b.Fetch(ctx, &sdk.FetchRequest{Topic: "orders", Positions: []*sdkPos{{Queue: 0, Offset: 1}, {Queue: 1, Offset: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range resp.Messages {
		got = append(got, fmt.Sprintf("%s@%d/%d", m.Id, m.Queue, m.Offset))
	}
	if fmt.Sprint(got) != "[b@0/1 c@1/0]" {
		t.Fatalf("fetched %v", got)
	}
	if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "g", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 2}}}); err != nil {
		t.Fatal(err)
	}
	offs, err := b.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "g", Queues: []*sdk.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if o := offs.Offsets; o[0].Committed != 2 || o[0].End != 2 || o[1].Committed != -1 || o[1].End != 1 {
		t.Fatalf("offsets %v", o)
	}
}

type sdkPos = ferryv1.FetchPosition

func TestBadRequests(t *testing.T) {
	b := newBroker(t, newSource(newMemory(t)))
	ctx := context.Background()
	cases := []struct {
		name string
		err  error
		call func() error
	}{
		{"unknown topic", sdk.ErrNotFound, func() error {
			_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "x", Topic: "nope"}}})
			return err
		}},
		{"queue out of range", sdk.ErrInvalidArgument, func() error {
			_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "x", Topic: "orders", Queue: 2}}})
			return err
		}},
		{"no id", sdk.ErrInvalidArgument, func() error {
			_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Topic: "orders"}}})
			return err
		}},
		{"too large", sdk.ErrInvalidArgument, func() error {
			_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "x", Topic: "orders", Body: make([]byte, DefaultMaxMessageBytes+1)}}})
			return err
		}},
		{"empty topic", sdk.ErrInvalidArgument, func() error {
			_, err := b.Fetch(ctx, &sdk.FetchRequest{Positions: []*sdkPos{{}}})
			return err
		}},
		{"negative commit", sdk.ErrInvalidArgument, func() error {
			return b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "g", Offsets: []*sdk.GroupOffset{{Topic: "orders", Offset: -1}}})
		}},
		{"heartbeat without member", sdk.ErrInvalidArgument, func() error {
			_, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "g"})
			return err
		}},
	}
	for _, c := range cases {
		if err := c.call(); !errors.Is(err, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.err)
		}
	}
}

// A long-polling fetch wakes up when a message is appended.
func TestFetchLongPoll(t *testing.T) {
	b := newBroker(t, newSource(newMemory(t)))
	got := make(chan *sdk.FetchResponse)
	go func() {
		resp, err := b.Fetch(context.Background(), &sdk.FetchRequest{Topic: "orders", Positions: []*sdkPos{{Queue: 1}}, MaxWaitNanos: int64(10 * time.Second)})
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	time.Sleep(50 * time.Millisecond)
	produce(t, b, 1, "late")
	select {
	case resp := <-got:
		if len(resp.Messages) != 1 || resp.Messages[0].Id != "late" {
			t.Fatalf("fetched %v", resp.Messages)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll did not wake up on append")
	}
	// With nothing to read it answers empty after max_wait.
	resp, err := b.Fetch(context.Background(), &sdk.FetchRequest{Topic: "orders", Positions: []*sdkPos{{Queue: 1, Offset: 1}}, MaxWaitNanos: int64(20 * time.Millisecond)})
	if err != nil || len(resp.Messages) != 0 {
		t.Fatalf("empty poll: %v %v", resp, err)
	}
}

// Messages in a group's retry topic are not delivered before they are due.
func TestRetryTopicHoldsMessagesUntilDue(t *testing.T) {
	b := newBroker(t, newSource(newMemory(t)))
	topic := sdk.RetryTopic("g")
	due := time.Now().Add(300 * time.Millisecond)
	ctx := context.Background()
	// The group exists: it has a live member.
	if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "g", Member: "m", Topics: []string{"orders", topic}, SessionTimeoutNanos: int64(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "r1", Topic: topic, Queue: 0,
		Headers: map[string]string{sdk.HeaderDeliverAt: strconv.FormatInt(due.UnixNano(), 10)}}}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := b.Fetch(ctx, &sdk.FetchRequest{Topic: topic, Positions: []*sdkPos{{Queue: 0}}})
	if err != nil || len(resp.Messages) != 0 {
		t.Fatalf("not-yet-due message delivered: %v %v", resp.GetMessages(), err)
	}
	resp, err = b.Fetch(ctx, &sdk.FetchRequest{Topic: topic, Positions: []*sdkPos{{Queue: 0}}, MaxWaitNanos: int64(5 * time.Second)})
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("due message not delivered: %v %v", resp.GetMessages(), err)
	}
	if now := time.Now(); now.Before(due) {
		t.Fatalf("delivered %v before it was due", due.Sub(now))
	}
	md, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{topic, sdk.DLQTopic("g"), "unknown"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Topics) != 2 || md.Topics[0].Queues != int32(len(sdk.DelayLevels)) || md.Topics[1].Queues != 1 {
		t.Fatalf("metadata %v", md.Topics)
	}
}

func TestHeartbeatMembers(t *testing.T) {
	b := newBroker(t, newSource(newMemory(t)))
	now := time.Unix(1000, 0)
	b.groups.now = func() time.Time { return now }
	ctx := context.Background()
	beat := func(id string, leave bool) []string {
		resp, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "g", Member: id, Topics: []string{"orders"}, Leave: leave, SessionTimeoutNanos: int64(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Members
	}
	beat("b", false)
	if got := beat("a", false); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("members %v", got)
	}
	if got := beat("b", true); fmt.Sprint(got) != "[a]" {
		t.Fatalf("after b left: %v", got)
	}
	beat("c", false)
	now = now.Add(800 * time.Millisecond)
	beat("a", false)
	now = now.Add(800 * time.Millisecond) // c's session (1s) ran out; a's did not
	if got := beat("a", false); fmt.Sprint(got) != "[a]" {
		t.Fatalf("after c expired: %v", got)
	}
}

// flaky wraps a store and, for batches holding a marked id, stores the data
// and then reports the outcome as unknown: what the broker sees when the
// storage process dies after writing but before answering.
type flaky struct {
	sdk.Storage
	lose string
}

func (f *flaky) Append(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	wait, err := f.Storage.Append(ctx, msgs)
	for _, m := range msgs {
		if m.Id == f.lose {
			return func(context.Context) ([]int64, error) {
				return nil, fmt.Errorf("%w: plugin died", sdk.ErrUnavailable)
			}, err
		}
	}
	return wait, err
}

// After the storage dies with appends of unknown outcome, they are sent again
// to the next generation in order and de-duplicated: every producer gets its
// offsets, nothing is stored twice, order per queue holds.
func TestReplayAfterStorageCrash(t *testing.T) {
	store := newMemory(t) // durable across the "restart": both generations share it
	src := newSource(&flaky{Storage: store, lose: "m-5"}, store)
	b := newBroker(t, src)
	var wg sync.WaitGroup
	offsets := make([]int64, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "m-" + strconv.Itoa(i), Topic: "orders", Queue: 0}}})
			if err != nil {
				t.Errorf("m-%d: %v", i, err)
				return
			}
			offsets[i] = resp.Offsets[0]
		}()
	}
	wg.Wait()
	resp, err := store.Read(context.Background(), &sdk.ReadRequest{Topic: "orders", Queue: 0, MaxMessages: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Messages) != 20 {
		t.Fatalf("stored %d messages, want 20 (no duplicates, none lost)", len(resp.Messages))
	}
	for _, m := range resp.Messages {
		i, _ := strconv.Atoi(m.Id[2:])
		if offsets[i] != m.Offset {
			t.Errorf("%s answered offset %d, stored at %d", m.Id, offsets[i], m.Offset)
		}
	}
}
