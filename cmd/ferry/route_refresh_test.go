package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// TestProducerPicksUpAddedQueues grows a topic from 2 to 4 queues with
// `ferry topic alter` while two producers of their own clients send to it
// through a real `ferry run`: the producer whose client refreshes its
// routes every 200ms (client.WithRouteRefresh) sends to the new queues 2
// and 3 without a new client or a reconnect; the one that refreshes every
// hour keeps to queues 0 and 1 (the control: it is the refresh that does
// it). Every send is answered OK (issue 15).
func TestProducerPicksUpAddedQueues(t *testing.T) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: route-refresh
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: orders, queues: 2}]
`, filepath.Join(dir, "data"), addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(dir, "node.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	node := exec.Command(ferryBin, "run", "--log-level", "warn", yaml)
	node.Stdout, node.Stderr = logs, logs
	node.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-node.Process.Pid, syscall.SIGTERM)
		_ = node.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("node log:\n%s", b)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dial := func(refresh time.Duration) *client.Client {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			c, err := client.Dial(ctx, addr, client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), client.WithRouteRefresh(refresh))
			if err == nil {
				t.Cleanup(func() { c.Close() })
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("dial %s: %v", addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fast, slow := dial(200*time.Millisecond), dial(time.Hour)

	type tally struct {
		mu     sync.Mutex
		queues map[int32]int
		errs   []error
	}
	var stop sync.WaitGroup
	done := make(chan struct{})
	send := func(c *client.Client, name string, tl *tally) {
		p := c.NewProducer(client.ProducerOptions{Selector: client.RoundRobin(), Timeout: 20 * time.Second})
		stop.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				res, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: fmt.Appendf(nil, "%s-%d", name, i)})
				tl.mu.Lock()
				if err != nil || res.Status != ferryv1.Status_STATUS_OK {
					tl.errs = append(tl.errs, fmt.Errorf("send %d: %v %v", i, res.Status, err))
				} else {
					tl.queues[res.Queue]++
				}
				tl.mu.Unlock()
			}
		})
	}
	ft, st := &tally{queues: map[int32]int{}}, &tally{queues: map[int32]int{}}
	send(fast, "fast", ft)
	send(slow, "slow", st)
	count := func(tl *tally, qs ...int32) int {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		n := 0
		for _, q := range qs {
			n += tl.queues[q]
		}
		return n
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after 60s waiting for %s (fast %v, slow %v)", what, ft.queues, st.queues)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitUntil("both producers sending", func() bool { return count(ft, 0, 1) >= 20 && count(st, 0, 1) >= 20 })
	if out, stderr, code := runFerry(t, nil, "topic", "alter", "orders", "--queues", "4", "--broker", addr); code != 0 {
		t.Fatalf("ferry topic alter: exit %d\n%s%s", code, out, stderr)
	}
	waitUntil("the refreshing producer's sends on queues 2 and 3", func() bool {
		ft.mu.Lock()
		defer ft.mu.Unlock()
		return ft.queues[2] >= 10 && ft.queues[3] >= 10
	})
	slowBefore := count(st, 0, 1)
	waitUntil("the other producer sending on", func() bool { return count(st, 0, 1) >= slowBefore+20 })
	close(done)
	stop.Wait()
	if n := count(st, 2, 3); n != 0 {
		t.Errorf("the producer refreshing every hour sent %d messages to the new queues; want 0 (the control)", n)
	}
	for _, tl := range []*tally{ft, st} {
		if len(tl.errs) > 0 {
			t.Errorf("%d sends not OK, first: %v", len(tl.errs), tl.errs[0])
		}
	}
	t.Logf("refreshing producer: %v; the other: %v", ft.queues, st.queues)
}
