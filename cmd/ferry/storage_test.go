package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// `ferry storage check DIR`: exit 0 and "result: ok" for a healthy store,
// 1 and the damage named for a damaged one, 2 for a directory it cannot
// read; it changes nothing.
func TestStorageCheckCommand(t *testing.T) {
	dataDir := t.TempDir()
	s := file.New()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Configure(ctx, []byte(`{"segment_bytes": "4KiB"}`), &sdk.Environment{DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		w, err := s.Append(ctx, []*sdk.Message{{Topic: "t", Queue: int32(i % 2), Id: fmt.Sprint(i), Body: []byte(strings.Repeat("b", 100))}})
		if err == nil {
			_, err = w(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runFerry(t, nil, "storage", "check", dataDir)
	if code != 0 || !strings.HasSuffix(out, "result: ok\n") || !strings.Contains(out, "queue t/0: offsets 0..29, 30 records") {
		t.Fatalf("healthy store: exit %d\n%s%s", code, out, errOut)
	}

	segs, _ := filepath.Glob(filepath.Join(dataDir, "storage-file", "*.log"))
	sort.Strings(segs)
	b, err := os.ReadFile(segs[1])
	if err != nil {
		t.Fatal(err)
	}
	b[32+50] ^= 0xff
	if err := os.WriteFile(segs[1], b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runFerry(t, nil, "storage", "check", filepath.Join(dataDir, "storage-file"))
	if code != 1 || !strings.Contains(out, "damaged: bytes 0..") || !strings.Contains(errOut, "problem(s)") {
		t.Fatalf("damaged store: exit %d\n%s%s", code, out, errOut)
	}
	if after, _ := os.ReadFile(segs[1]); string(after) != string(b) {
		t.Fatal("check changed the segment")
	}

	if _, errOut, code := runFerry(t, nil, "storage", "check", filepath.Join(dataDir, "nope")); code != 2 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("missing directory: exit %d %s", code, errOut)
	}
}

// `ferry consume --on-corrupt` takes stop, skip or dlq, nothing else.
func TestConsumeOnCorruptFlag(t *testing.T) {
	_, errOut, code := runFerry(t, nil, "consume", "--broker", "127.0.0.1:1", "--topic", "t", "--group", "g", "--on-corrupt", "ignore")
	if code != 2 || !strings.Contains(errOut, `--on-corrupt must be stop, skip or dlq, got "ignore"`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}
