package sdktest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

// logRecorder is a testing.TB whose Log lines are kept, so that a test can
// see what the suite's served plugins logged.
type logRecorder struct {
	testing.TB
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Log(args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprint(args...))
}

func (r *logRecorder) logged(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// A storage served over gRPC and stopped, as every grpc case of the suite
// does, logs nothing about its listener: go-plugin's server may report the
// listener that stop closes as an ERROR "grpc server: … use of closed
// network connection" (whether it does depends on which of the connection's
// close and the server's stop comes first), which the suite drops
// (dropClosedListener). The control: with the filter taken out, that line
// is logged within a few tries, so the test can see it.
func TestStoppedServerLogsNoClosedListener(t *testing.T) {
	const line = "use of closed network connection"
	// serve serves a store, appends to it, stops it and waits up to wait
	// for the line; it says whether it came and after how long.
	serve := func(t *testing.T, wait time.Duration) (bool, time.Duration) {
		rec := &logRecorder{TB: t}
		c, stop := ServeStorage(rec, memory.New())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Configure(ctx, []byte(`{}`), &sdk.Environment{DataDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		appended, err := c.Append(ctx, []*sdk.Message{{Topic: "t", Id: "a", Body: []byte("x")}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := appended(ctx); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		stop()
		// go-plugin logs the listener's end from its serving
		// goroutine; the suite's writer keeps lines until the test's
		// cleanup, so wait for it here (bounded).
		for !rec.logged(line) && time.Since(stopped) < wait {
			time.Sleep(10 * time.Millisecond)
		}
		return rec.logged(line), time.Since(stopped)
	}
	// The control first: how long the line takes to come bounds how long
	// the filtered runs wait for it.
	var took time.Duration
	t.Run("unfiltered", func(t *testing.T) {
		old := servedLog
		servedLog = func(w io.Writer) io.Writer { return w }
		t.Cleanup(func() { servedLog = old })
		for try := 1; try <= 10; try++ {
			var seen bool
			t.Run(fmt.Sprint(try), func(t *testing.T) { seen, took = serve(t, time.Second) })
			if seen {
				t.Logf("try %d: logged %s after the stop", try, took.Round(time.Millisecond))
				return
			}
		}
		t.Fatalf("without the filter no %q was logged in 10 tries: the test cannot see the line it checks for", line)
	})
	if t.Failed() {
		return
	}
	for try := 1; try <= 5; try++ {
		t.Run(fmt.Sprintf("filtered/%d", try), func(t *testing.T) {
			if seen, _ := serve(t, max(300*time.Millisecond, 10*took)); seen {
				t.Fatalf("a stopped plugin server logged %q: the suite's output misleads", line)
			}
		})
	}
}
