package sdktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// StorageFeatures says what a Storage implementation supports; the suite
// skips the cases that need what it lacks.
type StorageFeatures struct {
	// Config is the config section (JSON) every store the suite opens is
	// configured with; nil means the implementation's defaults. Stores are
	// configured with an Environment whose DataDir is the dir given to
	// newStore (a fresh directory per case, the same one on reopen).
	Config []byte
	// Durable: what was acknowledged (AppendWait returned no error),
	// committed group offsets and the de-dup window survive Close and a new
	// store on the same directory.
	Durable bool
	// DataFiles lists the files that hold messages under dir, oldest first.
	// After Close, the newest file must end with the record of the newest
	// message. With it (and Durable) the suite damages that file while the
	// store is closed, the way a crash or the disk would (cutting 1 to 150
	// bytes off its end, or flipping a bit 3 bytes before it; the messages
	// are over 200 bytes of incompressible body), and checks recovery.
	DataFiles func(dir string) ([]string, error)
	// RetentionConfig is a config section under which retention removes
	// old messages soon (by size, count or age): after 300 messages of
	// 1KiB are appended to a queue, some of the oldest must be gone within
	// 10 seconds (the suite polls) while the newest 5 stay. nil skips the
	// retention case.
	RetentionConfig []byte
}

// TestStorage runs the storage conformance cases against the stores newStore
// returns (unconfigured; the suite configures them). Every case runs on the
// store itself ("direct") and through the plugin boundary, on gRPC ("grpc")
// and on the shared-memory data plane ("ring").
func TestStorage(t *testing.T, newStore func(t *testing.T, dir string) sdk.Storage, f StorageFeatures) {
	for _, mode := range []string{"direct", "grpc", "ring"} {
		t.Run(mode, func(t *testing.T) {
			for _, c := range storageCases {
				t.Run(c.name, func(t *testing.T) {
					if c.needs != nil {
						if why := c.needs(f); why != "" {
							t.Skip(why)
						}
					}
					c.run(t, &storageEnv{newStore: newStore, f: f, mode: mode, dir: t.TempDir()})
				})
			}
		})
	}
}

var storageCases = []struct {
	name  string
	needs func(StorageFeatures) string
	run   func(t *testing.T, e *storageEnv)
}{
	{"AppendAndRead", nil, testAppendAndRead},
	{"OffsetsPerQueueAreDenseFromZero", nil, testOffsetsPerQueue},
	{"ReadRanges", nil, testReadRanges},
	{"GroupOffsets", nil, testGroupOffsets},
	{"UnknownQueue", nil, testUnknownQueue},
	{"Dedup", nil, testDedup},
	{"DedupWindow", nil, testDedupWindow},
	{"ConcurrentAppenders", nil, testConcurrentAppenders},
	{"EarlyOffsets", nil, testEarlyOffsets},
	{"InvalidArguments", nil, testInvalidArguments},
	{"BadConfig", nil, testBadConfig},
	{"NotConfigured", nil, testNotConfigured},
	{"Durability", needDurable, testDurability},
	{"DedupAcrossReopen", needDurable, testDedupAcrossReopen},
	{"TornTail", needDataFiles, testTornTail},
	{"BitFlipInLastRecord", needDataFiles, testBitFlip},
	{"Retention", needRetention, testRetention},
}

func needDurable(f StorageFeatures) string {
	if !f.Durable {
		return "not durable"
	}
	return ""
}

func needDataFiles(f StorageFeatures) string {
	if !f.Durable || f.DataFiles == nil {
		return "not durable or no DataFiles"
	}
	return ""
}

func needRetention(f StorageFeatures) string {
	if f.RetentionConfig == nil {
		return "no RetentionConfig"
	}
	return ""
}

// storageEnv opens stores for one case, directly or over gRPC.
type storageEnv struct {
	newStore func(t *testing.T, dir string) sdk.Storage
	f        StorageFeatures
	mode     string // direct, grpc, ring
	dir      string
}

// openedStore is a store as the case talks to it (Storage), with what is
// needed to shut it down.
type openedStore struct {
	sdk.Storage
	impl   sdk.Storage
	stop   func()
	once   sync.Once
	closed error
}

// shutdown ends the connection (over gRPC) and closes the store.
func (o *openedStore) shutdown() error {
	o.once.Do(func() {
		if o.stop != nil {
			o.stop()
		}
		o.closed = o.impl.Close()
	})
	return o.closed
}

