package file

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory and unmounts it
// at the end of the test (after the cleanups registered later). It skips the
// test where mounting is not permitted (not root).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file until the filesystem is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; i < 1<<20; i++ {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
	t.Fatal("the filesystem never filled")
	return ""
}

// Issue 13.5 on a real full filesystem (a tmpfs filled to ENOSPC): appends
// are refused with ErrFull and Full says so; once the filler is removed the
// store takes appends again by itself; nothing acknowledged is lost, in the
// open store and after a restart.
func TestFullTmpfs(t *testing.T) {
	for _, config := range []string{
		`{"segment_bytes": "64KiB"}`,
		`{"segment_bytes": "64KiB", "flush": "async", "preallocate": false}`,
	} {
		t.Run(config, func(t *testing.T) {
			dataDir := mountTmpfs(t, 2<<20)
			s := openStore(t, dataDir, config)
			body := []byte(strings.Repeat("b", 1000))
			msg := func(i int) *sdk.Message { return &sdk.Message{Id: fmt.Sprint("m", i), Topic: "t", Body: body} }
			acked := 0
			for ; acked < 100; acked++ {
				appendWait(t, s, msg(acked))
			}
			filler := fill(t, dataDir)
			var err error
			for i := 0; i < 5000 && err == nil; i++ {
				var w sdk.AppendWait
				if w, err = s.Append(ctx(t), []*sdk.Message{msg(acked)}); err == nil {
					if _, err = w(ctx(t)); err == nil {
						acked++
					}
				}
			}
			if !errors.Is(err, sdk.ErrFull) {
				t.Fatalf("appends into a full filesystem: %v, want ErrFull", err)
			}
			if full, _, _ := s.Full(); !full {
				t.Fatal("Full() is false on a full filesystem")
			}
			if _, err := s.Append(ctx(t), []*sdk.Message{msg(acked)}); !errors.Is(err, sdk.ErrFull) {
				t.Fatalf("append while full: %v, want ErrFull", err)
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, 60*time.Second, "the store to take appends again once there is space", func() bool {
				w, err := s.Append(ctx(t), []*sdk.Message{msg(acked)})
				if err == nil {
					_, err = w(ctx(t))
				}
				return err == nil
			})
			acked++
			check := func(s *Store) {
				t.Helper()
				got := readQueue(t, s, 0)
				if len(got) != acked {
					t.Fatalf("%d messages, want the %d acknowledged", len(got), acked)
				}
				for i, m := range got {
					if m.Id != msg(i).Id || string(m.Body) != string(body) {
						t.Fatalf("offset %d holds %s", i, m.Id)
					}
				}
			}
			check(s)
			if full, _, _ := s.Full(); full {
				t.Fatal("Full() still true after recovering")
			}
			_ = s.Close()
			check(openStore(t, dataDir, config))
		})
	}
}
