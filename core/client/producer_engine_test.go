package client_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// The tests in this file run real broker nodes: core/engine with the file
// storage and grpc transport plugins in their own processes (or `ferry run`
// as a process of its own where the broker is killed).

const prodQueues = 4

// prodNodeYAML is a broker pipeline on listen with file storage in dir.
func prodNodeYAML(dir, listen, flush string) string {
	return fmt.Sprintf(`name: producer-test
node: {data_dir: %q}
plugins:
  mode: subprocess
  storage: {type: file, config: {flush: %s}}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: [{name: t, queues: %d}]
`, dir, flush, listen, prodQueues)
}

// startProdNode starts a broker node in this process (its plugins in their own)
// and returns it with a function that stops it (also run at cleanup).
func startProdNode(t testing.TB, dir, listen, flush string) (*engine.Engine, func()) {
	t.Helper()
	cfg, err := config.LoadBytes(filepath.Join(dir, "node.yaml"), []byte(prodNodeYAML(dir, listen, flush)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Start(context.Background(), cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: io.Discard}),
	})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := e.Close(ctx); err != nil {
				t.Errorf("close node: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return e, stop
}

// stored reads every message of topic t from the broker at addr and returns
// the id at each (queue, offset).
func storedIDs(t testing.TB, addr string) map[[2]int64]string {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rpc := ferryv1.NewBrokerClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := map[[2]int64]string{}
	for q := range int32(prodQueues) {
		offs, err := rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Queues: []*ferryv1.QueueRef{{Topic: "t", Queue: q}}}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		end := offs.Offsets[0].End
		for off := offs.Offsets[0].Start; off < end; {
			resp, err := rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: "t", Positions: []*ferryv1.FetchPosition{{Queue: q, Offset: off}}, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Messages) == 0 {
				t.Fatalf("queue %d: fetch at %d of %d returned nothing", q, off, end)
			}
			for _, m := range resp.Messages {
				out[[2]int64{int64(q), m.Offset}] = m.Id
				off = m.Offset + 1
			}
		}
	}
	return out
}

func dialProdNode(t testing.TB, addrs ...string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialCluster(ctx, addrs, client.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// All three send modes against a node whose plugins are processes of their
// own: every acknowledged message is at the offset its result names, and
// every oneway message arrives.
func TestSendModesAgainstSubprocessPlugins(t *testing.T) {
	e, _ := startProdNode(t, t.TempDir(), ferrytest.FreeAddr(t), "sync")
	c := dialProdNode(t, e.Address())
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{})
	body := make([]byte, 1024)
	var results []client.Result

	for range 200 {
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: body})
		if err != nil {
			t.Fatalf("SendSync: %v", err)
		}
		results = append(results, r)
	}

	o := newOutcomes(t)
	for i := range 2000 {
		if err := p.SendAsync(ctx, client.Message{Topic: "t", Body: body}, o.cb(fmt.Sprint(i))); err != nil {
			t.Fatalf("SendAsync: %v", err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for k, r := range o.res {
		if o.errs[k] != nil {
			t.Fatalf("async send %s: %v", k, o.errs[k])
		}
		results = append(results, r)
	}

	oneway := map[string]bool{}
	for range 200 {
		r, err := p.SendOneway(ctx, client.Message{Topic: "t", Body: body})
		if err != nil {
			t.Fatalf("SendOneway: %v", err)
		}
		oneway[r.ID] = true
	}

	var ids map[[2]int64]string
	waitUntil(t, 10*time.Second, func() bool {
		ids = storedIDs(t, e.Address())
		return len(ids) >= 2400
	})
	if len(ids) != 2400 {
		t.Fatalf("the node holds %d messages, want 2400", len(ids))
	}
	for _, r := range results {
		if r.Status != ferryv1.Status_STATUS_OK {
			t.Fatalf("result %+v: status not OK under flush: sync", r)
		}
		if got := ids[[2]int64{int64(r.Queue), r.Offset}]; got != r.ID {
			t.Fatalf("result %+v, but that offset holds %q", r, got)
		}
	}
	for _, id := range ids {
		delete(oneway, id)
	}
	if len(oneway) != 0 {
		t.Fatalf("%d oneway messages never arrived", len(oneway))
	}
}

// Two real broker nodes from a seed list: sends are spread over both; once
// the first is stopped, sync sends fail over to the second and none fails.
func TestFailoverBetweenTwoNodes(t *testing.T) {
	a, stopA := startProdNode(t, t.TempDir(), ferrytest.FreeAddr(t), "async")
	b, _ := startProdNode(t, t.TempDir(), ferrytest.FreeAddr(t), "async")
	c := dialProdNode(t, a.Address(), b.Address())
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Backoff: 20 * time.Millisecond})
	count := map[string]int{}
	for range 40 {
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		count[r.Broker]++
	}
	if count[a.Address()] != 20 || count[b.Address()] != 20 {
		t.Fatalf("sends per broker %v, want 20 each", count)
	}
	stopA()
	var onB []client.Result
	for i := range 40 {
		r, err := p.SendSync(ctx, client.Message{Topic: "t", Body: []byte("y")})
		if err != nil {
			t.Fatalf("send %d after the first node stopped: %v", i, err)
		}
		if r.Broker != b.Address() {
			t.Fatalf("send %d after the first node stopped went to %s", i, r.Broker)
		}
		onB = append(onB, r)
	}
	ids := storedIDs(t, b.Address())
	if len(ids) != 60 {
		t.Fatalf("second node holds %d messages, want 20 + 40", len(ids))
	}
	for _, r := range onB {
		if ids[[2]int64{int64(r.Queue), r.Offset}] != r.ID {
			t.Fatalf("result %+v not at its offset", r)
		}
	}
}