// raw returns a store that is not configured yet.
func (e *storageEnv) raw(t *testing.T) *openedStore {
	t.Helper()
	impl := e.newStore(t, e.dir)
	o := &openedStore{Storage: impl, impl: impl}
	switch e.mode {
	case "grpc":
		o.Storage, o.stop = ServeStorage(t, impl)
	case "ring":
		o.Storage, o.stop = ServeStorageRing(t, impl)
	}
	t.Cleanup(func() { _ = o.shutdown() })
	return o
}

// open returns a configured store with the features' config.
func (e *storageEnv) open(t *testing.T) *openedStore {
	t.Helper()
	return e.openWith(t, e.f.Config)
}

func (e *storageEnv) openWith(t *testing.T, config []byte) *openedStore {
	t.Helper()
	o := e.raw(t)
	if err := o.Configure(ctxT(t), config, e.environment()); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	if c, ok := o.Storage.(*sdk.StorageClient); ok && e.mode == "ring" && c.DataPlane() != sdk.DataPlaneRing {
		t.Fatalf("the plugin did not take the ring data plane (got %s)", c.DataPlane())
	}
	return o
}

// reopen closes o and opens a new store on the same directory.
func (e *storageEnv) reopen(t *testing.T, o *openedStore) *openedStore {
	t.Helper()
	if err := o.shutdown(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return e.open(t)
}

func (e *storageEnv) environment() *sdk.Environment {
	return &sdk.Environment{Pipeline: "sdktest", Node: "sdktest", DataDir: e.dir}
}

// ctxT is the deadline for one call: generous, so that a slow CI machine does
// not fail a case, short enough that a hang fails it.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// msg makes a message whose every field is derived from its id, so that a read
// can be checked against it.
func msg(topic string, queue int32, id string) *sdk.Message {
	return &sdk.Message{
		Id:           id,
		Topic:        topic,
		Queue:        queue,
		Key:          "key-" + id,
		Headers:      map[string]string{"traceparent": "00-" + id, "x-id": id},
		Body:         []byte("body of " + id),
		BornUnixNano: 1_700_000_000_000_000_000 + int64(len(id)),
	}
}

// noiseMsg is msg with a body of n bytes that do not compress, so that a
// store's record for it is at least n bytes long.
func noiseMsg(topic string, queue int32, id string, n int) *sdk.Message {
	m := msg(topic, queue, id)
	m.Body = make([]byte, n)
	x := uint32(2166136261)
	for _, c := range []byte(id) {
		x = (x ^ uint32(c)) * 16777619
	}
	x |= 1
	for i := range m.Body {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		m.Body[i] = byte(x)
	}
	return m
}

// bigMsg is msg with a body of n bytes.
func bigMsg(topic string, queue int32, id string, n int) *sdk.Message {
	m := msg(topic, queue, id)
	m.Body = bytes.Repeat([]byte(id+"."), n/(len(id)+1)+1)[:n]
	return m
}

func appendMsgs(ctx context.Context, s sdk.Storage, msgs ...*sdk.Message) ([]int64, error) {
	wait, err := s.Append(ctx, msgs)
	if err != nil {
		return nil, err
	}
	return wait(ctx)
}

func mustAppend(t *testing.T, s sdk.Storage, msgs ...*sdk.Message) []int64 {
	t.Helper()
	offs, err := appendMsgs(ctxT(t), s, msgs...)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if len(offs) != len(msgs) {
		t.Fatalf("Append returned %d offsets for %d messages", len(offs), len(msgs))
	}
	return offs
}

func mustRead(t *testing.T, s sdk.Storage, topic string, queue int32, offset int64, maxMsgs int32, maxBytes int64) *sdk.ReadResponse {
	t.Helper()
	resp, err := s.Read(ctxT(t), &sdk.ReadRequest{Topic: topic, Queue: queue, Offset: offset, MaxMessages: maxMsgs, MaxBytes: maxBytes})
	if err != nil {
		t.Fatalf("Read %s/%d@%d: %v", topic, queue, offset, err)
	}
	return resp
}

// readAll reads a queue from offset to its end.
func readAll(t *testing.T, s sdk.Storage, topic string, queue int32, offset int64) []*sdk.Message {
	t.Helper()
	var out []*sdk.Message
	for i := 0; ; i++ {
		resp := mustRead(t, s, topic, queue, offset, 100, 1<<20)
		if len(resp.Messages) == 0 {
			return out
		}
		if i > 100000 {
			t.Fatal("readAll: no end")
		}
		out = append(out, resp.Messages...)
		offset = resp.Messages[len(resp.Messages)-1].Offset + 1
	}
}

func mustOffsets(t *testing.T, s sdk.Storage, group string, topic string, queue int32) *sdk.QueueOffsets {
	t.Helper()
	offs, err := s.GetOffsets(ctxT(t), group, []*sdk.QueueRef{{Topic: topic, Queue: queue}})
	if err != nil {
		t.Fatalf("GetOffsets: %v", err)
	}
	if len(offs) != 1 {
		t.Fatalf("GetOffsets returned %d answers for 1 queue", len(offs))
	}
	return offs[0]
}

// sameMessage reports how got differs from the message that was appended.
func sameMessage(got, want *sdk.Message, offset int64) error {
	switch {
	case got.Id != want.Id:
		return fmt.Errorf("id %q, want %q", got.Id, want.Id)
	case got.Topic != want.Topic || got.Queue != want.Queue:
		return fmt.Errorf("queue %s/%d, want %s/%d", got.Topic, got.Queue, want.Topic, want.Queue)
	case got.Offset != offset:
		return fmt.Errorf("message %q has offset %d, want %d", got.Id, got.Offset, offset)
	case got.Key != want.Key:
		return fmt.Errorf("message %q key %q, want %q", got.Id, got.Key, want.Key)
	case !bytes.Equal(got.Body, want.Body):
		return fmt.Errorf("message %q body differs (%d bytes, want %d)", got.Id, len(got.Body), len(want.Body))
	case !maps.Equal(got.Headers, want.Headers):
		return fmt.Errorf("message %q headers %v, want %v", got.Id, got.Headers, want.Headers)
	case got.BornUnixNano != want.BornUnixNano:
		return fmt.Errorf("message %q born %d, want %d", got.Id, got.BornUnixNano, want.BornUnixNano)
	case got.StoredUnixNano <= 0:
		return fmt.Errorf("message %q has no stored time", got.Id)
	}
	return nil
}

func checkMessages(t *testing.T, got []*sdk.Message, want []*sdk.Message, firstOffset int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if err := sameMessage(got[i], want[i], firstOffset+int64(i)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}

func msgs(topic string, queue int32, idList []string) []*sdk.Message {
	out := make([]*sdk.Message, len(idList))
	for i, id := range idList {
		out[i] = msg(topic, queue, id)
	}
	return out
}

// Appended messages come back from a read with every field, in order, with
// dense offsets from 0, and the read reports the queue's offsets.
func testAppendAndRead(t *testing.T, e *storageEnv) {
	s := e.open(t)
	want := msgs("orders", 0, ids("m", 10))
	offs := mustAppend(t, s, want...)
	for i, o := range offs {
		if o != int64(i) {
			t.Fatalf("offsets %v, want 0..9", offs)
		}
	}
	resp := mustRead(t, s, "orders", 0, 0, 100, 1<<20)
	checkMessages(t, resp.Messages, want, 0)
	if o := resp.Offsets; o == nil || o.Start != 0 || o.End != 10 {
		t.Fatalf("read reports offsets %v, want start 0 end 10", o)
	}
	// A second batch continues the queue.
	more := msgs("orders", 0, ids("n", 3))
	offs = mustAppend(t, s, more...)
	if offs[0] != 10 || offs[2] != 12 {
		t.Fatalf("second batch got offsets %v, want 10..12", offs)
	}
	checkMessages(t, readAll(t, s, "orders", 0, 0), append(want, more...), 0)
}

// Each queue has its own offsets, from 0, dense, also when one batch mixes
// queues and topics.
func testOffsetsPerQueue(t *testing.T, e *storageEnv) {
	s := e.open(t)
	type q struct {
		topic string
		queue int32
	}
	layout := []q{{"a", 0}, {"a", 1}, {"b", 0}, {"a", 0}, {"a", 1}, {"b", 0}, {"a", 0}, {"b", 3}}
	want := map[q][]*sdk.Message{}
	for round := range 3 {
		var batch []*sdk.Message
		for i, l := range layout {
			m := msg(l.topic, l.queue, fmt.Sprintf("r%d-%d", round, i))
			batch = append(batch, m)
		}
		offs := mustAppend(t, s, batch...)
		for i, m := range batch {
			k := q{m.Topic, m.Queue}
			if offs[i] != int64(len(want[k])) {
				t.Fatalf("round %d: message %d on %s/%d got offset %d, want %d", round, i, m.Topic, m.Queue, offs[i], len(want[k]))
			}
			want[k] = append(want[k], m)
		}
	}
	for k, w := range want {
		checkMessages(t, readAll(t, s, k.topic, k.queue, 0), w, 0)
		if o := mustOffsets(t, s, "", k.topic, k.queue); o.Start != 0 || o.End != int64(len(w)) {
			t.Fatalf("GetOffsets %s/%d = %d..%d, want 0..%d", k.topic, k.queue, o.Start, o.End, len(w))
		}
	}
}

// Reads from the middle, at and past the end, and bounded by max_messages
// and max_bytes (which never starve: at least one message comes back).
func testReadRanges(t *testing.T, e *storageEnv) {
	s := e.open(t)
	var want []*sdk.Message
	for i := range 20 {
		want = append(want, bigMsg("t", 0, fmt.Sprintf("m%02d", i), 1024))
	}
	mustAppend(t, s, want[:10]...)
	mustAppend(t, s, want[10:]...)

	resp := mustRead(t, s, "t", 0, 5, 3, 1<<20)
	checkMessages(t, resp.Messages, want[5:8], 5)

	resp = mustRead(t, s, "t", 0, 17, 100, 1<<20)
	checkMessages(t, resp.Messages, want[17:], 17)

	for _, off := range []int64{20, 21, 1000} {
		resp = mustRead(t, s, "t", 0, off, 100, 1<<20)
		if len(resp.Messages) != 0 {
			t.Fatalf("read at %d (end is 20) returned %d messages", off, len(resp.Messages))
		}
		if resp.Offsets == nil || resp.Offsets.End != 20 {
			t.Fatalf("read at %d reports offsets %v, want end 20", off, resp.Offsets)
		}
	}

	resp = mustRead(t, s, "t", 0, 3, 100, 1)
	checkMessages(t, resp.Messages, want[3:4], 3)

	resp = mustRead(t, s, "t", 0, 0, 100, 3*1024)
	if n := len(resp.Messages); n < 1 || n > 4 {
		t.Fatalf("read with max_bytes 3KiB of 1KiB messages returned %d messages, want 1..4", n)
	}
	checkMessages(t, resp.Messages, want[:len(resp.Messages)], 0)

	resp = mustRead(t, s, "t", 0, 0, 1, 1<<20)
	checkMessages(t, resp.Messages, want[:1], 0)
}

// Committed group offsets: -1 until a commit, then the last value committed,
// per group and per queue.
func testGroupOffsets(t *testing.T, e *storageEnv) {
	s := e.open(t)
	mustAppend(t, s, msgs("t", 0, ids("m", 5))...)
	if o := mustOffsets(t, s, "g1", "t", 0); o.Committed != -1 || o.Start != 0 || o.End != 5 {
		t.Fatalf("before any commit: %v, want start 0 end 5 committed -1", o)
	}
	ctx := ctxT(t)
	if err := s.CommitOffsets(ctx, "g1", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 3}, {Topic: "t", Queue: 1, Offset: 7}}); err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	if o := mustOffsets(t, s, "g1", "t", 0); o.Committed != 3 {
		t.Fatalf("g1 t/0 committed %d, want 3", o.Committed)
	}
	if o := mustOffsets(t, s, "g1", "t", 1); o.Committed != 7 {
		t.Fatalf("g1 t/1 committed %d, want 7", o.Committed)
	}
	if o := mustOffsets(t, s, "g2", "t", 0); o.Committed != -1 {
		t.Fatalf("g2 never committed but reads %d", o.Committed)
	}
	if o := mustOffsets(t, s, "", "t", 0); o.Committed != -1 {
		t.Fatalf("empty group reads committed %d, want -1", o.Committed)
	}
	// A later commit replaces the offset, also when it goes back.
	if err := s.CommitOffsets(ctx, "g1", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 1}}); err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	if o := mustOffsets(t, s, "g1", "t", 0); o.Committed != 1 {
		t.Fatalf("after rewinding to 1, committed reads %d", o.Committed)
	}
	// Several queues in one call come back in request order.
	got, err := s.GetOffsets(ctx, "g1", []*sdk.QueueRef{{Topic: "t", Queue: 1}, {Topic: "t", Queue: 0}, {Topic: "nope", Queue: 0}})
	if err != nil {
		t.Fatalf("GetOffsets: %v", err)
	}
	if len(got) != 3 || got[0].Committed != 7 || got[1].Committed != 1 || got[2].Committed != -1 || got[1].End != 5 {
		t.Fatalf("GetOffsets of three queues = %v", got)
	}
}

