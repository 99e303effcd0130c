package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/core/telemetry"
)

// wireDecoded decodes what ReadWire returned, as a reader of the answer
// does.
func wireDecoded(t *testing.T, msgs []sdk.WireMessage) []*sdk.Message {
	t.Helper()
	out := make([]*sdk.Message, 0, len(msgs))
	for i, w := range msgs {
		b := w.AppendTo(nil)
		if len(b) != w.Size() {
			t.Fatalf("message %d: AppendTo wrote %d bytes, Size says %d", i, len(b), w.Size())
		}
		m := &sdk.Message{}
		if err := proto.Unmarshal(b, m); err != nil {
			t.Fatalf("message %d of ReadWire does not decode: %v", i, err)
		}
		out = append(out, m)
	}
	return out
}

// ReadWire answers the messages Read answers, field for field: the queue,
// offset and time of storing from the record's header win over the stale
// values a producer's message held when it was appended.
func TestReadWireMatchesRead(t *testing.T) {
	s := openStore(t, t.TempDir(), "")
	var in []*sdk.Message
	for i := range 20 {
		m := testMsg(1, i)
		m.Key = "k-é-" + strings.Repeat("x", i)
		m.Headers = map[string]string{"h": "v", "n": strings.Repeat("y", i)}
		m.BornUnixNano = int64(1000 + i)
		m.Offset = 999_999        // stale: the store's offset wins
		m.StoredUnixNano = 12_345 // likewise its time of storing
		in = append(in, m)
	}
	appendWait(t, s, in[:7]...)
	appendWait(t, s, in[7:]...)
	for _, req := range []*sdk.ReadRequest{
		{Topic: "t", Queue: 1, Offset: 0, MaxMessages: 100},
		{Topic: "t", Queue: 1, Offset: 5, MaxMessages: 4},
		{Topic: "t", Queue: 1, Offset: 3, MaxBytes: 300},
		{Topic: "t", Queue: 1, Offset: 20, MaxMessages: 10}, // at the end
		{Topic: "t", Queue: 2, Offset: 0, MaxMessages: 10},  // a queue never written
		{Topic: "other", Queue: 0, Offset: 0},
	} {
		want, err := s.Read(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		resp, msgs, err := s.ReadWire(ctx(t), req)
		if err != nil {
			t.Fatalf("ReadWire %v: %v", req, err)
		}
		if len(resp.Messages) != 0 {
			t.Fatalf("ReadWire's answer holds %d decoded messages, want none", len(resp.Messages))
		}
		if !proto.Equal(resp.Offsets, want.Offsets) {
			t.Fatalf("ReadWire %v: offsets %v, Read's %v", req, resp.Offsets, want.Offsets)
		}
		got := wireDecoded(t, msgs)
		if len(got) != len(want.Messages) {
			t.Fatalf("ReadWire %v: %d messages, Read %d", req, len(got), len(want.Messages))
		}
		for i := range got {
			if !proto.Equal(got[i], want.Messages[i]) {
				t.Fatalf("ReadWire %v message %d:\n got %v\nwant %v", req, i, got[i], want.Messages[i])
			}
			if got[i].Offset != req.Offset+int64(i) || got[i].StoredUnixNano == 12_345 {
				t.Fatalf("message %d: offset %d stored %d: the record's header did not win", i, got[i].Offset, got[i].StoredUnixNano)
			}
		}
	}
	// The control: a message's own encoding, without what is written after
	// it, keeps the stale values (so the comparison above can fail).
	_, msgs, err := s.ReadWire(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 1, Offset: 2, MaxMessages: 1})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("ReadWire: %v, %d messages", err, len(msgs))
	}
	bare := &sdk.Message{}
	if err := proto.Unmarshal(msgs[0].Wire, bare); err != nil || bare.Offset != 999_999 {
		t.Fatalf("the stored encoding alone: offset %d (%v), want the stale 999999", bare.Offset, err)
	}
}

// A damaged record is refused by ReadWire as by Read: a read across it
// answers the records before it, a read from it fails with ErrCorrupt
// naming the offset.
func TestReadWireDetectsCorruption(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, "")
	appendWait(t, s, testMsg(0, 0), testMsg(0, 1), testMsg(0, 2))
	f, err := os.OpenFile(segments(t, dataDir)[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	e := s.queues[queueKey{"t", 0}].ents[1]
	s.mu.RUnlock()
	if _, err := f.WriteAt([]byte{0xff}, segmentHeaderSize+e.pos+int64(e.size)-2); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	_, msgs, err := s.ReadWire(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 0, MaxMessages: 10})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("read across a damaged record: %v, %d messages; want the 1 before it", err, len(msgs))
	}
	_, _, err = s.ReadWire(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 1, MaxMessages: 10})
	if !errors.Is(err, sdk.ErrCorrupt) || !strings.Contains(err.Error(), "t/0 offset 1") {
		t.Fatalf("read from a damaged record: %v, want ErrCorrupt naming t/0 offset 1", err)
	}
	_, msgs, err = s.ReadWire(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 2, MaxMessages: 10})
	if err != nil || len(msgs) != 1 || wireDecoded(t, msgs)[0].Offset != 2 {
		t.Fatalf("read of the good record after it: %v, %d messages", err, len(msgs))
	}
}

// countingStore counts the reads a store serves each way.
type countingStore struct {
	*Store
	reads, wireReads atomic.Int64
}

func (c *countingStore) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	c.reads.Add(1)
	return c.Store.Read(ctx, req)
}

func (c *countingStore) ReadWire(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, []sdk.WireMessage, error) {
	c.wireReads.Add(1)
	return c.Store.ReadWire(ctx, req)
}

