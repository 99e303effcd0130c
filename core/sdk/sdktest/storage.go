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
	// configured with an Environment whose DataDir is the case's directory
	// (a fresh directory per case, the same one on reopen).
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

// Store is a store as a case talks to it, with what shuts it down.
type Store struct {
	sdk.Storage
	shutdown func() error
	once     sync.Once
	closed   error
}

// NewStore returns the Store of s; shutdown ends it (closes the store, or
// stops its plugin process). A harness makes Stores.
func NewStore(s sdk.Storage, shutdown func() error) *Store {
	return &Store{Storage: s, shutdown: shutdown}
}

// Shutdown ends the store once; later calls return the first result.
func (s *Store) Shutdown() error {
	s.once.Do(func() { s.closed = s.shutdown() })
	return s.closed
}

// StorageHarness starts the stores of one storage case, all on the case's
// directory. A harness shuts down every store it started when the case ends.
type StorageHarness interface {
	// Features are the implementation's features.
	Features() StorageFeatures
	// Dir is the case's data directory (the Environment's DataDir).
	Dir() string
	// Open starts a store configured with config (nil: no section).
	Open(config []byte) (*Store, error)
	// Raw starts a store that is not configured (a Skip when the harness
	// cannot: the plugin host configures every plugin it starts).
	Raw() (*Store, error)
	// Validate asks an unconfigured store to check config.
	Validate(config []byte) (sdk.Problems, error)
	// Fresh returns a harness like this one on a new, empty directory.
	Fresh() (StorageHarness, error)
}

// StorageCase is one storage conformance case.
type StorageCase struct {
	Name string
	// Needs says why the case does not apply to features ("" when it does).
	Needs func(StorageFeatures) string
	Run   func(h StorageHarness) error
}

// StorageCases returns the storage conformance cases, in the order they run.
func StorageCases() []StorageCase {
	return []StorageCase{
		{"AppendAndRead", nil, testAppendAndRead},
		{"OffsetsPerQueueAreDenseFromZero", nil, testOffsetsPerQueue},
		{"ReadRanges", nil, testReadRanges},
		{"GroupOffsets", nil, testGroupOffsets},
		{"UnknownQueue", nil, testUnknownQueue},
		{"Dedup", nil, testDedup},
		{"DedupWindow", nil, testDedupWindow},
		{"ConcurrentAppenders", nil, testConcurrentAppenders},
		{"EarlyOffsets", nil, testEarlyOffsets},
		{"GroupStore", nil, testGroupStore},
		{"TopicDeleter", nil, testTopicDeleter},
		{"TimeSeeker", nil, testTimeSeeker},
		{"QueueSizer", nil, testQueueSizer},
		{"InvalidArguments", nil, testInvalidArguments},
		{"BadConfig", nil, testBadConfig},
		{"NotConfigured", nil, testNotConfigured},
		{"Durability", needDurable, testDurability},
		{"DedupAcrossReopen", needDurable, testDedupAcrossReopen},
		{"TornTail", needDataFiles, testTornTail},
		{"BitFlipInLastRecord", needDataFiles, testBitFlip},
		{"Retention", needRetention, testRetention},
	}
}

// RunStorageCase runs c on h: the Skip of Needs, or what c.Run returns.
func RunStorageCase(c StorageCase, h StorageHarness) error {
	if c.Needs != nil {
		if why := c.Needs(h.Features()); why != "" {
			return Skip("%s", why)
		}
	}
	return c.Run(h)
}