// A queue nobody appended to has start = end = 0 and reads empty.
func testUnknownQueue(t *testing.T, e *storageEnv) {
	s := e.open(t)
	mustAppend(t, s, msg("known", 0, "x"))
	for _, r := range []struct {
		topic string
		queue int32
	}{{"unknown", 0}, {"known", 1}} {
		o := mustOffsets(t, s, "g", r.topic, r.queue)
		if o.Start != 0 || o.End != 0 || o.Committed != -1 || o.Topic != r.topic || o.Queue != r.queue {
			t.Fatalf("GetOffsets of unknown queue %s/%d = %v, want 0/0/-1", r.topic, r.queue, o)
		}
		resp := mustRead(t, s, r.topic, r.queue, 0, 10, 1<<20)
		if len(resp.Messages) != 0 {
			t.Fatalf("read of unknown queue returned %d messages", len(resp.Messages))
		}
	}
}

// Re-appending ids the store holds (the broker's retry after a plugin crash)
// returns the original offsets and stores nothing new.
func testDedup(t *testing.T, e *storageEnv) {
	s := e.open(t)
	first := msgs("t", 0, []string{"a", "b", "c"})
	mustAppend(t, s, first...)
	offs := mustAppend(t, s, msg("t", 0, "b"), msg("t", 0, "c"), msg("t", 0, "d"))
	if fmt.Sprint(offs) != "[1 2 3]" {
		t.Fatalf("retry of b, c plus new d got offsets %v, want [1 2 3]", offs)
	}
	// Within one batch too.
	offs = mustAppend(t, s, msg("t", 0, "e"), msg("t", 0, "e"), msg("t", 0, "a"))
	if fmt.Sprint(offs) != "[4 4 0]" {
		t.Fatalf("batch e, e, a got offsets %v, want [4 4 0]", offs)
	}
	// The same id on another queue is another message.
	if offs := mustAppend(t, s, msg("t", 1, "a")); offs[0] != 0 {
		t.Fatalf("id a on queue 1 got offset %d, want 0", offs[0])
	}
	want := append(first, msg("t", 0, "d"), msg("t", 0, "e"))
	checkMessages(t, readAll(t, s, "t", 0, 0), want, 0)
	if o := mustOffsets(t, s, "", "t", 0); o.End != 5 {
		t.Fatalf("end %d after duplicates, want 5", o.End)
	}
}