// decodedOnly hides ReadWire: a store without the capability.
type decodedOnly struct{ sdk.Storage }

// Over the ring data plane the plugin answers reads with ReadWire, and the
// host gets the messages Read gives, still in their wire form for a caller
// that forwards them (EncodedReader). The control, a store without
// ReadWire, is answered by Read.
func TestRingReadsInWireForm(t *testing.T) {
	for _, wire := range []bool{true, false} {
		t.Run(map[bool]string{true: "ReadWire", false: "control"}[wire], func(t *testing.T) {
			counted := &countingStore{Store: newTestStore(t)}
			var impl sdk.Storage = counted
			if !wire {
				impl = decodedOnly{counted}
			}
			c, stop := sdktest.ServeStorageRing(t, impl)
			defer stop()
			env := &sdk.Environment{DataDir: t.TempDir(), Node: "n1", Pipeline: "p"}
			if err := c.Configure(ctx(t), []byte(`{}`), env); err != nil {
				t.Fatal(err)
			}
			if c.DataPlane() != sdk.DataPlaneRing {
				t.Fatalf("data plane %s, want the ring", c.DataPlane())
			}
			var in []*sdk.Message
			for i := range 50 {
				m := testMsg(0, i)
				m.Headers = map[string]string{"i": strconv.Itoa(i)}
				in = append(in, m)
			}
			appendWait(t, c, in...)
			req := &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 10, MaxMessages: 30}
			want, err := counted.Store.Read(ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			before := counted.reads.Load()
			got, err := c.Read(ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Messages) != len(want.Messages) {
				t.Fatalf("%d messages over the ring, %d read directly", len(got.Messages), len(want.Messages))
			}
			for i := range got.Messages {
				if !proto.Equal(got.Messages[i], want.Messages[i]) {
					t.Fatalf("message %d over the ring:\n got %v\nwant %v", i, got.Messages[i], want.Messages[i])
				}
			}
			_, enc, err := c.ReadEncoded(ctx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if enc.N != len(want.Messages) {
				t.Fatalf("ReadEncoded kept %d messages encoded, want %d", enc.N, len(want.Messages))
			}
			reads, wireReads := counted.reads.Load()-before, counted.wireReads.Load()
			if wire && (wireReads != 2 || reads != 0) {
				t.Fatalf("plugin served %d reads by ReadWire and %d by Read, want 2 and 0", wireReads, reads)
			}
			if !wire && (wireReads != 0 || reads != 2) {
				t.Fatalf("control: plugin served %d reads by ReadWire and %d by Read, want 0 and 2", wireReads, reads)
			}
		})
	}
}

// While the plugin traces, reads over the ring are still answered in wire
// form: only the messages whose encoding holds a traceparent are decoded,
// and the sampled ones get their storage.read spans, with their offsets, as
// the decoding path (the control, a store without ReadWire) gives them.
func TestRingReadsInWireFormWhileTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	defer telemetry.UseSpanProcessor(rec)()
	sampled := map[int]bool{12: true, 20: true, 33: true, 45: true} // 45 is past the read
	type outcome struct {
		traced  []uint32
		offsets []int64
	}
	for _, wire := range []bool{true, false} {
		t.Run(map[bool]string{true: "ReadWire", false: "control"}[wire], func(t *testing.T) {
			counted := &countingStore{Store: newTestStore(t)}
			var impl sdk.Storage = counted
			if !wire {
				impl = decodedOnly{counted}
			}
			c, stop := sdktest.ServeStorageRing(t, impl)
			defer stop()
			env := &sdk.Environment{DataDir: t.TempDir(), Node: "n1", Pipeline: "p"}
			if err := c.Configure(ctx(t), []byte(`{}`), env); err != nil {
				t.Fatal(err)
			}
			var in []*sdk.Message
			for i := range 50 {
				m := testMsg(0, i)
				m.Headers = map[string]string{"i": strconv.Itoa(i)}
				if sampled[i] {
					m.Headers[telemetry.HeaderTraceparent] = fmt.Sprintf("00-%032x-%016x-01", i+1, i+1)
				}
				in = append(in, m)
			}
			appendWait(t, c, in...)
			rec.Reset()
			before := counted.reads.Load()
			got, err := c.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 10, MaxMessages: 30})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Messages) != 30 {
				t.Fatalf("%d messages read, want 30", len(got.Messages))
			}
			reads, wireReads := counted.reads.Load()-before, counted.wireReads.Load()
			if wire && (wireReads != 1 || reads != 0) {
				t.Fatalf("plugin served %d reads by ReadWire and %d by Read, want 1 and 0", wireReads, reads)
			}
			if !wire && (wireReads != 0 || reads != 1) {
				t.Fatalf("control: plugin served %d reads by ReadWire and %d by Read, want 0 and 1", wireReads, reads)
			}
			var o outcome
			o.traced = got.TracedIndex
			for _, s := range rec.Ended() {
				if s.Name() != telemetry.SpanStorageRead {
					continue
				}
				for _, a := range s.Attributes() {
					if a.Key == telemetry.AttrOffset {
						o.offsets = append(o.offsets, a.Value.AsInt64())
					}
				}
			}
			slices.Sort(o.offsets)
			if !slices.Equal(o.traced, []uint32{2, 10, 23}) || !slices.Equal(o.offsets, []int64{12, 20, 33}) {
				t.Fatalf("traced indexes %v and storage.read span offsets %v, want [2 10 23] and [12 20 33]", o.traced, o.offsets)
			}
		})
	}
}
