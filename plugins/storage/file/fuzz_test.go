package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/sdk"
)

func ctxF(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return c
}

// Fuzz targets (issue 13). Their seeds run as ordinary tests; `make check`
// (CI) runs each for a bounded time through scripts/fuzz.sh, or by hand:
//
//	go test -run '^$' -fuzz '^FuzzDecodeRecord$' -fuzztime 30s ./plugins/storage/file/
//	go test -run '^$' -fuzz '^FuzzRecovery$' -fuzztime 30s ./plugins/storage/file/

func seedRecords(f *testing.F) [][]byte {
	var out [][]byte
	for i, m := range []*sdk.Message{
		{Topic: "t", Queue: 0, Id: "a", Body: []byte("hello")},
		{Topic: "orders", Queue: 3, Id: "id-1", Key: "k", Headers: map[string]string{"h": "v"}, Body: []byte("body")},
		{Topic: "t", Queue: 1},
	} {
		b, err := appendRecord(nil, m, int64(i), 1)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// The record decoder never panics, and what it accepts is consistent: its
// size is the input's, its fields are those of the header, and it passes
// the checks recovery makes.
func FuzzDecodeRecord(f *testing.F) {
	for _, rec := range seedRecords(f) {
		f.Add(rec)
		f.Add(rec[:len(rec)-1])
		flipped := append([]byte(nil), rec...)
		flipped[len(flipped)/2] ^= 0x20
		f.Add(flipped)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, rec []byte) {
		n, lerr := recordLen(rec, int64(len(rec)))
		meta, perr := parseRecord(rec)
		m, derr := decodeRecord(rec, "t")
		if derr != nil {
			if !errors.Is(derr, errBadRecord) && !errors.Is(derr, errTornRecord) {
				t.Fatalf("decode error %v is neither torn nor bad", derr)
			}
			return
		}
		if perr != nil || lerr != nil || n != len(rec) || meta.size != len(rec) {
			t.Fatalf("decoded a record that parseRecord (%v) or recordLen (%d, %v) refuses", perr, n, lerr)
		}
		if m.Topic != meta.topic || m.Queue != meta.queue || m.Offset != meta.offset || m.Id != meta.id || m.StoredUnixNano != meta.stored {
			t.Fatalf("decoded %v, header says %+v", m, meta)
		}
		// What the fast decoder accepts, protobuf-go's decodes to the same.
		var std sdk.Message
		if err := proto.Unmarshal(rec[recordHeaderSize+len(meta.topic)+len(meta.id):], &std); err != nil {
			t.Fatalf("decoded a message protobuf-go refuses: %v", err)
		}
		if !bytes.Equal(std.Body, m.Body) || std.Key != m.Key || !maps.Equal(std.Headers, m.Headers) || std.BornUnixNano != m.BornUnixNano {
			t.Fatalf("decoded %v, protobuf-go %v", m, &std)
		}
		if h, ok := headerHint(rec); !ok && checkRecordQueue(meta) == nil {
			t.Fatalf("a good record's header gives no hint: %+v", h)
		}
	})
}

// seedSegment returns the file of a store's one segment holding records of
// two queues.
func seedSegment(f *testing.F) []byte {
	dataDir := f.TempDir()
	s := New()
	if err := s.Configure(ctxF(f), []byte(`{"preallocate": false}`), &sdk.Environment{DataDir: dataDir}); err != nil {
		f.Fatal(err)
	}
	for i := range 6 {
		w, err := s.Append(ctxF(f), []*sdk.Message{{Topic: "t", Queue: int32(i % 2), Id: fmt.Sprint(i), Body: []byte("payload payload")}})
		if err == nil {
			_, err = w(ctxF(f))
		}
		if err != nil {
			f.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, dirName, fmt.Sprintf(segmentNameFormat, 0)))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// Recovery of any bytes in one or two segment files never panics, never
// deletes a segment that holds a record, answers every offset of every
// queue with its message or ErrCorrupt, appends after the end, and is
// stable: a second open sees the queues the first one left.
func FuzzRecovery(f *testing.F) {
	seg := seedSegment(f)
	f.Add(seg, uint16(0))
	f.Add(seg, uint16(len(seg)/2))
	f.Add(seg[:len(seg)-5], uint16(0))
	for _, at := range []int{3, 17, segmentHeaderSize + 9, len(seg) / 2} {
		b := append([]byte(nil), seg...)
		b[at] ^= 0x08
		f.Add(b, uint16(0))
		f.Add(b, uint16(len(seg)/2))
	}
	f.Add(make([]byte, 40), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		dataDir := t.TempDir()
		dir := filepath.Join(dataDir, dirName)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		files := [][]byte{data}
		if s := int(split); s > segmentHeaderSize && s < len(data) {
			// A second segment, named by where the first one's data ends.
			second := append(segmentHeader(int64(s-segmentHeaderSize)), data[s:]...)
			files = [][]byte{data[:s], second}
		}
		base := int64(0)
		var withRecord []string
		for i, b := range files {
			if i == 1 {
				base = int64(len(files[0]) - segmentHeaderSize)
			}
			path := filepath.Join(dir, fmt.Sprintf(segmentNameFormat, base))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if f, err := os.Open(path); err == nil {
				if ok, _, _ := firstRecordValid(f); ok {
					withRecord = append(withRecord, path)
				}
				f.Close()
			}
		}
		config := `{"preallocate": false, "segment_bytes": "1MiB"}`
		s := New()
		if err := s.Configure(ctxF(t), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
			if !errors.Is(err, ErrIncompatible) {
				t.Fatalf("open refused with %v, want ErrIncompatible or success", err)
			}
			return
		}
		for _, path := range withRecord {
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("open deleted %s, which holds a valid record", path)
			}
		}
		state := func(s *Store) string {
			s.mu.RLock()
			defer s.mu.RUnlock()
			out := ""
			for _, k := range sortedKeys(s.queues) {
				q := s.queues[k]
				out += fmt.Sprintf("%s/%d:%d-%d ", k.topic, k.queue, q.start, q.end())
			}
			return out
		}
		s.mu.RLock()
		keys := sortedKeys(s.queues)
		s.mu.RUnlock()
		for _, k := range keys {
			o, err := s.GetOffsets(ctxF(t), "", []*sdk.QueueRef{{Topic: k.topic, Queue: k.queue}})
			if err != nil {
				t.Fatal(err)
			}
			for off := o[0].Start; off < o[0].End; off++ {
				resp, err := s.Read(ctxF(t), &sdk.ReadRequest{Topic: k.topic, Queue: k.queue, Offset: off, MaxMessages: 1})
				switch {
				case errors.Is(err, sdk.ErrCorrupt):
				case err != nil:
					t.Fatalf("read %s/%d@%d: %v", k.topic, k.queue, off, err)
				case len(resp.Messages) != 1 || resp.Messages[0].Offset != off:
					t.Fatalf("read %s/%d@%d gave %v", k.topic, k.queue, off, resp.Messages)
				}
			}
		}
		before := state(s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = New()
		if err := s.Configure(ctxF(t), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
			t.Fatalf("second open: %v", err)
		}
		defer s.Close()
		if after := state(s); after != before {
			t.Fatalf("recovery is not stable: first open left %q, the second sees %q", before, after)
		}
		if len(keys) > 0 {
			k := keys[0]
			o, _ := s.GetOffsets(ctxF(t), "", []*sdk.QueueRef{{Topic: k.topic, Queue: k.queue}})
			w, err := s.Append(ctxF(t), []*sdk.Message{{Topic: k.topic, Queue: k.queue, Id: "fuzz-new", Body: []byte("x")}})
			if err == nil {
				var offs []int64
				if offs, err = w(ctxF(t)); err == nil && offs[0] != o[0].End {
					t.Fatalf("append after recovery got offset %d, want the end %d", offs[0], o[0].End)
				}
			}
			if err != nil {
				t.Fatalf("append after recovery: %v", err)
			}
		}
	})
}

func sortedKeys(m map[queueKey]*queue) []queueKey {
	out := make([]queueKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && (out[j].topic < out[j-1].topic || out[j].topic == out[j-1].topic && out[j].queue < out[j-1].queue); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
