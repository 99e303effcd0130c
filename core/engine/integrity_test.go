package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// ferryRun is a `ferry run` process for the storage integrity tests.
type ferryRun struct {
	t    *testing.T
	yaml string
	addr string // the transport's address
	cmd  *exec.Cmd
}

// newFerryRun writes a pipeline with file storage in dir and the given
// transport ("grpc" or "http") on a free port.
func newFerryRun(t *testing.T, dir, transport, storageConfig string) *ferryRun {
	return newFerryRunData(t, dir, filepath.Join(dir, "data"), transport, storageConfig, "")
}

// newFerryRunData is newFerryRun with the data_dir and an admin listener
// (empty: none) of one's choice.
func newFerryRunData(t *testing.T, dir, dataDir, transport, storageConfig, admin string) *ferryRun {
	r := &ferryRun{t: t, yaml: filepath.Join(dir, "broker.yaml"), addr: ferrytest.FreeAddr(t)}
	adminYAML := ""
	if admin != "" {
		adminYAML = fmt.Sprintf("admin: {listen: %q}\n", admin)
	}
	if err := os.WriteFile(r.yaml, []byte(fmt.Sprintf(`name: integrity
node: {data_dir: %q}
%splugins:
  storage: {type: file, config: %s}
  transport: {type: %s, config: {listen: %q}}
topics: [{name: t, queues: 3}]
`, dataDir, adminYAML, storageConfig, transport, r.addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.stop)
	return r
}

func (r *ferryRun) start() {
	r.cmd = exec.Command(ferrytest.Binary(r.t), "run", "--log-level", "warn", r.yaml)
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	waitFor(r.t, 60*time.Second, "the broker to listen", func() bool {
		c, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop ends the broker with SIGTERM (it closes the store) and waits.
func (r *ferryRun) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
	r.cmd = nil
}

func (r *ferryRun) rpc(t *testing.T) ferryv1.BrokerClient {
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ferryv1.NewBrokerClient(conn)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Issue 13.4: a client's commit past a queue's end (offset 2^63-1) is
// refused with INVALID_ARGUMENT through gRPC and 400 through HTTP, and the
// group's offset is unchanged; a commit at the end is taken.
func TestCommitPastEndRefused(t *testing.T) {
	t.Run("grpc", func(t *testing.T) {
		r := newFerryRun(t, t.TempDir(), "grpc", `{}`)
		r.start()
		rpc := r.rpc(t)
		ctx := testCtx(t)
		cl, err := client.Dial(ctx, r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		p := cl.NewProducer(client.ProducerOptions{Selector: client.KeyHash()})
		ends := map[int32]int64{}
		for range 9 {
			res, err := p.SendSync(ctx, client.Message{Topic: "t", Key: "k", Body: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			ends[res.Queue]++
		}
		q, other := int32(-1), int32(-1)
		for i := range int32(3) {
			if ends[i] > 0 && (q < 0 || ends[i] > ends[q]) {
				q = i
			}
		}
		for i := range int32(3) {
			if ends[i] == 0 {
				other = i
			}
		}
		if other < 0 {
			t.Fatalf("messages of one key went to every queue: %v", ends)
		}
		end := ends[q]
		_, err = rpc.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: "g", Offsets: []*ferryv1.GroupOffset{{Topic: "t", Queue: q, Offset: math.MaxInt64}}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), fmt.Sprintf("beyond the queue's end %d", end)) {
			t.Fatalf("commit of 2^63-1: %v, want InvalidArgument naming the end %d", err, end)
		}
		if _, err := rpc.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: "g", Offsets: []*ferryv1.GroupOffset{{Topic: "t", Queue: other, Offset: 1}}}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("commit of 1 on an empty queue: %v, want InvalidArgument", err)
		}
		if _, err := rpc.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: "g", Offsets: []*ferryv1.GroupOffset{{Topic: "t", Queue: q, Offset: end}}}); err != nil {
			t.Fatalf("commit at the end: %v", err)
		}
		o, err := rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Group: "g", Queues: []*ferryv1.QueueRef{{Topic: "t", Queue: q}, {Topic: "t", Queue: other}}})
		if err != nil || o.Offsets[0].Committed != end || o.Offsets[1].Committed != -1 {
			t.Fatalf("offsets %v %v, want committed %d and -1", o, err, end)
		}
	})
	t.Run("http", func(t *testing.T) {
		r := newFerryRun(t, t.TempDir(), "http", `{}`)
		r.start()
		base := "http://" + r.addr
		post := func(path, body string) (int, string) {
			t.Helper()
			resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := post("/v1/topics/t/messages", `{"messages":[{"queue":0,"body":"a"},{"queue":0,"body":"b"}]}`); code != http.StatusOK {
			t.Fatalf("produce: %d %s", code, body)
		}
		code, body := post("/v1/groups/g/offsets", `{"offsets":[{"topic":"t","queue":0,"offset":9223372036854775807}]}`)
		if code != http.StatusBadRequest || !strings.Contains(body, "INVALID_ARGUMENT") || !strings.Contains(body, "beyond the queue's end 2") {
			t.Fatalf("commit of 2^63-1: %d %s, want 400 INVALID_ARGUMENT naming the end 2", code, body)
		}
		if code, body := post("/v1/groups/g/offsets", `{"offsets":[{"topic":"t","queue":0,"offset":2}]}`); code/100 != 2 {
			t.Fatalf("commit at the end: %d %s", code, body)
		}
	})
}

// Issue 13.1 with the real broker: acknowledged messages in several
// segments; with the broker stopped, the first segment's header is zeroed
// and a byte of a middle one's base is flipped. After a restart every
// acknowledged message is served where its producer was told.
func TestDamagedSegmentHeadersBrokerServesAll(t *testing.T) {
	dir := t.TempDir()
	r := newFerryRun(t, dir, "grpc", `{"segment_bytes": "4KiB"}`)
	r.start()
	ctx := testCtx(t)
	cl, err := client.Dial(ctx, r.addr)
	if err != nil {
		t.Fatal(err)
	}
	p := cl.NewProducer(client.ProducerOptions{ID: "p"})
	ack := map[string]acked{}
	for i := range 300 {
		res, err := p.SendSync(ctx, client.Message{Topic: "t", Key: fmt.Sprint(i % 5), Body: []byte(strings.Repeat("x", 50))})
		if err != nil {
			t.Fatal(err)
		}
		ack[res.ID] = acked{res.Queue, res.Offset}
	}
	cl.Close()
	r.stop()

	segs, _ := filepath.Glob(filepath.Join(dir, "data", "storage-file", "*.log"))
	sort.Strings(segs)
	if len(segs) < 4 {
		t.Fatalf("%d segments, want at least 4", len(segs))
	}
	patch := func(path string, fn func([]byte)) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fn(b)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	patch(segs[0], func(b []byte) { clear(b[:32]) })
	patch(segs[len(segs)/2], func(b []byte) { b[18] ^= 0x01 })

	r.start()
	rpc := r.rpc(t)
	seen := map[string]acked{}
	for q := range int32(3) {
		for off := int64(0); ; {
			resp, err := rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: "t", Positions: []*ferryv1.FetchPosition{{Queue: q, Offset: off}}, MaxMessages: 100})
			if err != nil {
				t.Fatalf("fetch queue %d at %d: %v", q, off, err)
			}
			if len(resp.Messages) == 0 {
				break
			}
			for _, m := range resp.Messages {
				seen[m.Id] = acked{m.Queue, m.Offset}
				off = m.Offset + 1
			}
		}
	}
	lost := 0
	for id, a := range ack {
		if seen[id] != a {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages not served where they were acknowledged after the header damage", lost, len(ack))
	}
}

