package file

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
)

// wireOf is each message in its wire form, as the SDK hands it to
// AppendWire.
func wireOf(t *testing.T, msgs []*sdk.Message) []sdk.WireAppend {
	t.Helper()
	out := make([]sdk.WireAppend, 0, len(msgs))
	for i, m := range msgs {
		b, err := m.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		info, ok := sdk.MessageWire(b)
		if !ok {
			t.Fatalf("message %d fails MessageWire", i)
		}
		out = append(out, sdk.WireAppend{Wire: b, Info: info})
	}
	return out
}

func wireAppendWait(t *testing.T, s *Store, msgs []*sdk.Message) []int64 {
	t.Helper()
	_, wait, err := s.AppendWire(ctx(t), wireOf(t, msgs))
	if err != nil {
		t.Fatalf("AppendWire: %v", err)
	}
	offs, err := wait(ctx(t))
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return offs
}

// TestAppendWireStoresWhatAppendEarlyStores: messages appended in their wire
// form get the offsets, de-duplication and refusals that decoded ones get,
// and read back (also after a restart) as the same messages.
func TestAppendWireStoresWhatAppendEarlyStores(t *testing.T) {
	decodedDir, wireDir := t.TempDir(), t.TempDir()
	decoded, wired := openStore(t, decodedDir, ""), openStore(t, wireDir, "")
	var batches [][]*sdk.Message
	for b := range 4 {
		var batch []*sdk.Message
		for i := range 10 {
			m := testMsg(int32(i%2), 10*b+i)
			m.Key = "k-é"
			m.Headers = map[string]string{"h": strings.Repeat("v", i)}
			m.BornUnixNano = int64(100 + i)
			m.Offset, m.StoredUnixNano = 777, 888 // stale: the store's win
			batch = append(batch, m)
		}
		batches = append(batches, batch)
	}
	// A producer's retry: ids stored already get their first offsets.
	batches = append(batches, []*sdk.Message{batches[1][3], testMsg(0, 99), batches[0][0]})
	var first [][]int64
	for i, batch := range batches {
		want := appendWait(t, decoded, batch...)
		first = append(first, want)
		got := wireAppendWait(t, wired, batch)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("batch %d: AppendWire gave offsets %v, AppendEarly %v", i, got, want)
		}
	}
	same := func(when string) {
		t.Helper()
		for q := range int32(2) {
			want, got := readQueue(t, decoded, q), readQueue(t, wired, q)
			if len(want) == 0 || len(got) != len(want) {
				t.Fatalf("%s, queue %d: %d messages read, want %d", when, q, len(got), len(want))
			}
			for i := range want {
				if got[i].StoredUnixNano == 0 || got[i].StoredUnixNano == 888 {
					t.Fatalf("%s, queue %d, message %d: stored at %d", when, q, i, got[i].StoredUnixNano)
				}
				got[i].StoredUnixNano, want[i].StoredUnixNano = 0, 0 // each store's own clock
				if !proto.Equal(got[i], want[i]) {
					t.Fatalf("%s, queue %d, message %d: read\n%v\nwant\n%v", when, q, i, got[i], want[i])
				}
			}
		}
	}
	same("before a restart")
	for _, s := range []*Store{decoded, wired} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	decoded, wired = openStore(t, decodedDir, ""), openStore(t, wireDir, "")
	same("after a restart")
	// Still de-duplicated after the restart.
	if got := wireAppendWait(t, wired, []*sdk.Message{batches[2][4]}); got[0] != first[2][4] {
		t.Fatalf("a stored id appended again after a restart got offset %d, want %d", got[0], first[2][4])
	}

	// What AppendEarly refuses, AppendWire refuses with the same words.
	tooBig := testMsg(0, 1)
	tooBig.Body = make([]byte, 2<<20)
	small := openStore(t, t.TempDir(), `{"segment_bytes": 1048576}`)
	for _, c := range []struct {
		name string
		m    *sdk.Message
		s    *Store
	}{
		{"negative queue", &sdk.Message{Id: "x", Topic: "t", Queue: -1}, wired},
		{"no topic", &sdk.Message{Id: "x", Queue: 0}, wired},
		{"id too long", &sdk.Message{Id: strings.Repeat("i", maxNameLen+1), Topic: "t"}, wired},
		{"larger than a segment", tooBig, small},
	} {
		_, _, werr := c.s.AppendWire(ctx(t), wireOf(t, []*sdk.Message{c.m}))
		_, _, derr := c.s.AppendEarly(ctx(t), []*sdk.Message{c.m})
		if werr == nil || derr == nil || werr.Error() != derr.Error() {
			t.Fatalf("%s: AppendWire: %v; AppendEarly: %v", c.name, werr, derr)
		}
	}
}