// TestStorage runs the storage conformance cases against the stores newStore
// returns (unconfigured; the suite configures them). Every case runs on the
// store itself ("direct") and through the plugin boundary, on gRPC ("grpc")
// and on the shared-memory data plane ("ring").
func TestStorage(t *testing.T, newStore func(t *testing.T, dir string) sdk.Storage, f StorageFeatures) {
	for _, mode := range []string{"direct", "grpc", "ring"} {
		t.Run(mode, func(t *testing.T) {
			for _, c := range StorageCases() {
				t.Run(c.Name, func(t *testing.T) {
					h := &goStorageHarness{t: t, newStore: newStore, f: f, mode: mode, dir: t.TempDir()}
					err := RunStorageCase(c, h)
					if why, ok := Skipped(err); ok {
						t.Skip(why)
					}
					if err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
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

// goStorageHarness runs a case in a Go test on stores newStore makes, called
// directly or served over the plugin boundary in-process.
type goStorageHarness struct {
	t        *testing.T
	newStore func(t *testing.T, dir string) sdk.Storage
	f        StorageFeatures
	mode     string // direct, grpc, ring
	dir      string
}

func (h *goStorageHarness) Features() StorageFeatures { return h.f }
func (h *goStorageHarness) Dir() string               { return h.dir }

func (h *goStorageHarness) Fresh() (StorageHarness, error) {
	return &goStorageHarness{t: h.t, newStore: h.newStore, f: h.f, mode: h.mode, dir: h.t.TempDir()}, nil
}

func (h *goStorageHarness) Raw() (*Store, error) {
	impl := h.newStore(h.t, h.dir)
	s := impl
	var stop func()
	switch h.mode {
	case "grpc":
		s, stop = ServeStorage(h.t, impl)
	case "ring":
		s, stop = ServeStorageRing(h.t, impl)
	}
	st := NewStore(s, func() error {
		if stop != nil {
			stop()
		}
		return impl.Close()
	})
	h.t.Cleanup(func() { _ = st.Shutdown() })
	return st, nil
}

func (h *goStorageHarness) Open(config []byte) (*Store, error) {
	s, err := h.Raw()
	if err != nil {
		return nil, err
	}
	if err := s.Configure(callCtx(h.t), config, h.environment()); err != nil {
		return nil, fmt.Errorf("Configure: %w", err)
	}
	if c, ok := s.Storage.(*sdk.StorageClient); ok && h.mode == "ring" && c.DataPlane() != sdk.DataPlaneRing {
		return nil, fmt.Errorf("the plugin did not take the ring data plane (got %s)", c.DataPlane())
	}
	return s, nil
}

func (h *goStorageHarness) Validate(config []byte) (sdk.Problems, error) {
	s, err := h.Raw()
	if err != nil {
		return nil, err
	}
	defer s.Shutdown()
	return s.Validate(config), nil
}

func (h *goStorageHarness) environment() *sdk.Environment {
	return &sdk.Environment{Pipeline: "sdktest", Node: "sdktest", DataDir: h.dir}
}

// callCtx is the deadline for one call of a Go test: generous, so that a
// slow CI machine does not fail a case, short enough that a hang fails it.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	t.Cleanup(cancel)
	return ctx
}

// CallTimeout bounds each call a case makes.
const CallTimeout = 20 * time.Second

// ctxT is the deadline for one call of a case.
func ctxT() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), CallTimeout)
}

// open opens a store with the features' config.
func open(h StorageHarness) (*Store, error) { return h.Open(h.Features().Config) }

// reopen shuts s down and opens a new store on the same directory.
func reopen(h StorageHarness, s *Store) (*Store, error) {
	if err := s.Shutdown(); err != nil {
		return nil, fmt.Errorf("Close: %w", err)
	}
	return open(h)
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

// appendAll appends msgs as one batch and checks that every message got an
// offset.
func appendAll(s sdk.Storage, msgs ...*sdk.Message) ([]int64, error) {
	ctx, cancel := ctxT()
	defer cancel()
	offs, err := appendMsgs(ctx, s, msgs...)
	if err != nil {
		return nil, fmt.Errorf("Append: %w", err)
	}
	if len(offs) != len(msgs) {
		return nil, fmt.Errorf("Append returned %d offsets for %d messages", len(offs), len(msgs))
	}
	return offs, nil
}

func read(s sdk.Storage, topic string, queue int32, offset int64, maxMsgs int32, maxBytes int64) (*sdk.ReadResponse, error) {
	ctx, cancel := ctxT()
	defer cancel()
	resp, err := s.Read(ctx, &sdk.ReadRequest{Topic: topic, Queue: queue, Offset: offset, MaxMessages: maxMsgs, MaxBytes: maxBytes})
	if err != nil {
		return nil, fmt.Errorf("Read %s/%d@%d: %w", topic, queue, offset, err)
	}
	return resp, nil
}

// readAll reads a queue from offset to its end.
func readAll(s sdk.Storage, topic string, queue int32, offset int64) ([]*sdk.Message, error) {
	var out []*sdk.Message
	for i := 0; ; i++ {
		resp, err := read(s, topic, queue, offset, 100, 1<<20)
		if err != nil {
			return nil, err
		}
		if len(resp.Messages) == 0 {
			return out, nil
		}
		if i > 100000 {
			return nil, fmt.Errorf("reading %s/%d: no end after %d reads", topic, queue, i)
		}
		out = append(out, resp.Messages...)
		offset = resp.Messages[len(resp.Messages)-1].Offset + 1
	}
}

func offsetsOf(s sdk.Storage, group string, topic string, queue int32) (*sdk.QueueOffsets, error) {
	ctx, cancel := ctxT()
	defer cancel()
	offs, err := s.GetOffsets(ctx, group, []*sdk.QueueRef{{Topic: topic, Queue: queue}})
	if err != nil {
		return nil, fmt.Errorf("GetOffsets: %w", err)
	}
	if len(offs) != 1 {
		return nil, fmt.Errorf("GetOffsets returned %d answers for 1 queue", len(offs))
	}
	return offs[0], nil
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

func checkMessages(got []*sdk.Message, want []*sdk.Message, firstOffset int64) error {
	if len(got) != len(want) {
		return fmt.Errorf("read %d messages, want %d", len(got), len(want))
	}
	for i := range got {
		if err := sameMessage(got[i], want[i], firstOffset+int64(i)); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
	}
	return nil
}

// checkQueue reads topic/queue from offset to its end and checks it holds
// want.
func checkQueue(s sdk.Storage, topic string, queue int32, offset int64, want []*sdk.Message) error {
	got, err := readAll(s, topic, queue, offset)
	if err != nil {
		return err
	}
	if err := checkMessages(got, want, offset); err != nil {
		return fmt.Errorf("queue %s/%d from %d: %w", topic, queue, offset, err)
	}
	return nil
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
func testAppendAndRead(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	want := msgs("orders", 0, ids("m", 10))
	offs, err := appendAll(s, want...)
	if err != nil {
		return err
	}
	for i, o := range offs {
		if o != int64(i) {
			return fmt.Errorf("offsets %v, want 0..9", offs)
		}
	}
	resp, err := read(s, "orders", 0, 0, 100, 1<<20)
	if err != nil {
		return err
	}
	if err := checkMessages(resp.Messages, want, 0); err != nil {
		return err
	}
	if o := resp.Offsets; o == nil || o.Start != 0 || o.End != 10 {
		return fmt.Errorf("read reports offsets %v, want start 0 end 10", o)
	}
	// A second batch continues the queue.
	more := msgs("orders", 0, ids("n", 3))
	if offs, err = appendAll(s, more...); err != nil {
		return err
	}
	if offs[0] != 10 || offs[2] != 12 {
		return fmt.Errorf("second batch got offsets %v, want 10..12", offs)
	}
	return checkQueue(s, "orders", 0, 0, append(want, more...))
}

// Each queue has its own offsets, from 0, dense, also when one batch mixes
// queues and topics.
func testOffsetsPerQueue(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	type q struct {
		topic string
		queue int32
	}
	layout := []q{{"a", 0}, {"a", 1}, {"b", 0}, {"a", 0}, {"a", 1}, {"b", 0}, {"a", 0}, {"b", 3}}
	want := map[q][]*sdk.Message{}
	for round := range 3 {
		var batch []*sdk.Message
		for i, l := range layout {
			batch = append(batch, msg(l.topic, l.queue, fmt.Sprintf("r%d-%d", round, i)))
		}
		offs, err := appendAll(s, batch...)
		if err != nil {
			return err
		}
		for i, m := range batch {
			k := q{m.Topic, m.Queue}
			if offs[i] != int64(len(want[k])) {
				return fmt.Errorf("round %d: message %d on %s/%d got offset %d, want %d", round, i, m.Topic, m.Queue, offs[i], len(want[k]))
			}
			want[k] = append(want[k], m)
		}
	}
	for k, w := range want {
		if err := checkQueue(s, k.topic, k.queue, 0, w); err != nil {
			return err
		}
		o, err := offsetsOf(s, "", k.topic, k.queue)
		if err != nil {
			return err
		}
		if o.Start != 0 || o.End != int64(len(w)) {
			return fmt.Errorf("GetOffsets %s/%d = %d..%d, want 0..%d", k.topic, k.queue, o.Start, o.End, len(w))
		}
	}
	return nil
}

// Reads from the middle, at and past the end, and bounded by max_messages
// and max_bytes (which never starve: at least one message comes back).
func testReadRanges(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	var want []*sdk.Message
	for i := range 20 {
		want = append(want, bigMsg("t", 0, fmt.Sprintf("m%02d", i), 1024))
	}
	if _, err := appendAll(s, want[:10]...); err != nil {
		return err
	}
	if _, err := appendAll(s, want[10:]...); err != nil {
		return err
	}
	expect := func(what string, offset int64, maxMsgs int32, maxBytes int64, check func([]*sdk.Message) error) error {
		resp, err := read(s, "t", 0, offset, maxMsgs, maxBytes)
		if err != nil {
			return err
		}
		if err := check(resp.Messages); err != nil {
			return fmt.Errorf("%s (offset %d, max_messages %d, max_bytes %d): %w", what, offset, maxMsgs, maxBytes, err)
		}
		return nil
	}
	exact := func(from, to int) func([]*sdk.Message) error {
		return func(got []*sdk.Message) error { return checkMessages(got, want[from:to], int64(from)) }
	}
	if err := expect("read from the middle", 5, 3, 1<<20, exact(5, 8)); err != nil {
		return err
	}
	if err := expect("read to the end", 17, 100, 1<<20, exact(17, 20)); err != nil {
		return err
	}
	for _, off := range []int64{20, 21, 1000} {
		resp, err := read(s, "t", 0, off, 100, 1<<20)
		if err != nil {
			return err
		}
		if len(resp.Messages) != 0 {
			return fmt.Errorf("read at %d (end is 20) returned %d messages", off, len(resp.Messages))
		}
		if resp.Offsets == nil || resp.Offsets.End != 20 {
			return fmt.Errorf("read at %d reports offsets %v, want end 20", off, resp.Offsets)
		}
	}
	if err := expect("a read whose max_bytes is below one message returns that message", 3, 100, 1, exact(3, 4)); err != nil {
		return err
	}
	if err := expect("read of 1KiB messages bounded by max_bytes", 0, 100, 3*1024, func(got []*sdk.Message) error {
		if n := len(got); n < 1 || n > 4 {
			return fmt.Errorf("returned %d messages, want 1..4", n)
		}
		return checkMessages(got, want[:len(got)], 0)
	}); err != nil {
		return err
	}
	return expect("read bounded by max_messages", 0, 1, 1<<20, exact(0, 1))
}

// Committed group offsets: -1 until a commit, then the last value committed,
// per group and per queue.
func testGroupOffsets(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	if _, err := appendAll(s, msgs("t", 0, ids("m", 5))...); err != nil {
		return err
	}
	committed := func(what, group string, queue int32, want int64) error {
		o, err := offsetsOf(s, group, "t", queue)
		if err != nil {
			return err
		}
		if o.Committed != want {
			return fmt.Errorf("%s: group %q t/%d committed %d, want %d", what, group, queue, o.Committed, want)
		}
		return nil
	}
	o, err := offsetsOf(s, "g1", "t", 0)
	if err != nil {
		return err
	}
	if o.Committed != -1 || o.Start != 0 || o.End != 5 {
		return fmt.Errorf("before any commit: %v, want start 0 end 5 committed -1", o)
	}
	ctx, cancel := ctxT()
	defer cancel()
	if err := s.CommitOffsets(ctx, "g1", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 3}, {Topic: "t", Queue: 1, Offset: 7}}); err != nil {
		return fmt.Errorf("CommitOffsets: %w", err)
	}
	for _, c := range []struct {
		what, group string
		queue       int32
		want        int64
	}{{"after a commit", "g1", 0, 3}, {"after a commit", "g1", 1, 7}, {"a group that never committed", "g2", 0, -1}, {"the empty group", "", 0, -1}} {
		if err := committed(c.what, c.group, c.queue, c.want); err != nil {
			return err
		}
	}
	// A later commit replaces the offset, also when it goes back.
	if err := s.CommitOffsets(ctx, "g1", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 1}}); err != nil {
		return fmt.Errorf("CommitOffsets: %w", err)
	}
	if err := committed("after rewinding to 1", "g1", 0, 1); err != nil {
		return err
	}
	// Several queues in one call come back in request order.
	got, err := s.GetOffsets(ctx, "g1", []*sdk.QueueRef{{Topic: "t", Queue: 1}, {Topic: "t", Queue: 0}, {Topic: "nope", Queue: 0}})
	if err != nil {
		return fmt.Errorf("GetOffsets: %w", err)
	}
	if len(got) != 3 || got[0].Committed != 7 || got[1].Committed != 1 || got[2].Committed != -1 || got[1].End != 5 {
		return fmt.Errorf("GetOffsets of three queues = %v, want committed 7, 1, -1 in request order", got)
	}
	return nil
}

// A queue nobody appended to has start = end = 0 and reads empty.
func testUnknownQueue(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	if _, err := appendAll(s, msg("known", 0, "x")); err != nil {
		return err
	}
	for _, r := range []struct {
		topic string
		queue int32
	}{{"unknown", 0}, {"known", 1}} {
		o, err := offsetsOf(s, "g", r.topic, r.queue)
		if err != nil {
			return err
		}
		if o.Start != 0 || o.End != 0 || o.Committed != -1 || o.Topic != r.topic || o.Queue != r.queue {
			return fmt.Errorf("GetOffsets of unknown queue %s/%d = %v, want 0/0/-1", r.topic, r.queue, o)
		}
		resp, err := read(s, r.topic, r.queue, 0, 10, 1<<20)
		if err != nil {
			return err
		}
		if len(resp.Messages) != 0 {
			return fmt.Errorf("read of unknown queue %s/%d returned %d messages", r.topic, r.queue, len(resp.Messages))
		}
	}
	return nil
}

// Re-appending ids the store holds (the broker's retry after a plugin crash)
// returns the original offsets and stores nothing new.
func testDedup(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	first := msgs("t", 0, []string{"a", "b", "c"})
	if _, err := appendAll(s, first...); err != nil {
		return err
	}
	offs, err := appendAll(s, msg("t", 0, "b"), msg("t", 0, "c"), msg("t", 0, "d"))
	if err != nil {
		return err
	}
	if fmt.Sprint(offs) != "[1 2 3]" {
		return fmt.Errorf("retry of b, c plus new d got offsets %v, want [1 2 3]", offs)
	}
	// Within one batch too.
	if offs, err = appendAll(s, msg("t", 0, "e"), msg("t", 0, "e"), msg("t", 0, "a")); err != nil {
		return err
	}
	if fmt.Sprint(offs) != "[4 4 0]" {
		return fmt.Errorf("batch e, e, a got offsets %v, want [4 4 0]", offs)
	}
	// The same id on another queue is another message.
	if offs, err = appendAll(s, msg("t", 1, "a")); err != nil {
		return err
	}
	if offs[0] != 0 {
		return fmt.Errorf("id a on queue 1 got offset %d, want 0", offs[0])
	}
	if err := checkQueue(s, "t", 0, 0, append(first, msg("t", 0, "d"), msg("t", 0, "e"))); err != nil {
		return err
	}
	o, err := offsetsOf(s, "", "t", 0)
	if err != nil {
		return err
	}
	if o.End != 5 {
		return fmt.Errorf("end %d after duplicates, want 5", o.End)
	}
	return nil
}

// The de-dup window holds at least sdk.DedupWindow ids per queue.
func testDedupWindow(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	all := ids("w", sdk.DedupWindow)
	for i := 0; i < len(all); i += 1000 {
		var batch []*sdk.Message
		for _, id := range all[i:min(i+1000, len(all))] {
			batch = append(batch, &sdk.Message{Id: id, Topic: "t", Body: []byte("x")})
		}
		if _, err := appendAll(s, batch...); err != nil {
			return err
		}
	}
	offs, err := appendAll(s, &sdk.Message{Id: all[0], Topic: "t", Body: []byte("x")}, &sdk.Message{Id: all[len(all)-1], Topic: "t", Body: []byte("x")})
	if err != nil {
		return err
	}
	if offs[0] != 0 || offs[1] != int64(len(all)-1) {
		return fmt.Errorf("retry of the oldest and newest of %d ids got offsets %v, want [0 %d]", len(all), offs, len(all)-1)
	}
	o, err := offsetsOf(s, "", "t", 0)
	if err != nil {
		return err
	}
	if o.End != int64(len(all)) {
		return fmt.Errorf("end %d after retries, want %d", o.End, len(all))
	}
	return nil
}

// Many producers at once, as the broker drives a store: one goroutine calls
// Append in order, every producer waits for its own batch concurrently. Every
// message gets a unique offset, queues stay dense, every message reads back.
func testConcurrentAppenders(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
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
					errs <- fmt.Errorf("Append: %w", err)
					return
				}
				ctx, cancel := ctxT()
				offs, err := w(ctx)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("AppendWait: %w", err)
					return
				}
				if len(offs) != len(batch) {
					errs <- fmt.Errorf("Append returned %d offsets for %d messages", len(offs), len(batch))
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
		return err
	}
	total := 0
	for q := range int32(queues) {
		got, err := readAll(s, "conc", q, 0)
		if err != nil {
			return err
		}
		for i, m := range got {
			want := byOffset[[2]int64{int64(q), int64(i)}]
			if want == nil {
				return fmt.Errorf("queue %d offset %d holds %s, which no producer was told", q, i, m.Id)
			}
			if err := sameMessage(m, want, int64(i)); err != nil {
				return fmt.Errorf("queue %d: %w", q, err)
			}
		}
		total += len(got)
	}
	if total != producers*perProducer {
		return fmt.Errorf("read %d messages, %d were appended and acknowledged", total, producers*perProducer)
	}
	return nil
}