// The de-dup window holds at least sdk.DedupWindow ids per queue.
func testDedupWindow(t *testing.T, e *storageEnv) {
	s := e.open(t)
	all := ids("w", sdk.DedupWindow)
	for i := 0; i < len(all); i += 1000 {
		var batch []*sdk.Message
		for _, id := range all[i:min(i+1000, len(all))] {
			batch = append(batch, &sdk.Message{Id: id, Topic: "t", Body: []byte("x")})
		}
		mustAppend(t, s, batch...)
	}
	offs := mustAppend(t, s, &sdk.Message{Id: all[0], Topic: "t", Body: []byte("x")}, &sdk.Message{Id: all[len(all)-1], Topic: "t", Body: []byte("x")})
	if offs[0] != 0 || offs[1] != int64(len(all)-1) {
		t.Fatalf("retry of the oldest and newest of %d ids got offsets %v, want [0 %d]", len(all), offs, len(all)-1)
	}
	if o := mustOffsets(t, s, "", "t", 0); o.End != int64(len(all)) {
		t.Fatalf("end %d after retries, want %d", o.End, len(all))
	}
}

// Many producers at once, as the broker drives a store: one goroutine calls
// Append in order, every producer waits for its own batch concurrently. Every
// message gets a unique offset, queues stay dense, every message reads back.
func testConcurrentAppenders(t *testing.T, e *storageEnv) {
	s := e.open(t)
	const producers, perProducer, queues = 8, 40, 3
	type req struct {
		msgs  []*sdk.Message
		reply chan sdk.AppendWait
		err   chan error
	}
	reqs := make(chan req)
	appenderDone := make(chan struct{})
	go func() {
		defer close(appenderDone)
		for r := range reqs {
			w, err := s.Append(context.Background(), r.msgs)
			if err != nil {
				r.err <- err
				continue
			}
			r.reply <- w
		}
	}()
	var mu sync.Mutex
	byOffset := map[[2]int64]*sdk.Message{} // {queue, offset}
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perProducer; i += 2 {
				batch := []*sdk.Message{
					msg("conc", int32((p+i)%queues), fmt.Sprintf("p%d-%d", p, i)),
					msg("conc", int32((p+i+1)%queues), fmt.Sprintf("p%d-%d", p, i+1)),
				}
				r := req{batch, make(chan sdk.AppendWait, 1), make(chan error, 1)}
				reqs <- r
				var w sdk.AppendWait
				select {
				case w = <-r.reply:
				case err := <-r.err:
					errs <- err
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				offs, err := w(ctx)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for j, m := range batch {
					k := [2]int64{int64(m.Queue), offs[j]}
					if prev := byOffset[k]; prev != nil {
						mu.Unlock()
						errs <- fmt.Errorf("%s and %s both got queue %d offset %d", prev.Id, m.Id, m.Queue, offs[j])
						return
					}
					byOffset[k] = m
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(reqs)
	<-appenderDone
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 0
	for q := range int32(queues) {
		got := readAll(t, s, "conc", q, 0)
		for i, m := range got {
			want := byOffset[[2]int64{int64(q), int64(i)}]
			if want == nil {
				t.Fatalf("queue %d offset %d holds %s, which no producer was told", q, i, m.Id)
			}
			if err := sameMessage(m, want, int64(i)); err != nil {
				t.Fatalf("queue %d: %v", q, err)
			}
		}
		total += len(got)
	}
	if total != producers*perProducer {
		t.Fatalf("read %d messages, %d were appended", total, producers*perProducer)
	}
}

func wantErr(t *testing.T, what string, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s: got error %v, want one matching %q", what, err, sentinel)
	}
}

// Malformed requests fail with sdk.ErrInvalidArgument (also across the process
// boundary), and a batch with one bad message stores nothing.
func testInvalidArguments(t *testing.T, e *storageEnv) {
	s := e.open(t)
	ctx := ctxT(t)
	_, err := appendMsgs(ctx, s, msg("", 0, "a"))
	wantErr(t, "append with empty topic", err, sdk.ErrInvalidArgument)
	_, err = appendMsgs(ctx, s, msg("t", 0, "ok"), msg("t", -1, "b"))
	wantErr(t, "append with negative queue", err, sdk.ErrInvalidArgument)
	if o := mustOffsets(t, s, "", "t", 0); o.End != 0 {
		t.Fatalf("a rejected batch stored %d messages", o.End)
	}
	_, err = s.Read(ctx, &sdk.ReadRequest{Topic: "", Queue: 0, MaxMessages: 1})
	wantErr(t, "read with empty topic", err, sdk.ErrInvalidArgument)
	_, err = s.Read(ctx, &sdk.ReadRequest{Topic: "t", Queue: -2, MaxMessages: 1})
	wantErr(t, "read with negative queue", err, sdk.ErrInvalidArgument)
	err = s.CommitOffsets(ctx, "g", []*sdk.GroupOffset{{Topic: "", Queue: 0, Offset: 1}})
	wantErr(t, "commit with empty topic", err, sdk.ErrInvalidArgument)
	err = s.CommitOffsets(ctx, "", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 1}})
	wantErr(t, "commit with empty group", err, sdk.ErrInvalidArgument)
	// The store still works.
	if offs := mustAppend(t, s, msg("t", 0, "ok")); offs[0] != 0 {
		t.Fatalf("first good append got offset %d, want 0", offs[0])
	}
}

