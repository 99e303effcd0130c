// Package ferrytest has what Ferry's own tests share: the ferry binary built
// once per test process (built-in plugins run by re-executing it) and free
// loopback ports.
//
// A package whose tests call Binary runs them through Main, which removes
// the builds when they end:
//
//	func TestMain(m *testing.M) { os.Exit(ferrytest.Main(m)) }
package ferrytest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/freeport"
)

var (
	buildMu sync.Mutex
	builds  = map[string]*build{}
)

type build struct {
	path string
	err  error
}

// Binary builds cmd/ferry once per test process and returns its path. The
// binary is built without the race detector: it runs plugin processes, and
// the code under test is the test process itself.
func Binary(tb testing.TB) string {
	tb.Helper()
	return BinaryWithTags(tb, "")
}

// BinaryWithTags is Binary built with build tags, e.g. "ferry_faults" for the
// fault-injection hooks that release builds do not have.
func BinaryWithTags(tb testing.TB, tags string) string {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	b := builds[tags]
	if b == nil {
		b = &build{}
		builds[tags] = b
		sweepBuilds()
		dir, err := os.MkdirTemp("", buildDirPattern)
		if err == nil {
			buildDirs = append(buildDirs, dir)
			err = os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
		}
		if err != nil {
			b.err = err
		} else {
			b.path = filepath.Join(dir, "ferry")
			args := []string{"build", "-o", b.path}
			if tags != "" {
				args = append(args, "-tags", tags)
			}
			out, err := exec.Command("go", append(args, "github.com/ferrymq/ferry/cmd/ferry")...).CombinedOutput()
			if err != nil {
				b.err = fmt.Errorf("go build ./cmd/ferry (tags %q): %v\n%s", tags, err, out)
			}
		}
	}
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.path
}

// buildDirPattern names the temporary directories Binary builds into;
// ownerFile in each holds the pid of the test process that made it.
const (
	buildDirPattern = "ferrytest-bin"
	ownerFile       = "owner.pid"
)

// buildDirs are this process's build directories, removed by RemoveBuilds.
var buildDirs []string

// Main runs a package's tests (m.Run) and then removes the ferry binaries
// Binary built for them; TestMain calls it. Its result is the exit code.
func Main(m *testing.M) int {
	code := m.Run()
	RemoveBuilds()
	return code
}

// RemoveBuilds removes the ferry binaries this process built (Main calls it
// after the tests); a later Binary builds afresh.
func RemoveBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	for _, d := range buildDirs {
		os.RemoveAll(d)
	}
	buildDirs = nil
	clear(builds)
}

// sweepBuilds removes the build directories that test processes which are
// gone left behind (killed, timed out, or run without Main): those whose
// owner pid no longer runs, and, from before owners were recorded, those
// without one that are over an hour old.
func sweepBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPattern+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() && time.Since(fi.ModTime()) > time.Hour {
				os.RemoveAll(d)
			}
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != os.Getpid() && !processAlive(pid) {
			os.RemoveAll(d)
		}
	}
}

// processAlive says whether a process with this pid exists (signal 0).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// FreeAddr returns a loopback host:port that was free a moment ago, that no
// other call in this process or (for 15 minutes) in another test process
// returned, and that lies below the kernel's ephemeral port range
// (internal/freeport, which sdktest and `ferry plugin test` use too).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	a, err := freeport.Addrs(1)
	if err != nil {
		tb.Fatal(err)
	}
	return a[0]
}