func wantErr(what string, err, sentinel error) error {
	if !errors.Is(err, sentinel) {
		return fmt.Errorf("%s: got error %v, want one matching %q", what, err, sentinel)
	}
	return nil
}

// Malformed requests fail with sdk.ErrInvalidArgument (also across the process
// boundary), and a batch with one bad message stores nothing.
func testInvalidArguments(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	ctx, cancel := ctxT()
	defer cancel()
	_, err = appendMsgs(ctx, s, msg("", 0, "a"))
	if err := wantErr("append with empty topic", err, sdk.ErrInvalidArgument); err != nil {
		return err
	}
	_, err = appendMsgs(ctx, s, msg("t", 0, "ok"), msg("t", -1, "b"))
	if err := wantErr("append with negative queue", err, sdk.ErrInvalidArgument); err != nil {
		return err
	}
	o, err := offsetsOf(s, "", "t", 0)
	if err != nil {
		return err
	}
	if o.End != 0 {
		return fmt.Errorf("a rejected batch stored %d messages", o.End)
	}
	_, err = s.Read(ctx, &sdk.ReadRequest{Topic: "", Queue: 0, MaxMessages: 1})
	if err := wantErr("read with empty topic", err, sdk.ErrInvalidArgument); err != nil {
		return err
	}
	_, err = s.Read(ctx, &sdk.ReadRequest{Topic: "t", Queue: -2, MaxMessages: 1})
	if err := wantErr("read with negative queue", err, sdk.ErrInvalidArgument); err != nil {
		return err
	}
	err = s.CommitOffsets(ctx, "g", []*sdk.GroupOffset{{Topic: "", Queue: 0, Offset: 1}})
	if err := wantErr("commit with empty topic", err, sdk.ErrInvalidArgument); err != nil {
		return err
	}
	err = s.CommitOffsets(ctx, "", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 1}})
	if err := wantErr("commit with empty group", err, sdk.ErrInvalidArgument); err != nil {
		return err
	}
	// The store still works.
	offs, err := appendAll(s, msg("t", 0, "ok"))
	if err != nil {
		return fmt.Errorf("after the rejected calls: %w", err)
	}
	if offs[0] != 0 {
		return fmt.Errorf("first good append got offset %d, want 0", offs[0])
	}
	return nil
}