// Unknown config keys are problems with their key; Configure with them fails
// with sdk.ErrConfig.
func testBadConfig(t *testing.T, e *storageEnv) {
	s := e.raw(t)
	bad := []byte(`{"no_such_key_sdktest": 1}`)
	ps := s.Validate(bad)
	if !slices.ContainsFunc(ps, func(p sdk.Problem) bool { return p.Path == "no_such_key_sdktest" }) {
		t.Fatalf("Validate(%s) = %v, want a problem at no_such_key_sdktest", bad, ps)
	}
	if ps := s.Validate(e.f.Config); len(ps) != 0 {
		t.Fatalf("Validate of the features' config: %v", ps)
	}
	err := s.Configure(ctxT(t), bad, e.environment())
	wantErr(t, "Configure with an unknown key", err, sdk.ErrConfig)
}

// Calls before Configure fail with sdk.ErrNotConfigured.
func testNotConfigured(t *testing.T, e *storageEnv) {
	s := e.raw(t)
	ctx := ctxT(t)
	_, err := appendMsgs(ctx, s, msg("t", 0, "a"))
	wantErr(t, "append before Configure", err, sdk.ErrNotConfigured)
	_, err = s.Read(ctx, &sdk.ReadRequest{Topic: "t", MaxMessages: 1})
	wantErr(t, "read before Configure", err, sdk.ErrNotConfigured)
}