// faultProxy is a TCP proxy on 127.0.0.1 in front of a grpc transport. When
// armed, it cuts both connections at the first HTTP/2 DATA frame the broker
// sends (the answer to a request the broker has handled), so that the client
// never sees that answer.
type faultProxy struct {
	addr   string
	target string
	lis    net.Listener
	armed  atomic.Bool
	conns  atomic.Int64
	cuts   atomic.Int64
	wg     sync.WaitGroup
}

func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{addr: lis.Addr().String(), target: target, lis: lis}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			down, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				down.Close()
				continue
			}
			p.conns.Add(1)
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(up, down); up.Close(); down.Close() }()
			go func() { defer p.wg.Done(); p.serverToClient(up, down); up.Close(); down.Close() }()
		}
	}()
	t.Cleanup(func() { lis.Close(); p.wg.Wait() })
	return p
}

// serverToClient forwards HTTP/2 frames from the broker to the client, frame
// by frame, and cuts the connection at a DATA frame while armed.
func (p *faultProxy) serverToClient(up, down net.Conn) {
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(up, hdr); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(append([]byte{0}, hdr[:3]...)))
		payload := make([]byte, n)
		if _, err := io.ReadFull(up, payload); err != nil {
			return
		}
		const frameData = 0x0
		if hdr[3] == frameData && n > 0 && p.armed.CompareAndSwap(true, false) {
			p.cuts.Add(1)
			return // the answer is dropped with the connection
		}
		if _, err := down.Write(append(hdr, payload...)); err != nil {
			return
		}
	}
}