// Unknown config keys are problems with their key; Configure with them fails
// with sdk.ErrConfig.
func testBadConfig(h StorageHarness) error {
	bad := []byte(`{"no_such_key_sdktest": 1}`)
	ps, err := h.Validate(bad)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(ps, func(p sdk.Problem) bool { return p.Path == "no_such_key_sdktest" }) {
		return fmt.Errorf("Validate(%s) = %v, want a problem at no_such_key_sdktest", bad, ps)
	}
	if ps, err := h.Validate(h.Features().Config); err != nil || len(ps) != 0 {
		return fmt.Errorf("Validate of the features' config: %v %v", ps, err)
	}
	s, err := h.Open(bad)
	if err == nil {
		_ = s.Shutdown()
	}
	return wantErr("Configure with an unknown key", err, sdk.ErrConfig)
}

// Calls before Configure fail with sdk.ErrNotConfigured.
func testNotConfigured(h StorageHarness) error {
	s, err := h.Raw()
	if err != nil {
		return err
	}
	ctx, cancel := ctxT()
	defer cancel()
	_, err = appendMsgs(ctx, s, msg("t", 0, "a"))
	if err := wantErr("append before Configure", err, sdk.ErrNotConfigured); err != nil {
		return err
	}
	_, err = s.Read(ctx, &sdk.ReadRequest{Topic: "t", MaxMessages: 1})
	return wantErr("read before Configure", err, sdk.ErrNotConfigured)
}