// What was acknowledged, and committed offsets, are there after a restart, and
// offsets go on from where they were.
func testDurability(t *testing.T, e *storageEnv) {
	s := e.open(t)
	var a0, a1, b0 []*sdk.Message
	for i := range 50 {
		batch := []*sdk.Message{bigMsg("a", 0, fmt.Sprintf("a0-%d", i), 100*(i%20)), msg("a", 1, fmt.Sprintf("a1-%d", i)), msg("b", 0, fmt.Sprintf("b0-%d", i))}
		mustAppend(t, s, batch...)
		a0, a1, b0 = append(a0, batch[0]), append(a1, batch[1]), append(b0, batch[2])
	}
	if err := s.CommitOffsets(ctxT(t), "g", []*sdk.GroupOffset{{Topic: "a", Queue: 0, Offset: 17}}); err != nil {
		t.Fatalf("CommitOffsets: %v", err)
	}
	for round := range 2 {
		s = e.reopen(t, s)
		checkMessages(t, readAll(t, s, "a", 0, 0), a0, 0)
		checkMessages(t, readAll(t, s, "a", 1, 0), a1, 0)
		checkMessages(t, readAll(t, s, "b", 0, 0), b0, 0)
		if o := mustOffsets(t, s, "g", "a", 0); o.Committed != 17 || o.End != int64(len(a0)) {
			t.Fatalf("after reopen %d: a/0 offsets %v, want end %d committed 17", round, o, len(a0))
		}
		m := msg("a", 0, fmt.Sprintf("after-%d", round))
		if offs := mustAppend(t, s, m); offs[0] != int64(len(a0)) {
			t.Fatalf("after reopen %d: next append got offset %d, want %d", round, offs[0], len(a0))
		}
		a0 = append(a0, m)
	}
}