// Issue 13.3: one damaged record in a sealed, indexed segment (found only
// when it is read) holds up its own queue, never the others. Under the
// default policy (stop) a group consumes every other message and stops that
// queue at the damaged offset with an error; under skip it consumes
// everything else, counts the skip, and commits past it.
func TestCorruptRecordHoldsUpOnlyItsQueue(t *testing.T) {
	dir := t.TempDir()
	r := newFerryRun(t, dir, "grpc", `{"segment_bytes": "4KiB"}`)
	r.start()
	ctx := testCtx(t)
	cl, err := client.Dial(ctx, r.addr)
	if err != nil {
		t.Fatal(err)
	}
	p := cl.NewProducer(client.ProducerOptions{ID: "p"})
	ack := map[string]acked{}
	body := map[string]string{}
	for i := range 150 {
		b := fmt.Sprintf("message-%04d-%s", i, strings.Repeat("x", 40))
		res, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte(b)})
		if err != nil {
			t.Fatal(err)
		}
		ack[res.ID], body[res.ID] = acked{res.Queue, res.Offset}, b
	}
	cl.Close()
	r.stop()

	// Damage one message's body in the second segment (sealed, with an
	// index file, so open does not look at it).
	segs, _ := filepath.Glob(filepath.Join(dir, "data", "storage-file", "*.log"))
	sort.Strings(segs)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	data, err := os.ReadFile(segs[1])
	if err != nil {
		t.Fatal(err)
	}
	var badID string
	for id, b := range body {
		if i := strings.Index(string(data), b); i > 0 {
			badID = id
			data[i+10] ^= 0x01
			break
		}
	}
	if badID == "" {
		t.Fatal("no message body found in the second segment")
	}
	if err := os.WriteFile(segs[1], data, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := ack[badID]

	r.start()
	cl, err = client.Dial(ctx, r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p = cl.NewProducer(client.ProducerOptions{ID: "p2"})
	// consume runs a group until it met the damaged record, then sends
	// more messages and waits until the group consumed every message
	// (old and new) that wanted says it should.
	consume := func(group string, policy client.CorruptPolicy, wanted func(a acked) bool) (map[string]bool, client.ConsumerStats) {
		t.Helper()
		cn, err := cl.NewConsumer(client.ConsumerOptions{Topic: "t", Group: group, OnCorrupt: policy, CommitInterval: client.CommitEachBatch})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[string]bool{}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = cn.Consume(cctx, func(_ context.Context, d *client.Delivery) error {
				mu.Lock()
				got[d.ID] = true
				mu.Unlock()
				return nil
			})
		}()
		defer func() { cancel(); <-done }()
		waitFor(t, 60*time.Second, "the consumer to meet the damaged record", func() bool {
			s := cn.Stats()
			return s.CorruptStopped+s.CorruptSkipped > 0
		})
		// Messages sent after the damage was met reach the group on
		// every healthy queue.
		for i := range 30 {
			res, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte(fmt.Sprintf("%s-after-%d", group, i))})
			if err != nil {
				t.Fatal(err)
			}
			ack[res.ID] = acked{res.Queue, res.Offset}
		}
		want := 0
		for _, a := range ack {
			if wanted(a) {
				want++
			}
		}
		waitFor(t, 60*time.Second, fmt.Sprintf("group %s to consume the %d messages the damaged record %d/%d must not hold up", group, want, bad.queue, bad.offset), func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for id := range got {
				if wanted(ack[id]) {
					n++
				}
			}
			return n == want
		})
		mu.Lock()
		defer mu.Unlock()
		out := map[string]bool{}
		for id := range got {
			out[id] = true
		}
		return out, cn.Stats()
	}

	// Stop (default): everything but the damaged queue's messages from
	// the damaged offset on.
	stopped := func(a acked) bool { return a.queue != bad.queue || a.offset < bad.offset }
	got, st := consume("stopper", client.CorruptStop, stopped)
	if st.CorruptStopped != 1 || st.CorruptSkipped != 0 {
		t.Fatalf("stop policy: stats %+v, want one queue stopped", st)
	}
	for id := range got {
		if !stopped(ack[id]) {
			t.Fatalf("stop policy delivered %s at %v, past the damaged offset %d", id, ack[id], bad.offset)
		}
	}

	// Skip: every message but the damaged one; the commit moves past it.
	got, st = consume("skipper", client.CorruptSkip, func(a acked) bool { return a != bad })
	if st.CorruptSkipped != 1 || got[badID] {
		t.Fatalf("skip policy: stats %+v, damaged one delivered %v", st, got[badID])
	}
	rpc := r.rpc(t)
	waitFor(t, 60*time.Second, "the skip group's commit to pass the damaged offset", func() bool {
		o, err := rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Group: "skipper", Queues: []*ferryv1.QueueRef{{Topic: "t", Queue: bad.queue}}})
		return err == nil && o.Offsets[0].Committed == o.Offsets[0].End
	})
	if s, err := cl.DLQ(ctx, "skipper"); err != nil || s.End != 0 {
		t.Fatalf("skip policy: the group's dead-letter queue holds %d (%v), want none", s.End, err)
	}

	// Dead-letter: skip, after a placeholder naming the damaged record is
	// in the group's dead-letter queue.
	got, st = consume("dlqer", client.CorruptDeadLetter, func(a acked) bool { return a != bad })
	if st.CorruptSkipped != 1 || got[badID] {
		t.Fatalf("dlq policy: stats %+v, damaged one delivered %v", st, got[badID])
	}
	dls, _, err := cl.DeadLetters(ctx, "dlqer", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("dlq policy: %d dead letters, want the one placeholder", len(dls))
	}
	h := dls[0].Message.Headers
	if h[sdk.HeaderDeadReason] != client.DeadReasonCorrupt || h[sdk.HeaderOriginTopic] != "t" ||
		h[sdk.HeaderOriginQueue] != fmt.Sprint(bad.queue) || h[sdk.HeaderOriginOffset] != fmt.Sprint(bad.offset) || len(dls[0].Message.Body) != 0 {
		t.Fatalf("dlq policy: placeholder %+v, want reason %q naming t/%d@%d with no body", h, client.DeadReasonCorrupt, bad.queue, bad.offset)
	}
}