// TestRingAppendsInWireForm: over the ring data plane, an append whose
// messages come with their wire forms (as the core has them from its
// transport) is written from them, the store takes every untraced append in
// wire form, and what is read back is the messages, with the queue and born
// time the broker set after decoding them. Without wire forms (a message the
// broker made) the core encodes, and the store still takes it in wire form.
func TestRingAppendsInWireForm(t *testing.T) {
	client, stop := sdktest.ServeStorageRing(t, newTestStore(t))
	defer stop()
	if err := client.Configure(ctx(t), nil, &sdk.Environment{DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if client.DataPlane() != sdk.DataPlaneRing {
		t.Fatalf("data plane %s, want the ring", client.DataPlane())
	}
	var msgs []*sdk.Message
	var wires sdk.MessageWires
	for i := range 40 {
		m := testMsg(3, i) // the client's queue 3, which the broker changes
		m.Headers = map[string]string{"h": fmt.Sprint(i)}
		w, err := m.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		m.Queue, m.BornUnixNano = 1, int64(1000+i)
		msgs, wires = append(msgs, m), append(wires, w)
	}
	wires[5] = nil // one without: encoded by the core
	sent0, taken0 := sdk.WireAppendCounts()
	_, wait, err := client.AppendEarly(sdk.WithMessageWires(ctx(t), msgs, wires), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wait(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if sent, taken := sdk.WireAppendCounts(); sent != sent0+1 || taken != taken0+1 {
		t.Fatalf("with wire forms: %d frames sent and %d taken in wire form, want 1 and 1", sent-sent0, taken-taken0)
	}
	// Without: encoded by the core, still taken in wire form.
	extra := testMsg(1, 99)
	if _, wait, err = client.AppendEarly(ctx(t), []*sdk.Message{extra}); err != nil {
		t.Fatal(err)
	}
	if _, err := wait(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if sent, taken := sdk.WireAppendCounts(); sent != sent0+1 || taken != taken0+2 {
		t.Fatalf("without wire forms: %d frames sent and %d taken in wire form, want 1 and 2", sent-sent0, taken-taken0)
	}
	got := readQueue(t, client, 1)
	want := append(msgs, extra)
	if len(got) != len(want) {
		t.Fatalf("read %d messages of queue 1, want %d (the broker's queue must win over the client's)", len(got), len(want))
	}
	for i := range want {
		got[i].Offset, got[i].StoredUnixNano = 0, 0
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("message %d: read\n%v\nwant\n%v", i, got[i], want[i])
		}
	}
}

// BenchmarkAppendFrom: what the store's side of the ring does with an
// append frame of 64 messages of 1 KiB: decode it and append the messages
// (before), or read the messages' wire forms and append those (now).
//
//	go test -run '^$' -bench AppendFrom -count 5 ./plugins/storage/file/
func BenchmarkAppendFrom(b *testing.B) {
	for _, mode := range []string{"decoded", "wire"} {
		b.Run(mode, func(b *testing.B) {
			s := openBench(b, `{"flush": "async"}`)
			const batch = 64
			frames := make([][]byte, 256)
			idAt := make([][]int, len(frames)) // where each message's id is in its frame
			next := 0
			newID := func() string { next++; return fmt.Sprintf("p%010d", next) }
			for f := range frames {
				req := &ferryv1.AppendRequest{Seq: uint64(f)}
				for j := range batch {
					req.Messages = append(req.Messages, &sdk.Message{Id: newID(), Topic: "bench", Queue: int32(j % 4), Body: make([]byte, 1024), BornUnixNano: 1})
				}
				frames[f], _ = req.MarshalVT()
				for _, m := range req.Messages {
					idAt[f] = append(idAt[f], bytes.Index(frames[f], []byte(m.Id)))
				}
			}
			waits := make(chan sdk.AppendWait, 1024)
			done := make(chan error, 1)
			go func() {
				var err error
				for w := range waits {
					if _, werr := w(context.Background()); werr != nil && err == nil {
						err = werr
					}
				}
				done <- err
			}()
			b.SetBytes(batch * 1024)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if i >= len(frames) { // fresh ids, of the same length: the same ones would be de-duplicated
					for _, at := range idAt[i%len(frames)] {
						copy(frames[i%len(frames)][at:], newID())
					}
				}
				p := frames[i%len(frames)]
				var w sdk.AppendWait
				var err error
				if mode == "decoded" {
					req := &ferryv1.AppendRequest{}
					if err := req.UnmarshalVTUnsafe(p); err != nil {
						b.Fatal(err)
					}
					for _, m := range req.Messages {
						m.Id, m.Topic = strings.Clone(m.Id), strings.Clone(m.Topic) // as the SDK owns a frame's strings
					}
					_, w, err = s.AppendEarly(context.Background(), req.Messages)
				} else {
					msgs := make([]sdk.WireAppend, 0, batch)
					for rest := p; len(rest) > 0; {
						num, typ, n := protowire.ConsumeTag(rest)
						m := protowire.ConsumeFieldValue(num, typ, rest[n:])
						if num == 2 {
							v, _ := protowire.ConsumeBytes(rest[n:])
							info, ok := sdk.MessageWire(v)
							if !ok {
								b.Fatal("message fails MessageWire")
							}
							msgs = append(msgs, sdk.WireAppend{Wire: v, Info: info})
						}
						rest = rest[n+m:]
					}
					_, w, err = s.AppendWire(context.Background(), msgs)
				}
				if err != nil {
					b.Fatal(err)
				}
				waits <- w
			}
			close(waits)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
		})
	}
}

// TestRingAppendWireOfAnotherMessage: an append whose wire forms are not
// its messages' (two swapped, as a bug pairing them would) is caught by the
// core before it writes the frame: counted, and the messages encoded
// instead, so that the store holds each message under its own queue.
func TestRingAppendWireOfAnotherMessage(t *testing.T) {
	client, stop := sdktest.ServeStorageRing(t, newTestStore(t))
	defer stop()
	if err := client.Configure(ctx(t), nil, &sdk.Environment{DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	var msgs []*sdk.Message
	var wires sdk.MessageWires
	for i := range 6 {
		m := testMsg(0, i)
		w, err := m.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		m.Queue = int32(i % 2)
		msgs, wires = append(msgs, m), append(wires, w)
	}
	wires[2], wires[3] = wires[3], wires[2] // messages of queues 0 and 1
	sent0, _ := sdk.WireAppendCounts()
	bad0 := sdk.WireMismatches()
	_, wait, err := client.AppendEarly(sdk.WithMessageWires(ctx(t), msgs, wires), msgs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wait(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if bad := sdk.WireMismatches() - bad0; bad != 1 {
		t.Errorf("%d appends counted with a wire form of another message, want 1", bad)
	}
	if sent, _ := sdk.WireAppendCounts(); sent != sent0 {
		t.Errorf("%d frames written from wire forms that are not their messages'", sent-sent0)
	}
	for q := range int32(2) {
		got := readQueue(t, client, q)
		var want []*sdk.Message
		for _, m := range msgs {
			if m.Queue == q {
				want = append(want, m)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("queue %d: %d messages, want %d", q, len(got), len(want))
		}
		for i := range want {
			if got[i].Id != want[i].Id || string(got[i].Body) != string(want[i].Body) {
				t.Errorf("queue %d offset %d: message %q, want %q", q, i, got[i].Id, want[i].Id)
			}
		}
	}
}
