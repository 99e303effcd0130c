package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// TestGracefulStopAnswersLongPollAtOnce SIGTERMs `ferry run` while a
// consumer's long-poll fetch waits at the broker for messages (max wait
// 30 s, the transport's shutdown_timeout 60 s): the fetch is answered at
// once, OK and empty, and the node exits 0 well before the fetch's wait
// would have ended (issue 21). Before, the fetch held the transport's
// graceful drain for its whole max wait.
//
// "process group" signals the node's whole process group, as systemd and a
// terminal do: the transport plugin gets SIGTERM too, and must drain with
// the host instead of closing at once, which cut the fetch with a
// connection error (UNAVAILABLE) instead of its answer.
func TestGracefulStopAnswersLongPollAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group bool
	}{{"node", false}, {"process group", true}} {
		t.Run(tc.name, func(t *testing.T) { stopWithLongPoll(t, tc.group) })
	}
}

func stopWithLongPoll(t *testing.T, group bool) {
	dir := t.TempDir()
	addr, adminAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: drain-fetch
node: {data_dir: %q, shutdown_timeout: 90s}
admin: {listen: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 60s}}
topics: [{name: orders, queues: 1}]
`, filepath.Join(dir, "data"), adminAddr, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(dir, "node.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	node := exec.Command(ferryBin, "run", "--log-level", "info", yaml)
	node.Stdout, node.Stderr = logs, logs
	node.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	exited, gone := make(chan error, 1), make(chan struct{})
	go func() { exited <- node.Wait(); close(gone) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-node.Process.Pid, syscall.SIGKILL)
		<-gone
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("node log:\n%s", b)
		}
	})

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rpc := ferryv1.NewBrokerClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := rpc.Metadata(ctx, &ferryv1.MetadataRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("the node never answered: %v", err)
	}

	const maxWait = 30 * time.Second
	type answer struct {
		resp *ferryv1.FetchResponse
		err  error
		at   time.Time
	}
	fetched := make(chan answer, 1)
	go func() {
		resp, err := rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: "orders", Group: "g", MaxWaitNanos: int64(maxWait),
			Positions: []*ferryv1.FetchPosition{{Queue: 0, Offset: 0}}})
		fetched <- answer{resp, err, time.Now()}
	}()
	waitMetric(t, adminAddr, "ferry_fetches_waiting", "1", 60*time.Second)

	stopped := time.Now()
	if group {
		err = syscall.Kill(-node.Process.Pid, syscall.SIGTERM)
	} else {
		err = node.Process.Signal(syscall.SIGTERM)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The fetch's own wait would end maxWait after it began; an answer
	// within two thirds of it came from the drain.
	const within = 20 * time.Second
	select {
	case a := <-fetched:
		took := a.at.Sub(stopped)
		if a.err != nil {
			t.Fatalf("the waiting fetch was answered %v after SIGTERM with %v; want an OK (empty) answer", took.Round(time.Millisecond), a.err)
		}
		if len(a.resp.Messages) != 0 {
			t.Fatalf("the fetch got %d messages from an empty topic", len(a.resp.Messages))
		}
		if took > within {
			t.Fatalf("the waiting fetch was answered %v after SIGTERM; want at once (< %v; its max wait was %v)", took.Round(time.Millisecond), within, maxWait)
		}
		t.Logf("the waiting fetch was answered OK %v after SIGTERM", took.Round(time.Millisecond))
	case <-time.After(within):
		t.Fatalf("the waiting fetch was not answered within %v of SIGTERM (its max wait was %v)", within, maxWait)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("ferry run after SIGTERM: %v (want exit 0)", err)
		}
		if took := time.Since(stopped); took > within {
			t.Fatalf("ferry run took %v to stop after SIGTERM; want < %v", took.Round(time.Millisecond), within)
		}
		t.Logf("ferry run stopped %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	case <-time.After(within):
		t.Fatalf("ferry run still running %v after SIGTERM", within)
	}
}

// waitMetric waits until the admin listener's /metrics has name with value.
func waitMetric(t *testing.T, adminAddr, name, value string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := "no answer"
	for {
		if resp, err := http.Get("http://" + adminAddr + "/metrics"); err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				if f := strings.Fields(line); len(f) == 2 && (f[0] == name || strings.HasPrefix(f[0], name+"{")) {
					last = f[1]
				}
			}
			resp.Body.Close()
			if last == value {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s is %s after %v; want %s", name, last, within, value)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