// What was acknowledged, and committed offsets, are there after a restart, and
// offsets go on from where they were.
func testDurability(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	var a0, a1, b0 []*sdk.Message
	for i := range 50 {
		batch := []*sdk.Message{bigMsg("a", 0, fmt.Sprintf("a0-%d", i), 100*(i%20)), msg("a", 1, fmt.Sprintf("a1-%d", i)), msg("b", 0, fmt.Sprintf("b0-%d", i))}
		if _, err := appendAll(s, batch...); err != nil {
			return err
		}
		a0, a1, b0 = append(a0, batch[0]), append(a1, batch[1]), append(b0, batch[2])
	}
	ctx, cancel := ctxT()
	defer cancel()
	if err := s.CommitOffsets(ctx, "g", []*sdk.GroupOffset{{Topic: "a", Queue: 0, Offset: 17}}); err != nil {
		return fmt.Errorf("CommitOffsets: %w", err)
	}
	for round := range 2 {
		if s, err = reopen(h, s); err != nil {
			return err
		}
		for _, q := range []struct {
			topic string
			queue int32
			want  []*sdk.Message
		}{{"a", 0, a0}, {"a", 1, a1}, {"b", 0, b0}} {
			if err := checkQueue(s, q.topic, q.queue, 0, q.want); err != nil {
				return fmt.Errorf("after reopen %d: %w", round, err)
			}
		}
		o, err := offsetsOf(s, "g", "a", 0)
		if err != nil {
			return err
		}
		if o.Committed != 17 || o.End != int64(len(a0)) {
			return fmt.Errorf("after reopen %d: a/0 offsets %v, want end %d committed 17", round, o, len(a0))
		}
		m := msg("a", 0, fmt.Sprintf("after-%d", round))
		offs, err := appendAll(s, m)
		if err != nil {
			return err
		}
		if offs[0] != int64(len(a0)) {
			return fmt.Errorf("after reopen %d: next append got offset %d, want %d", round, offs[0], len(a0))
		}
		a0 = append(a0, m)
	}
	return nil
}

