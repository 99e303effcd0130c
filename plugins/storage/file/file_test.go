package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
)

// These tests cover what is particular to the file store; the behaviour every
// store shares is checked by the conformance suite (conformance_test.go).

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// openStore configures a store on dataDir and closes it at the end of the
// test (unless the test closed it).
func openStore(t *testing.T, dataDir, config string) *Store {
	t.Helper()
	s, err := tryOpen(t, dataDir, config)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return s
}

func tryOpen(t *testing.T, dataDir, config string) (*Store, error) {
	s := newTestStore(t)
	if err := s.Configure(ctx(t), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, nil
}

func testMsg(queue int32, i int) *sdk.Message {
	return &sdk.Message{Id: fmt.Sprintf("id-%d-%d", queue, i), Topic: "t", Queue: queue, Body: []byte(strings.Repeat(fmt.Sprint(i), 100))}
}

func appendWait(t *testing.T, s sdk.Storage, msgs ...*sdk.Message) []int64 {
	t.Helper()
	w, err := s.Append(ctx(t), msgs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	offs, err := w(ctx(t))
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return offs
}

func readQueue(t *testing.T, s sdk.Storage, queue int32) []*sdk.Message {
	t.Helper()
	var out []*sdk.Message
	for off := int64(0); ; {
		resp, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: queue, Offset: off, MaxMessages: 1000})
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(resp.Messages) == 0 {
			return out
		}
		out = append(out, resp.Messages...)
		off = resp.Messages[len(resp.Messages)-1].Offset + 1
	}
}

func segments(t *testing.T, dataDir string) []string {
	t.Helper()
	files, err := dataFiles(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestConfigProblems(t *testing.T) {
	for _, c := range []struct {
		name   string
		config string
		want   []string // problem paths, in order
	}{
		{"empty", ``, nil},
		{"defaults spelled out", `{"flush": "sync", "group_commit_max_wait": "2ms", "flush_interval": "500ms", "flush_bytes": "4MiB",
			"flush_timeout": "5s", "segment_bytes": "64MiB", "retention_bytes": 0, "retention_age": "0s", "preallocate": true, "dir": ""}`, nil},
		{"every range wrong", `{"flush": "fast", "group_commit_max_wait": "1h", "flush_interval": "0s", "flush_bytes": 0,
			"flush_timeout": "-1s", "segment_bytes": "1KiB", "retention_age": "-1h"}`,
			[]string{"flush", "group_commit_max_wait", "flush_interval", "flush_bytes", "flush_timeout", "segment_bytes", "retention_age"}},
		{"unknown key and wrong types together", `{"segment_bytes": true, "flush_intervall": "1s", "flush_timeout": 5}`,
			[]string{"flush_intervall", "flush_timeout", "segment_bytes"}},
		{"not a mapping", `[1, 2]`, []string{""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ps := New().Validate([]byte(c.config))
			var got []string
			for _, p := range ps {
				got = append(got, p.Path)
				if p.Message == "" {
					t.Errorf("problem at %q has no message", p.Path)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("problem paths %q, want %q (problems: %v)", got, c.want, ps)
			}
			if len(ps) > 0 && !errors.Is(ps, sdk.ErrConfig) {
				t.Fatal("problems do not match sdk.ErrConfig")
			}
		})
	}
}

func TestConfigureDirectoryErrors(t *testing.T) {
	s := newTestStore(t)
	missing := filepath.Join(t.TempDir(), "no", "such")
	err := s.Configure(ctx(t), nil, &sdk.Environment{DataDir: missing})
	if err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Fatalf("Configure on a missing data dir: %v, want an error naming the data directory", err)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err = newTestStore(t).Configure(ctx(t), nil, &sdk.Environment{DataDir: notDir})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Configure on a data dir that is a file: %v, want 'not a directory'", err)
	}
	err = New().Configure(ctx(t), nil, &sdk.Environment{})
	if !errors.Is(err, sdk.ErrConfig) {
		t.Fatalf("Configure without dir nor data_dir: %v, want ErrConfig", err)
	}
	// dir overrides the data dir.
	dir := filepath.Join(t.TempDir(), "mine")
	s = openStore(t, missing, fmt.Sprintf(`{"dir": %q}`, dir))
	appendWait(t, s, testMsg(0, 0))
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf(segmentNameFormat, 0))); err != nil {
		t.Fatalf("no segment in the configured dir: %v", err)
	}
}

func TestReadOnlyDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes to read-only directories")
	}
	dataDir := t.TempDir()
	if err := os.Chmod(dataDir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dataDir, 0o700)
	_, err := tryOpen(t, dataDir, "")
	if err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("Configure on a read-only dir: %v, want 'not writable'", err)
	}
}

// Two stores (or processes: flock is per open file) cannot open one
// directory; the second gets a clear error, and can open after the first
// closed.
func TestLockedByAnotherStore(t *testing.T) {
	dataDir := t.TempDir()
	first := openStore(t, dataDir, "")
	appendWait(t, first, testMsg(0, 0))
	_, err := tryOpen(t, dataDir, "")
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v, want an 'in use' error", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := openStore(t, dataDir, "")
	if got := readQueue(t, second, 0); len(got) != 1 {
		t.Fatalf("after the first closed, the second reads %d messages, want 1", len(got))
	}
}

// A store written by another format version is refused before anything is
// changed.
func TestIncompatibleVersion(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	for i := range 20 {
		appendWait(t, s, testMsg(0, i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := segments(t, dataDir)
	if len(files) < 2 {
		t.Fatalf("%d segments, want several", len(files))
	}
	newest := files[len(files)-1]
	data, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(data[8:], formatVersion+1)
	binary.LittleEndian.PutUint32(data[24:], crc32.Checksum(data[:24], castagnoli))
	if err := os.WriteFile(newest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = tryOpen(t, dataDir, `{"segment_bytes": "4KiB"}`)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("open of a version-2 segment: %v, want ErrIncompatible naming version 2", err)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("refused open changed the store: %v", err)
		}
	}
	if after, _ := os.ReadFile(newest); len(after) != len(data) {
		t.Fatal("refused open changed the segment")
	}

	// Not a segment at all.
	other := t.TempDir()
	if err := os.MkdirAll(filepath.Join(other, dirName), 0o755); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(other, dirName, fmt.Sprintf(segmentNameFormat, 0))
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a segment ", 10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tryOpen(t, other, ""); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("open of a foreign file: %v, want ErrIncompatible", err)
	}
}

// Under flush: sync, what an append was acknowledged for survives a crash that
// loses the page cache; what was only written is lost whole, and the store
// recovers to a consistent log. The append whose fsync does not come in time
// is answered FLUSH_TIMEOUT with its offsets.
func TestSyncCrashKeepsAcknowledged(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, `{"flush": "sync", "segment_bytes": "8KiB"}`)
	var acked []*sdk.Message
	for i := range 30 {
		m := testMsg(int32(i%2), i)
		appendWait(t, s, m)
		acked = append(acked, m)
	}
	gate := make(chan struct{})
	s.beforeSync = func() { <-gate }
	w, err := s.Append(ctx(t), []*sdk.Message{testMsg(0, 100), testMsg(1, 101)})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	offs, err := w(short)
	if !errors.Is(err, sdk.ErrFlushTimeout) || fmt.Sprint(offs) != "[15 15]" {
		t.Fatalf("wait with the fsync held: %v %v, want offsets [15 15] with ErrFlushTimeout", offs, err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		close(gate)
	}()
	if err := s.CrashLoseUnflushed(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dataDir, `{"flush": "sync", "segment_bytes": "8KiB"}`)
	for q := range int32(2) {
		got := readQueue(t, s, q)
		if len(got) != 15 {
			t.Fatalf("queue %d after the crash: %d messages, want the 15 acknowledged", q, len(got))
		}
		for i, m := range got {
			want := acked[2*i+int(q)]
			if m.Id != want.Id || string(m.Body) != string(want.Body) {
				t.Fatalf("queue %d offset %d: %s, want %s", q, i, m.Id, want.Id)
			}
		}
	}
	// The lost messages are not in the de-dup window: the retry stores them.
	if offs := appendWait(t, s, testMsg(0, 100), testMsg(1, 101)); fmt.Sprint(offs) != "[15 15]" {
		t.Fatalf("retry of the lost batch got %v, want [15 15]", offs)
	}
}

// Under flush: async, appends are answered once written; a machine crash
// before the interval's fsync loses them, and recovery finds the zeros or the
// cut file and starts over cleanly.
func TestAsyncCrashLosesUnsynced(t *testing.T) {
	for _, prealloc := range []bool{false, true} {
		t.Run(fmt.Sprintf("preallocate=%v", prealloc), func(t *testing.T) {
			dataDir := t.TempDir()
			config := fmt.Sprintf(`{"flush": "async", "flush_interval": "1h", "preallocate": %v}`, prealloc)
			s := openStore(t, dataDir, config)
			for i := range 10 {
				appendWait(t, s, testMsg(0, i))
			}
			if got := readQueue(t, s, 0); len(got) != 10 {
				t.Fatalf("before the crash: %d messages readable, want 10 (async reads see written data)", len(got))
			}
			if err := s.CrashLoseUnflushed(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, dataDir, config)
			if got := readQueue(t, s, 0); len(got) != 0 {
				t.Fatalf("after the crash: %d messages, want 0 (none was fsynced)", len(got))
			}
			if offs := appendWait(t, s, testMsg(0, 0)); offs[0] != 0 {
				t.Fatalf("first append after the crash got offset %d, want 0", offs[0])
			}
		})
	}
}

// FLUSH_TIMEOUT crosses the plugin boundary as a status with offsets.
func TestFlushTimeoutOverGRPC(t *testing.T) {
	s := newTestStore(t)
	gate := make(chan struct{})
	client, stop := sdktest.ServeStorage(t, s)
	if err := client.Configure(ctx(t), []byte(`{"flush_timeout": "50ms"}`), &sdk.Environment{DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	appendWait(t, client, testMsg(0, 0))
	s.beforeSync = func() { <-gate }
	w, err := client.Append(ctx(t), []*sdk.Message{testMsg(0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	offs, err := w(ctx(t))
	if !errors.Is(err, sdk.ErrFlushTimeout) || fmt.Sprint(offs) != "[1]" {
		t.Fatalf("append whose fsync is held past flush_timeout: %v %v, want [1] with ErrFlushTimeout", offs, err)
	}
	close(gate)
	stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A full disk (ENOSPC) is sdk.ErrFull for the appends it hits and every one
// after, and Full says so; once there is space again the store recovers by
// itself, without a restart; what was stored before is intact. (Here the
// full disk is /dev/full behind the createFile hook; TestFullTmpfs fills a
// real filesystem.)
func TestDiskFull(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB", "preallocate": false}`
	s := openStore(t, dataDir, config)
	appendWait(t, s, testMsg(0, 0))
	// The next segment file lands on a device that is always full.
	var full atomic.Bool
	full.Store(true)
	create := s.createFile
	s.createFile = func(name string) (*os.File, error) {
		if full.Load() {
			return os.OpenFile("/dev/full", os.O_WRONLY, 0)
		}
		return create(name)
	}
	var err error
	stored := 1
	for i := 1; i < 100 && err == nil; i++ {
		var w sdk.AppendWait
		if w, err = s.Append(ctx(t), []*sdk.Message{testMsg(0, i)}); err == nil {
			if _, err = w(ctx(t)); err == nil {
				stored++
			}
		}
	}
	if !errors.Is(err, sdk.ErrFull) {
		t.Fatalf("appends into a full disk: %v, want ErrFull", err)
	}
	if _, err := s.Append(ctx(t), []*sdk.Message{testMsg(0, 1000)}); !errors.Is(err, sdk.ErrFull) {
		t.Fatalf("append after the disk filled: %v, want ErrFull", err)
	}
	if isFull, since, err := s.Full(); !isFull || since.IsZero() || !errors.Is(err, sdk.ErrFull) {
		t.Fatalf("Full() = %v, %v, %v while full", isFull, since, err)
	}
	// Space again: appends are taken again, with the next offsets.
	full.Store(false)
	waitUntil(t, 60*time.Second, "the store to take appends again", func() bool {
		w, err := s.Append(ctx(t), []*sdk.Message{testMsg(0, stored)})
		if err == nil {
			_, err = w(ctx(t))
		}
		return err == nil
	})
	if isFull, _, _ := s.Full(); isFull {
		t.Fatal("Full() still true after the store recovered")
	}
	got := readQueue(t, s, 0)
	if len(got) != stored+1 || got[stored].Id != testMsg(0, stored).Id {
		t.Fatalf("after recovering: %d messages, want the %d stored before the disk filled and the new one", len(got), stored)
	}
	_ = s.Close()
	s = openStore(t, dataDir, config)
	if got := readQueue(t, s, 0); len(got) != stored+1 {
		t.Fatalf("after a restart: %d messages, want %d", len(got), stored+1)
	}
}

// waitUntil polls cond every 20ms until it holds, or fails the test.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A record damaged while the store is open (the disk returns other bytes) is
// answered sdk.ErrCorrupt, never delivered.
func TestReadDetectsCorruption(t *testing.T) {
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
	// A read across it gives the records before it; a read from it is
	// ErrCorrupt naming the offset; the record after it is readable.
	resp, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 0, MaxMessages: 10})
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("read across a damaged record: %v, %d messages; want the 1 before it", err, len(resp.Messages))
	}
	_, err = s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 1, MaxMessages: 10})
	if !errors.Is(err, sdk.ErrCorrupt) || !strings.Contains(err.Error(), "t/0 offset 1") {
		t.Fatalf("read from a damaged record: %v, want ErrCorrupt naming t/0 offset 1", err)
	}
	resp, err = s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: 2, MaxMessages: 10})
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("read of the good record after it: %v, %d messages", err, len(resp.Messages))
	}
}