// Issue 13.5 with the real broker on a real full filesystem (a tmpfs filled
// to ENOSPC): produce is answered FULL, /readyz says why and
// ferry_storage_full is 1; once space is freed the node becomes ready again
// by itself (no produce needed: the broker probes the store), produce
// works, and every acknowledged message is there.
func TestStorageFullRecoversByItself(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=4194304"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	adminAddr := ferrytest.FreeAddr(t)
	r := newFerryRunData(t, t.TempDir(), filepath.Join(mnt, "data"), "grpc", `{"segment_bytes": "64KiB"}`, adminAddr)
	r.start()
	ctx := testCtx(t)
	cl, err := client.Dial(ctx, r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p := cl.NewProducer(client.ProducerOptions{ID: "p", Retries: client.NoRetries, Timeout: 10 * time.Second})
	body := []byte(strings.Repeat("b", 1000))
	ack := map[string]acked{}
	for range 50 {
		res, err := p.SendSync(ctx, client.Message{Topic: "t", Body: body})
		if err != nil {
			t.Fatal(err)
		}
		ack[res.ID] = acked{res.Queue, res.Offset}
	}

	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4096; i++ {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	var perr error
	for i := 0; i < 5000 && perr == nil; i++ {
		var res client.Result
		if res, perr = p.SendSync(ctx, client.Message{Topic: "t", Body: body}); perr == nil {
			ack[res.ID] = acked{res.Queue, res.Offset}
		}
	}
	if !errors.Is(perr, sdk.ErrFull) {
		t.Fatalf("produce into a full filesystem: %v, want FULL", perr)
	}
	admin := "http://" + adminAddr
	metric := func() string {
		_, body := get(t, admin+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "ferry_storage_full") {
				return line[strings.LastIndex(line, " ")+1:]
			}
		}
		return ""
	}
	if code, body := get(t, admin+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "storage full") {
		t.Fatalf("/readyz while full: %d %s, want 503 naming the full storage", code, body)
	}
	if m := metric(); m != "1" {
		t.Fatalf("ferry_storage_full = %q while full, want 1", m)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the node to be ready again once space is freed", func() bool {
		code, _ := get(t, admin+"/readyz")
		return code == http.StatusOK
	})
	if m := metric(); m != "0" {
		t.Fatalf("ferry_storage_full = %q after recovering, want 0", m)
	}
	res, err := p.SendSync(ctx, client.Message{Topic: "t", Body: body})
	if err != nil {
		t.Fatalf("produce after space was freed: %v", err)
	}
	ack[res.ID] = acked{res.Queue, res.Offset}

	rpc := r.rpc(t)
	seen := map[string]acked{}
	for q := range int32(3) {
		for off := int64(0); ; {
			resp, err := rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: "t", Positions: []*ferryv1.FetchPosition{{Queue: q, Offset: off}}, MaxMessages: 500})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Messages) == 0 {
				break
			}
			for _, m := range resp.Messages {
				seen[m.Id] = acked{m.Queue, m.Offset}
				off = m.Offset + 1
			}
		}
	}
	for id, a := range ack {
		if seen[id] != a {
			t.Fatalf("acknowledged %s at %v, stored at %v", id, a, seen[id])
		}
	}
}