// The de-dup window survives a restart: the broker's retry after a plugin
// crash lands on a new process.
func testDedupAcrossReopen(t *testing.T, e *storageEnv) {
	s := e.open(t)
	first := msgs("t", 0, ids("d", 20))
	mustAppend(t, s, first...)
	s = e.reopen(t, s)
	offs := mustAppend(t, s, msg("t", 0, "d-00019"), msg("t", 0, "d-00003"), msg("t", 0, "new"))
	if fmt.Sprint(offs) != "[19 3 20]" {
		t.Fatalf("retry after reopen got offsets %v, want [19 3 20]", offs)
	}
	checkMessages(t, readAll(t, s, "t", 0, 0), append(first, msg("t", 0, "new")), 0)
}

// newestFile returns the newest data file and its contents.
func (e *storageEnv) newestFile(t *testing.T) (string, []byte) {
	t.Helper()
	files, err := e.f.DataFiles(e.dir)
	if err != nil || len(files) == 0 {
		t.Fatalf("DataFiles(%s) = %v, %v", e.dir, files, err)
	}
	path := files[len(files)-1]
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// damageCase appends n messages, closes the store, lets damage change the
// newest data file, reopens and returns the store and what was appended.
func damageCase(t *testing.T, e *storageEnv, n int, damage func(path string, data []byte) error) (*openedStore, []*sdk.Message) {
	s := e.open(t)
	var want []*sdk.Message
	for i := range n {
		m := noiseMsg("t", 0, fmt.Sprintf("m%03d", i), 200+i)
		mustAppend(t, s, m)
		want = append(want, m)
	}
	if err := s.shutdown(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	path, data := e.newestFile(t)
	if err := damage(path, data); err != nil {
		t.Fatal(err)
	}
	return e.open(t), want
}

// A torn tail (the newest file cut short, as a crash mid-write leaves it):
// everything before the torn record is readable and intact, nothing partial is
// delivered, and appends go on from the last good offset.
func testTornTail(t *testing.T, e *storageEnv) {
	for _, cut := range []int{1, 7, 150} {
		t.Run(fmt.Sprintf("cut%d", cut), func(t *testing.T) {
			e := &storageEnv{newStore: e.newStore, f: e.f, mode: e.mode, dir: t.TempDir()}
			s, want := damageCase(t, e, 12, func(path string, data []byte) error {
				return os.Truncate(path, int64(len(data)-cut))
			})
			got := readAll(t, s, "t", 0, 0)
			if len(got) != len(want)-1 {
				t.Fatalf("after cutting %d bytes off the newest file: read %d messages, want %d (all but the torn one)", cut, len(got), len(want)-1)
			}
			checkMessages(t, got, want[:len(got)], 0)
			if o := mustOffsets(t, s, "", "t", 0); o.End != int64(len(got)) {
				t.Fatalf("end %d, want %d", o.End, len(got))
			}
			// The torn message is gone, also from the de-dup window:
			// the broker's retry stores it again.
			last := want[len(want)-1]
			if offs := mustAppend(t, s, last); offs[0] != int64(len(got)) {
				t.Fatalf("retry of the torn message got offset %d, want %d", offs[0], len(got))
			}
			checkMessages(t, readAll(t, s, "t", 0, 0), want, 0)
		})
	}
}

// A bit flipped in the last record (the disk or a torn sector): that record is
// dropped, the ones before are intact, and no error is delivered as data.
func testBitFlip(t *testing.T, e *storageEnv) {
	s, want := damageCase(t, e, 12, func(path string, data []byte) error {
		data[len(data)-3] ^= 0x10
		return os.WriteFile(path, data, 0o644)
	})
	got := readAll(t, s, "t", 0, 0)
	if len(got) != len(want)-1 {
		t.Fatalf("after a bit flip in the last record: read %d messages, want %d", len(got), len(want)-1)
	}
	checkMessages(t, got, want[:len(got)], 0)
	m := msg("t", 0, "after")
	if offs := mustAppend(t, s, m); offs[0] != int64(len(got)) {
		t.Fatalf("next append got offset %d, want %d", offs[0], len(got))
	}
	checkMessages(t, readAll(t, s, "t", 0, int64(len(got))), []*sdk.Message{m}, int64(len(got)))
}

// Retention removes the oldest messages: the queue's start moves up, its end
// does not move, a read from below the start is answered from the start, and
// the newest messages are intact.
func testRetention(t *testing.T, e *storageEnv) {
	s := e.openWith(t, e.f.RetentionConfig)
	const n = 300
	var want []*sdk.Message
	for i := 0; i < n; i += 10 {
		var batch []*sdk.Message
		for j := range 10 {
			batch = append(batch, bigMsg("t", 0, fmt.Sprintf("r%03d", i+j), 1024))
		}
		mustAppend(t, s, batch...)
		want = append(want, batch...)
	}
	deadline := time.Now().Add(10 * time.Second)
	var o *sdk.QueueOffsets
	for {
		o = mustOffsets(t, s, "", "t", 0)
		if o.Start > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o.Start == 0 || o.Start >= n || o.End != n {
		t.Fatalf("after appending %d KiB-messages under retention: offsets %d..%d, want start in (0, %d) and end %d", n, o.Start, o.End, n, n)
	}
	resp := mustRead(t, s, "t", 0, 0, 5, 1<<20)
	if len(resp.Messages) == 0 || resp.Messages[0].Offset < o.Start {
		t.Fatalf("read from 0 below start %d returned %d messages starting at %v", o.Start, len(resp.Messages), resp.Messages)
	}
	first := resp.Messages[0].Offset
	checkMessages(t, resp.Messages, want[first:first+int64(len(resp.Messages))], first)
	checkMessages(t, readAll(t, s, "t", 0, n-5), want[n-5:], n-5)
}
