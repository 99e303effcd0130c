// Package ferrytest has what Ferry's own tests share: the ferry binary built
// once per test process (built-in plugins run by re-executing it) and free
// loopback ports.
package ferrytest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
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
		dir, err := os.MkdirTemp("", "ferrytest-bin")
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

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