// The de-dup window survives a restart: the broker's retry after a plugin
// crash lands on a new process.
func testDedupAcrossReopen(h StorageHarness) error {
	s, err := open(h)
	if err != nil {
		return err
	}
	first := msgs("t", 0, ids("d", 20))
	if _, err := appendAll(s, first...); err != nil {
		return err
	}
	if s, err = reopen(h, s); err != nil {
		return err
	}
	offs, err := appendAll(s, msg("t", 0, "d-00019"), msg("t", 0, "d-00003"), msg("t", 0, "new"))
	if err != nil {
		return err
	}
	if fmt.Sprint(offs) != "[19 3 20]" {
		return fmt.Errorf("retry after reopen got offsets %v, want [19 3 20]", offs)
	}
	return checkQueue(s, "t", 0, 0, append(first, msg("t", 0, "new")))
}

// newestFile returns the newest data file and its contents.
func newestFile(h StorageHarness) (string, []byte, error) {
	files, err := h.Features().DataFiles(h.Dir())
	if err != nil || len(files) == 0 {
		return "", nil, fmt.Errorf("DataFiles(%s) = %v, %v", h.Dir(), files, err)
	}
	path := files[len(files)-1]
	b, err := os.ReadFile(path)
	return path, b, err
}

// damageCase appends n messages, closes the store, lets damage change the
// newest data file, reopens and returns the store and what was appended.
func damageCase(h StorageHarness, n int, damage func(path string, data []byte) error) (*Store, []*sdk.Message, error) {
	s, err := open(h)
	if err != nil {
		return nil, nil, err
	}
	var want []*sdk.Message
	for i := range n {
		m := noiseMsg("t", 0, fmt.Sprintf("m%03d", i), 200+i)
		if _, err := appendAll(s, m); err != nil {
			return nil, nil, err
		}
		want = append(want, m)
	}
	if err := s.Shutdown(); err != nil {
		return nil, nil, fmt.Errorf("Close: %w", err)
	}
	path, data, err := newestFile(h)
	if err != nil {
		return nil, nil, err
	}
	if err := damage(path, data); err != nil {
		return nil, nil, err
	}
	s, err = open(h)
	return s, want, err
}

