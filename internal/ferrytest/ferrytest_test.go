package ferrytest

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/internal/freeport"
)

// FreeAddr hands out distinct, bindable loopback ports below the ephemeral
// range, where no outgoing connection can take them.
func TestFreeAddr(t *testing.T) {
	seen := map[string]bool{}
	low := freeport.EphemeralLow()
	for range 200 {
		a := FreeAddr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		if port, _ := strconv.Atoi(p); port >= low || port < 1024 {
			t.Fatalf("%s: port outside 1024..%d", a, low)
		}
	}
	l, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatalf("a free address cannot be bound: %v", err)
	}
	l.Close()
}

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// envBuildChild makes this test binary, run as a child by
// TestBinaryRemovedAfterTests, build the ferry binary and print its path.
const envBuildChild = "FERRYTEST_BUILD_CHILD"

func TestBuildChild(t *testing.T) {
	if os.Getenv(envBuildChild) == "" {
		t.Skip("run by TestBinaryRemovedAfterTests")
	}
	fmt.Println("BINARY", Binary(t))
}

// A test process that ran its tests through Main leaves no ferry binary in
// TMPDIR (each is ~32 MB; they piled up in ferrytest-bin* directories).
func TestBinaryRemovedAfterTests(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBuildChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envBuildChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var path string
	for l := range strings.Lines(string(out)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "BINARY "); ok {
			path = p
		}
	}
	if path == "" {
		t.Fatalf("the child printed no binary:\n%s", out)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the child's tests, its build %s is still there (stat: %v)", filepath.Dir(path), err)
	}
}

// A build directory whose owner process is gone is swept by the next build;
// one whose owner runs is kept.
func TestSweepBuilds(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(pid int) string {
		d, err := os.MkdirTemp("", buildDirPattern)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	dead, alive := mk(gone.Process.Pid), mk(os.Getppid())
	sweepBuilds()
	if _, err := os.Stat(dead); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s (owner %d gone) not swept: %v", dead, gone.Process.Pid, err)
	}
	if _, err := os.Stat(alive); err != nil {
		t.Errorf("%s (owner %d running) swept: %v", alive, os.Getppid(), err)
	}
}
