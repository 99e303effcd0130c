package file

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapshot hashes every file of a store directory.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		b, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[de.Name()] = sha256.Sum256(b)
	}
	return out
}

func runCheck(t *testing.T, dataDir string) (*CheckReport, string) {
	t.Helper()
	dir := filepath.Join(dataDir, dirName)
	before := snapshot(t, dir)
	r, err := Check(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("storage check changed the store")
	}
	var b bytes.Buffer
	r.Write(&b)
	return r, b.String()
}

// Issue 13.6: a healthy store checks clean, with a report per segment and
// queue; each kind of damage is found (the negative controls), named with
// what open does about it, and nothing is changed.
func TestStorageCheck(t *testing.T) {
	const n, queues = 120, 3
	fresh := func(t *testing.T) (string, []string) {
		dataDir := t.TempDir()
		return dataDir, writeStore(t, dataDir, n, queues)
	}

	t.Run("healthy", func(t *testing.T) {
		dataDir, files := fresh(t)
		r, out := runCheck(t, dataDir)
		if !r.OK() || len(r.Segments) != len(files) || len(r.Queues) != queues {
			t.Fatalf("healthy store: ok=%v, %d segments, %d queues\n%s", r.OK(), len(r.Segments), len(r.Queues), out)
		}
		total := 0
		for _, s := range r.Segments[:len(r.Segments)-1] {
			if s.Index != "ok" || s.Header != "ok" {
				t.Fatalf("segment %s: header %q index %q\n%s", s.Path, s.Header, s.Index, out)
			}
		}
		for _, s := range r.Segments {
			total += s.Records
		}
		for _, q := range r.Queues {
			if q.First != 0 || q.Next != n/queues || q.Records != n/queues || len(q.Lost) > 0 {
				t.Fatalf("queue %+v, want offsets 0..%d\n%s", q, n/queues-1, out)
			}
		}
		if total != n || !strings.Contains(out, "queue t/1: offsets 0..39, 40 records") || !strings.HasSuffix(out, "result: ok\n") {
			t.Fatalf("report:\n%s", out)
		}
	})

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, files []string)
		want   []string
	}{
		{"header", func(t *testing.T, files []string) {
			patchFile(t, files[1], func(b []byte) { b[17] ^= 1 })
		}, []string{"header: torn or damaged segment header: checksum mismatch (open rebuilds it from the file name"}},
		{"record in a sealed segment", func(t *testing.T, files []string) {
			patchFile(t, files[1], func(b []byte) { b[segmentHeaderSize+recordHeaderSize+10] ^= 1 })
		}, []string{"damaged: bytes 0..", "CRC mismatch; valid records follow (kept", "index: present: open reads it", "lost to damage: "}},
		{"record in the newest segment", func(t *testing.T, files []string) {
			patchFile(t, files[len(files)-1], func(b []byte) { b[segmentHeaderSize+recordHeaderSize+10] ^= 1 })
		}, []string{"damaged: bytes 0..", "lost to damage"}},
		{"torn tail", func(t *testing.T, files []string) {
			last := files[len(files)-1]
			st, _ := os.Stat(last)
			if err := os.Truncate(last, st.Size()-7); err != nil {
				t.Fatal(err)
			}
		}, []string{"torn tail: bytes", "nothing valid follows (open cuts it)"}},
		{"index", func(t *testing.T, files []string) {
			idx := indexPath(files[0])
			patchFile(t, idx, func(b []byte) {
				b[indexHeaderSize+20] ^= 1 // an offset in the first head
				binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
			})
		}, []string{"does not match the segment's records"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir, files := fresh(t)
			tc.damage(t, files)
			r, out := runCheck(t, dataDir)
			if r.OK() || !strings.Contains(out, "result: ") || strings.HasSuffix(out, "result: ok\n") {
				t.Fatalf("damage not reported:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Fatalf("report lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// The check sees what open then does: after damage, the offsets it reports
// lost are the ones the store answers CORRUPT for.
func TestStorageCheckAgreesWithOpen(t *testing.T) {
	dataDir := t.TempDir()
	files := writeStore(t, dataDir, 120, 3)
	for _, f := range files {
		_ = os.Remove(indexPath(f))
	}
	patchFile(t, files[1], func(b []byte) { b[segmentHeaderSize+recordHeaderSize+10] ^= 1 })
	patchFile(t, files[len(files)-1], func(b []byte) { b[segmentHeaderSize+recordHeaderSize+10] ^= 1 })
	r, out := runCheck(t, dataDir)
	lost := map[int32]string{}
	for _, q := range r.Queues {
		lost[q.Queue] = fmt.Sprint(q.Lost)
	}
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	for q := range int32(3) {
		_, holes := readAll(t, s, q)
		if got := fmt.Sprint(holes); got != lost[q] && !(got == "[]" && lost[q] == "[]") {
			t.Fatalf("queue %d: open answers CORRUPT for %s, check reported %s lost\n%s", q, got, lost[q], out)
		}
	}
}