// A torn tail (the newest file cut short, as a crash mid-write leaves it):
// everything before the torn record is readable and intact, nothing partial is
// delivered, and appends go on from the last good offset.
func testTornTail(h StorageHarness) error {
	for _, cut := range []int{1, 7, 150} {
		if err := tornTail(h, cut); err != nil {
			return fmt.Errorf("cut %d bytes: %w", cut, err)
		}
	}
	return nil
}

func tornTail(h StorageHarness, cut int) error {
	h, err := h.Fresh()
	if err != nil {
		return err
	}
	s, want, err := damageCase(h, 12, func(path string, data []byte) error {
		return os.Truncate(path, int64(len(data)-cut))
	})
	if err != nil {
		return err
	}
	got, err := readAll(s, "t", 0, 0)
	if err != nil {
		return err
	}
	if len(got) != len(want)-1 {
		return fmt.Errorf("after cutting %d bytes off the newest file: read %d messages, want %d (all but the torn one)", cut, len(got), len(want)-1)
	}
	if err := checkMessages(got, want[:len(got)], 0); err != nil {
		return err
	}
	o, err := offsetsOf(s, "", "t", 0)
	if err != nil {
		return err
	}
	if o.End != int64(len(got)) {
		return fmt.Errorf("end %d, want %d", o.End, len(got))
	}
	// The torn message is gone, also from the de-dup window: the broker's
	// retry stores it again.
	last := want[len(want)-1]
	offs, err := appendAll(s, last)
	if err != nil {
		return err
	}
	if offs[0] != int64(len(got)) {
		return fmt.Errorf("retry of the torn message got offset %d, want %d", offs[0], len(got))
	}
	return checkQueue(s, "t", 0, 0, want)
}