// A fault proxy drops the broker's answer after the broker stored the
// message: the sync send retries (same broker, same queue, same id) and the
// message is stored once, at the offset the retry reports.
func TestRetryAfterLostAnswerStoresOnce(t *testing.T) {
	e, _ := startProdNode(t, t.TempDir(), ferrytest.FreeAddr(t), "sync")
	proxy := startFaultProxy(t, e.Address())
	c := dialProdNode(t, proxy.addr)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Backoff: 20 * time.Millisecond, Selector: client.KeyHash()})
	if _, err := p.SendSync(ctx, client.Message{Topic: "t", Key: "a", Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	proxy.armed.Store(true)
	r, err := p.SendSync(ctx, client.Message{Topic: "t", Key: "a", Body: []byte("lost answer")})
	if err != nil {
		t.Fatalf("SendSync whose first answer was lost: %v", err)
	}
	if proxy.cuts.Load() != 1 || proxy.conns.Load() < 2 {
		t.Fatalf("proxy cut %d answers over %d connections; want 1 cut and a reconnect", proxy.cuts.Load(), proxy.conns.Load())
	}
	ids := storedIDs(t, e.Address())
	if len(ids) != 2 {
		t.Fatalf("the node holds %d messages, want 2 (the retry was stored again): %v", len(ids), ids)
	}
	if got := ids[[2]int64{int64(r.Queue), r.Offset}]; got != r.ID || r.Offset != 1 {
		t.Fatalf("result %+v, but queue %d offset %d holds %q", r, r.Queue, r.Offset, got)
	}
}

// runProdNode runs `ferry run` on a pipeline as a process group of its own (the
// node and its plugin processes), so that the whole broker can be killed.
func runProdNode(t *testing.T, dir, listen string) *exec.Cmd {
	t.Helper()
	yaml := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(yaml, []byte(prodNodeYAML(dir, listen, "sync")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ferrytest.Binary(t), "run", "--log-level", "error", yaml)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry run did not listen on %s: %v", listen, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The broker (node and plugins) is killed in the middle of a stream of async
// sends: every callback is called exactly once, with a result or an error,
// Close returns, and every message acknowledged OK is on disk at its offset
// when the broker comes back.
func TestKillBrokerDuringAsyncSends(t *testing.T) {
	dir, listen := t.TempDir(), ferrytest.FreeAddr(t)
	cmd := runProdNode(t, dir, listen)
	c := dialProdNode(t, listen)
	ctx := testCtx(t)
	p := c.NewProducer(client.ProducerOptions{Timeout: time.Second, Backoff: 50 * time.Millisecond, MaxInflight: 64})

	o := newOutcomes(t)
	var accepted, refused atomic.Int64
	var acked atomic.Int64
	stopSending := make(chan struct{})
	sender := make(chan struct{})
	go func() {
		defer close(sender)
		for i := 0; ; i++ {
			select {
			case <-stopSending:
				return
			default:
			}
			key := fmt.Sprint(i)
			cb := o.cb(key)
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := p.SendAsync(sctx, client.Message{Topic: "t", Body: make([]byte, 512)}, func(r client.Result, err error) {
				if err == nil {
					acked.Add(1)
				}
				cb(r, err)
			})
			cancel()
			if err != nil {
				refused.Add(1)
				o.abandon()
				continue
			}
			accepted.Add(1)
		}
	}()
	waitUntil(t, 20*time.Second, func() bool { return acked.Load() >= 2000 })
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	time.Sleep(300 * time.Millisecond) // sends keep coming while it is dead
	close(stopSending)
	<-sender
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		t.Fatalf("Close after the broker died: %v", err)
	}
	o.wait(t, time.Second)

	failed := 0
	for _, err := range o.errs {
		if err != nil {
			failed++
		}
	}
	t.Logf("accepted %d (refused %d): %d acknowledged, %d failed", accepted.Load(), refused.Load(), int(accepted.Load())-failed, failed)
	if int64(len(o.errs)) != accepted.Load() {
		t.Fatalf("%d callbacks for %d accepted sends", len(o.errs), accepted.Load())
	}
	if failed == 0 {
		t.Fatalf("no send failed although the broker was killed mid-stream")
	}

	// The broker comes back on the same data: every acknowledged message is
	// where its callback said.
	runProdNode(t, dir, listen)
	ids := storedIDs(t, listen)
	for k, r := range o.res {
		if o.errs[k] != nil {
			continue
		}
		if got := ids[[2]int64{int64(r.Queue), r.Offset}]; got != r.ID {
			t.Fatalf("acknowledged %+v, but after the restart queue %d offset %d holds %q", r, r.Queue, r.Offset, got)
		}
	}
}