// Retention deletes whole old segments; a queue whose messages all expired
// keeps its offsets across a restart, so consumers never see offsets reused.
func TestRetentionKeepsOffsetsAcrossRestart(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB", "retention_bytes": "12KiB"}`
	s := openStore(t, dataDir, config)
	for i := range 20 {
		appendWait(t, s, testMsg(0, i))
	}
	for i := range 200 {
		appendWait(t, s, testMsg(1, i))
	}
	// The janitor moves the queue starts before it removes the files:
	// wait for both.
	deadline := time.Now().Add(30 * time.Second)
	for {
		o, err := s.GetOffsets(ctx(t), "", []*sdk.QueueRef{{Topic: "t", Queue: 0}})
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, f := range segments(t, dataDir) {
			if st, err := os.Stat(f); err == nil {
				total += st.Size()
			}
		}
		if o[0].Start == 20 && total <= 20<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue 0 offsets %v and %d bytes of segments kept under retention_bytes 12KiB; want start = end = 20 and at most 20KiB", o[0], total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = s.Close()
	s = openStore(t, dataDir, config)
	o, err := s.GetOffsets(ctx(t), "", []*sdk.QueueRef{{Topic: "t", Queue: 0}})
	if err != nil {
		t.Fatal(err)
	}
	if o[0].Start != 20 || o[0].End != 20 {
		t.Fatalf("after a restart queue 0 is %d..%d, want 20..20", o[0].Start, o[0].End)
	}
	if offs := appendWait(t, s, testMsg(0, 20)); offs[0] != 20 {
		t.Fatalf("next append to the expired queue got offset %d, want 20", offs[0])
	}
}

// Segment files roll at segment_bytes, are named by their log position, and
// a preallocated spare is used for the next one.
func TestSegmentsRoll(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB", "preallocate": true}`)
	for i := range 50 {
		appendWait(t, s, testMsg(int32(i%3), i))
	}
	files := segments(t, dataDir)
	if len(files) < 3 {
		t.Fatalf("%d segments after ~12KiB in 4KiB segments", len(files))
	}
	for i, f := range files[:len(files)-1] {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 4<<10 {
			t.Fatalf("segment %d is %d bytes, more than segment_bytes", i, st.Size())
		}
	}
	_ = s.Close()
	s = openStore(t, dataDir, `{"segment_bytes": "4KiB"}`)
	total := 0
	for q := range int32(3) {
		total += len(readQueue(t, s, q))
	}
	if total != 50 {
		t.Fatalf("after reopen: %d messages, want 50", total)
	}
}

// Reads, appends, retention deleting segments and offset commits all at once,
// for the race detector: no read fails or returns a message out of place.
func TestConcurrentReadsDuringRetention(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, `{"segment_bytes": "4KiB", "retention_bytes": "16KiB", "flush": "async", "flush_interval": "5ms"}`)
	done := make(chan struct{})
	errs := make(chan error, 3)
	for r := range 2 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				resp, err := s.Read(context.Background(), &sdk.ReadRequest{Topic: "t", Queue: 0, Offset: int64(r), MaxMessages: 50})
				if err != nil {
					errs <- err
					return
				}
				for i, m := range resp.Messages {
					if i > 0 && m.Offset != resp.Messages[i-1].Offset+1 {
						errs <- fmt.Errorf("read returned offsets %d then %d", resp.Messages[i-1].Offset, m.Offset)
						return
					}
					if want := testMsg(0, int(m.Offset)); m.Id != want.Id || string(m.Body) != string(want.Body) {
						errs <- fmt.Errorf("offset %d holds %s", m.Offset, m.Id)
						return
					}
				}
			}
		}()
	}
	go func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				errs <- nil
				return
			default:
			}
			if err := s.CommitOffsets(context.Background(), "g", []*sdk.GroupOffset{{Topic: "t", Offset: int64(i)}}); err != nil {
				errs <- err
				return
			}
		}
	}()
	for i := range 400 {
		appendWait(t, s, testMsg(0, i))
	}
	close(done)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	o, err := s.GetOffsets(ctx(t), "g", []*sdk.QueueRef{{Topic: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	if o[0].Start == 0 || o[0].End != 400 {
		t.Fatalf("offsets %v after 400 appends under retention, want start > 0 and end 400", o[0])
	}
}

// Sealed segments get index files; a restart reads them instead of the
// segments and ends up with the same queues, offsets and de-dup window. A
// damaged or missing index is ignored (the segment is scanned) and rewritten.
func TestRecoveryFromSegmentIndexes(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB"}`
	s := openStore(t, dataDir, config)
	for i := range 60 {
		appendWait(t, s, testMsg(int32(i%3), i))
	}
	_ = s.Close()
	files := segments(t, dataDir)
	for _, f := range files[:len(files)-1] {
		if _, err := os.Stat(indexPath(f)); err != nil {
			t.Fatalf("sealed segment %s has no index: %v", f, err)
		}
	}
	if _, err := os.Stat(indexPath(files[len(files)-1])); err == nil {
		t.Fatal("the segment being written has an index")
	}
	check := func(s *Store) {
		t.Helper()
		for q := range int32(3) {
			got := readQueue(t, s, q)
			if len(got) != 20 {
				t.Fatalf("queue %d: %d messages, want 20", q, len(got))
			}
			for i, m := range got {
				if want := testMsg(q, 3*i+int(q)); m.Id != want.Id || string(m.Body) != string(want.Body) {
					t.Fatalf("queue %d offset %d: %s, want %s", q, i, m.Id, want.Id)
				}
			}
		}
		// The de-dup window came back too.
		if offs := appendWait(t, s, testMsg(0, 0), testMsg(1, 1)); fmt.Sprint(offs) != "[0 0]" {
			t.Fatalf("retry of the first messages got %v, want [0 0]", offs)
		}
	}
	s = openStore(t, dataDir, config)
	check(s)
	_ = s.Close()

	// Damage one index, remove another: both segments are scanned and
	// their indexes written again.
	idx := indexPath(files[0])
	b, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	b[indexHeaderSize+5] ^= 0xff
	if err := os.WriteFile(idx, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(indexPath(files[1])); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dataDir, config)
	check(s)
	for _, f := range files[:2] {
		if _, err := os.Stat(indexPath(f)); err != nil {
			t.Fatalf("index of %s not rewritten: %v", f, err)
		}
	}
}

// Damage to a sealed, indexed segment is not seen by recovery (which reads
// the index) but by the read: sdk.ErrCorrupt, never the damaged message, and
// the rest of the log stays readable.
func TestIndexedSegmentDamage(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB"}`
	s := openStore(t, dataDir, config)
	for i := range 40 {
		appendWait(t, s, testMsg(0, i))
	}
	_ = s.Close()
	files := segments(t, dataDir)
	data, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	data[segmentHeaderSize+recordHeaderSize+10] ^= 1
	if err := os.WriteFile(files[1], data, 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dataDir, config)
	o, err := s.GetOffsets(ctx(t), "", []*sdk.QueueRef{{Topic: "t"}})
	if err != nil || o[0].End != 40 {
		t.Fatalf("offsets %v, %v: want end 40", o, err)
	}
	var bad int64 = -1
	for off := int64(0); off < 40; off++ {
		resp, err := s.Read(ctx(t), &sdk.ReadRequest{Topic: "t", Offset: off, MaxMessages: 1})
		switch {
		case errors.Is(err, sdk.ErrCorrupt):
			if bad >= 0 {
				t.Fatalf("offsets %d and %d both corrupt, one record was damaged", bad, off)
			}
			bad = off
		case err != nil:
			t.Fatal(err)
		case resp.Messages[0].Id != testMsg(0, int(off)).Id:
			t.Fatalf("offset %d holds %s", off, resp.Messages[0].Id)
		}
	}
	if bad < 0 {
		t.Fatal("the damaged record was delivered")
	}
}

// Crash after crash, with appends on several queues in between: every
// acknowledged message (flush: sync) is there after each restart, what is
// there is intact, in order and dense, and nothing unacknowledged turns into
// damage. Batches not waited for when the crash comes may or may not be
// there, but only as a whole prefix of the log.
func TestRepeatedCrashes(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"flush": "sync", "segment_bytes": "8KiB", "group_commit_max_wait": "0s"}`
	rng := uint32(12345)
	next := func(n int) int {
		rng ^= rng << 13
		rng ^= rng >> 17
		rng ^= rng << 5
		return int(rng % uint32(n))
	}
	bodies := map[string]string{}
	var log [3][]string // per queue: ids in offset order, as appended
	var acked [3]int    // per queue: how many of log are acknowledged
	seq, lost := 0, 0
	for round := range 15 {
		s := openStore(t, dataDir, config)
		for q := range 3 {
			got := readQueue(t, s, int32(q))
			if len(got) < acked[q] || len(got) > len(log[q]) {
				t.Fatalf("round %d queue %d: %d messages, want %d..%d", round, q, len(got), acked[q], len(log[q]))
			}
			for i, m := range got {
				if m.Offset != int64(i) || m.Id != log[q][i] || string(m.Body) != bodies[m.Id] {
					t.Fatalf("round %d queue %d offset %d: %s@%d, want %s", round, q, i, m.Id, m.Offset, log[q][i])
				}
			}
			lost += len(log[q]) - len(got)
			log[q] = log[q][:len(got)]
			acked[q] = len(got)
		}
		for range 5 + next(20) {
			var batch []*sdk.Message
			var want []int64
			for range 1 + next(5) {
				seq++
				q := next(3)
				m := &sdk.Message{Id: fmt.Sprintf("m%d", seq), Topic: "t", Queue: int32(q),
					Body: []byte(strings.Repeat(fmt.Sprintf("%d.", seq), 1+next(200)))}
				bodies[m.Id] = string(m.Body)
				want = append(want, int64(len(log[q])))
				log[q] = append(log[q], m.Id)
				batch = append(batch, m)
			}
			w, err := s.Append(ctx(t), batch)
			if err != nil {
				t.Fatal(err)
			}
			if next(4) == 0 {
				continue // not waited for: the crash may come first
			}
			offs, err := w(ctx(t))
			if err != nil || fmt.Sprint(offs) != fmt.Sprint(want) {
				t.Fatalf("round %d: wait = %v, %v; want %v", round, offs, err, want)
			}
			// Durable up to this batch means the whole log before it.
			for q := range 3 {
				acked[q] = len(log[q])
			}
		}
		if err := s.CrashLoseUnflushed(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d messages appended, %d lost to crashes before their fsync", seq, lost)
}

// The newest segment cut at every position of its last records: each open
// recovers exactly the whole records before the cut.
func TestTornTailAtEveryPosition(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "64KiB"}`
	s := openStore(t, dataDir, config)
	for i := range 6 {
		appendWait(t, s, testMsg(0, i))
	}
	s.mu.RLock()
	ents := append([]entry(nil), s.queues[queueKey{"t", 0}].ents...)
	s.mu.RUnlock()
	_ = s.Close()
	seg := segments(t, dataDir)[0]
	orig, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	from := segmentHeaderSize + ents[3].pos
	for cut := int64(len(orig)); cut >= from; cut -= 7 {
		if err := os.WriteFile(seg, orig[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		whole := 0
		for _, e := range ents {
			if segmentHeaderSize+e.pos+int64(e.size) <= cut {
				whole++
			}
		}
		s := openStore(t, dataDir, config)
		got := readQueue(t, s, 0)
		if len(got) != whole {
			t.Fatalf("file cut at %d: %d messages, want the %d whole ones", cut, len(got), whole)
		}
		_ = s.Close()
	}
}

// A message that cannot fit a segment is refused whole: the batch stores
// nothing.
func TestMessageLargerThanSegment(t *testing.T) {
	s := openStore(t, t.TempDir(), `{"segment_bytes": "4KiB"}`)
	big := &sdk.Message{Id: "big", Topic: "t", Body: make([]byte, 5000)}
	_, err := s.Append(ctx(t), []*sdk.Message{testMsg(0, 0), big})
	if !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Fatalf("append of a 5000-byte body into 4KiB segments: %v, want ErrInvalidArgument", err)
	}
	if got := readQueue(t, s, 0); len(got) != 0 {
		t.Fatalf("the refused batch stored %d messages", len(got))
	}
	ok := &sdk.Message{Id: "fits", Topic: "t", Body: make([]byte, 3500)}
	if offs := appendWait(t, s, ok); offs[0] != 0 {
		t.Fatalf("a message that fits got offset %d", offs[0])
	}
}

// Many groups committing at once share file writes, and every commit is in
// the file when it returns.
func TestConcurrentCommits(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, "")
	const groups, commits = 8, 25
	for i := range commits {
		// Committed offsets within the queues' ends (a commit past
		// the end is moved back at open: TestCommitPastEndClampedAtOpen).
		appendWait(t, s, testMsg(0, i), testMsg(1, i))
	}
	errs := make(chan error, groups)
	for g := range groups {
		go func() {
			for i := range commits {
				if err := s.CommitOffsets(context.Background(), fmt.Sprintf("g%d", g), []*sdk.GroupOffset{{Topic: "t", Queue: int32(g % 2), Offset: int64(i)}}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range groups {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	s = openStore(t, dataDir, "")
	for g := range groups {
		o, err := s.GetOffsets(ctx(t), fmt.Sprintf("g%d", g), []*sdk.QueueRef{{Topic: "t", Queue: int32(g % 2)}})
		if err != nil || o[0].Committed != commits-1 {
			t.Fatalf("group g%d after reopen: %v %v, want committed %d", g, o, err, commits-1)
		}
	}
}

// A crash between renaming the preallocated spare into place and writing its
// header leaves a newest segment of zeros: recovery drops it and goes on.
func TestCrashWhileRollingIntoSpare(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"segment_bytes": "4KiB", "preallocate": true}`
	s := openStore(t, dataDir, config)
	for i := range 10 {
		appendWait(t, s, testMsg(0, i))
	}
	_ = s.Close()
	files := segments(t, dataDir)
	last := files[len(files)-1]
	base, _ := strconv.ParseInt(strings.TrimSuffix(filepath.Base(last), segmentSuffix), 10, 64)
	st, _ := os.Stat(last)
	next := filepath.Join(filepath.Dir(last), fmt.Sprintf(segmentNameFormat, base+st.Size()-segmentHeaderSize))
	if err := os.WriteFile(next, make([]byte, 4<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dataDir, config)
	if got := readQueue(t, s, 0); len(got) != 10 {
		t.Fatalf("after the interrupted roll: %d messages, want 10", len(got))
	}
	if _, err := os.Stat(next); err == nil {
		t.Fatal("the zero segment was kept")
	}
	if offs := appendWait(t, s, testMsg(0, 10)); offs[0] != 10 {
		t.Fatalf("next append got offset %d, want 10", offs[0])
	}
}

// After a crash the newest segment can hold zeros (a page that never reached
// the disk) followed by a whole later record. Recovery stops at the zeros;
// the record behind them must go too, or it would line up behind the next
// append of the same size and come back as a message nobody stored.
func TestStaleRecordBehindZerosIsCut(t *testing.T) {
	dataDir := t.TempDir()
	config := `{"preallocate": false}`
	s := openStore(t, dataDir, config)
	for i := range 5 {
		appendWait(t, s, testMsg(0, i))
	}
	_ = s.Close()
	seg := segments(t, dataDir)[0]
	retry := testMsg(0, 5) // what the next process will append at offset 5
	size := len(mustRecord(t, retry, 5))
	stale := mustRecord(t, &sdk.Message{Id: "ghost", Topic: "t", Body: []byte("never acknowledged")}, 6)
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(append(make([]byte, size), stale...)); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()

	s = openStore(t, dataDir, config)
	if got := readQueue(t, s, 0); len(got) != 5 {
		t.Fatalf("after the crash: %d messages, want 5", len(got))
	}
	if offs := appendWait(t, s, retry); offs[0] != 5 {
		t.Fatalf("append got offset %d, want 5", offs[0])
	}
	kill(s)
	s = openStore(t, dataDir, config)
	got := readQueue(t, s, 0)
	if len(got) != 6 {
		t.Fatalf("after the second crash: %d messages (last %s), want 6", len(got), got[len(got)-1].Id)
	}
}

func mustRecord(t *testing.T, m *sdk.Message, offset int64) []byte {
	t.Helper()
	b, err := appendRecord(nil, m, offset, 1)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kill stops s the way kill -9 stops its process: nothing more is written,
// nothing is cut or trimmed, what was written stays in the files.
func kill(s *Store) {
	s.mu.Lock()
	s.closed = true
	s.crashed.Store(true)
	s.mu.Unlock()
	close(s.closing)
	s.life.Lock()
	defer s.life.Unlock()
	s.stopLoops()
	for _, g := range s.segs {
		g.release()
	}
	_ = s.lock.Close()
}

// When the plugin process dies (not the machine), what it wrote but had not
// fsynced is still in the page cache: the next process recovers it, makes it
// durable, and the broker's retry of the unanswered batch gets the original
// offsets, stored once.
func TestProcessKillBeforeFsync(t *testing.T) {
	dataDir := t.TempDir()
	s := openStore(t, dataDir, `{"flush": "sync"}`)
	appendWait(t, s, testMsg(0, 0))
	gate, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.beforeSync = func() { // the flusher has written the batch
		once.Do(func() { close(held) })
		<-gate
	}
	batch := []*sdk.Message{testMsg(0, 1), testMsg(1, 2)}
	if _, err := s.Append(ctx(t), batch); err != nil {
		t.Fatal(err)
	}
	<-held
	go func() {
		time.Sleep(20 * time.Millisecond) // kill has marked the store crashed
		close(gate)
	}()
	kill(s)

	s = openStore(t, dataDir, `{"flush": "sync"}`)
	offs := appendWait(t, s, batch...)
	if fmt.Sprint(offs) != "[1 0]" {
		t.Fatalf("retry after the kill got %v, want the original [1 0]", offs)
	}
	if n := len(readQueue(t, s, 0)); n != 2 {
		t.Fatalf("queue 0 holds %d messages, want 2 (stored once)", n)
	}
}