// A bit flipped in the last record (the disk or a torn sector): that record is
// dropped, the ones before are intact, and no error is delivered as data.
func testBitFlip(h StorageHarness) error {
	s, want, err := damageCase(h, 12, func(path string, data []byte) error {
		data[len(data)-3] ^= 0x10
		return os.WriteFile(path, data, 0o644)
	})
	if err != nil {
		return err
	}
	got, err := readAll(s, "t", 0, 0)
	if err != nil {
		return err
	}
	if len(got) != len(want)-1 {
		return fmt.Errorf("after a bit flip in the last record: read %d messages, want %d", len(got), len(want)-1)
	}
	if err := checkMessages(got, want[:len(got)], 0); err != nil {
		return err
	}
	m := msg("t", 0, "after")
	offs, err := appendAll(s, m)
	if err != nil {
		return err
	}
	if offs[0] != int64(len(got)) {
		return fmt.Errorf("next append got offset %d, want %d", offs[0], len(got))
	}
	return checkQueue(s, "t", 0, int64(len(got)), []*sdk.Message{m})
}

// Retention removes the oldest messages: the queue's start moves up, its end
// does not move, a read from below the start is answered from the start, and
// the newest messages are intact.
func testRetention(h StorageHarness) error {
	s, err := h.Open(h.Features().RetentionConfig)
	if err != nil {
		return err
	}
	const n = 300
	var want []*sdk.Message
	for i := 0; i < n; i += 10 {
		var batch []*sdk.Message
		for j := range 10 {
			batch = append(batch, bigMsg("t", 0, fmt.Sprintf("r%03d", i+j), 1024))
		}
		if _, err := appendAll(s, batch...); err != nil {
			return err
		}
		want = append(want, batch...)
	}
	deadline := time.Now().Add(10 * time.Second)
	var o *sdk.QueueOffsets
	for {
		if o, err = offsetsOf(s, "", "t", 0); err != nil {
			return err
		}
		if o.Start > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if o.Start == 0 || o.Start >= n || o.End != n {
		return fmt.Errorf("after appending %d KiB-messages under retention: offsets %d..%d, want start in (0, %d) and end %d", n, o.Start, o.End, n, n)
	}
	resp, err := read(s, "t", 0, 0, 5, 1<<20)
	if err != nil {
		return err
	}
	if len(resp.Messages) == 0 || resp.Messages[0].Offset < o.Start {
		return fmt.Errorf("read from 0 below start %d returned %d messages starting at %v", o.Start, len(resp.Messages), resp.Messages)
	}
	first := resp.Messages[0].Offset
	if err := checkMessages(resp.Messages, want[first:first+int64(len(resp.Messages))], first); err != nil {
		return err
	}
	return checkQueue(s, "t", 0, n-5, want[n-5:])
}
