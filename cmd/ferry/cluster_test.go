package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/verify"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// Fault tests of master–slave replication with real `ferry run` processes
// on 127.0.0.1: the master is SIGKILLed under load, the slave promoted with
// `ferry cluster promote`, and a checker reads the new master's whole log and
// counts lost (answered OK, not there), duplicated and unexpected messages.

// clusterNode is one `ferry run` process of a test cluster.
type clusterNode struct {
	id, role     string
	broker, repl string
	yaml         string
	logLevel     string // of `ferry run`; "" is warn
	cmd          *exec.Cmd
	out          *syncBuffer
	stopped      bool
	// peers secures the test's status calls to the node (nil: plaintext).
	peers *security.Peers
}

func writeNode(t *testing.T, id, role, mode, broker, repl string, peers []string, timeout string) *clusterNode {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`name: faults
node: {id: %s, role: %s, data_dir: %s}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q}}
  replication:
    type: %s
    config: {listen: %q, peers: [%s], min_replicas: 1, timeout: %s}
topics:
  - {name: orders, queues: 4}
`, id, role, filepath.Join(dir, "data"), broker, mode, repl, `"`+strings.Join(peers, `","`)+`"`, timeout)
	path := filepath.Join(dir, id+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return &clusterNode{id: id, role: role, broker: broker, repl: repl, yaml: path}
}

func (n *clusterNode) start(t *testing.T, bin string) {
	t.Helper()
	n.out = &syncBuffer{}
	n.cmd = exec.Command(bin, "run", "--log-level", cmp.Or(n.logLevel, "warn"), n.yaml)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	// Its own process group: a fault hits the node and its plugin
	// processes together, as when a machine dies or freezes.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGCONT)
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			_ = n.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("--- %s output:\n%s", n.id, n.out.String())
		}
	})
}

// kill SIGKILLs the node and its plugins.
func (n *clusterNode) kill(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	_ = n.cmd.Wait()
}

// signal signals the node and its plugins (SIGSTOP freezes all of them).
func (n *clusterNode) signal(t *testing.T, s syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-n.cmd.Process.Pid, s); err != nil {
		t.Fatal(err)
	}
}

func clusterStatus(ctx context.Context, addr string) (*ferryv1.ReplicationStatusResponse, error) {
	return clusterStatusVia(ctx, nil, addr)
}

// clusterStatusVia asks addr for its replication status over links
// secured by peers (nil: plaintext).
func clusterStatusVia(ctx context.Context, peers *security.Peers, addr string) (*ferryv1.ReplicationStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return replicationStatus(ctx, peers, addr)
}

// eventually polls cond every 50 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// load produces unique bodies to a broker from a few goroutines until
// stopped, recording each body's outcome.
type load struct {
	mu       sync.Mutex
	attempts map[string]bool           // every body sent (outcome known or not)
	status   map[string]ferryv1.Status // bodies the broker answered
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, broker string, workers int) *load {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, broker, client.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))))
	if err != nil {
		t.Fatal(err)
	}
	l := &load{attempts: map[string]bool{}, status: map[string]ferryv1.Status{}, stop: make(chan struct{})}
	for w := range workers {
		p := c.NewProducer(client.ProducerOptions{Retries: client.NoRetries, Timeout: 5 * time.Second})
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				body := fmt.Sprintf("w%d-%d", w, i)
				l.mu.Lock()
				l.attempts[body] = true
				l.mu.Unlock()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: body, Body: []byte(body)})
				cancel()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				l.mu.Lock()
				l.status[body] = r.Status
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() { l.halt(); c.Close() })
	return l
}

func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) count(st ferryv1.Status) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.status {
		if s == st {
			n++
		}
	}
	return n
}

// queueLog reads every message of every queue of topic orders from one
// broker, in offset order. The other readers of a node's log build on it.
func queueLog(t *testing.T, broker string) map[int32][]*ferryv1.Message {
	t.Helper()
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rpc := ferryv1.NewBrokerClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var refs []*ferryv1.QueueRef
	for q := range int32(4) {
		refs = append(refs, &ferryv1.QueueRef{Topic: "orders", Queue: q})
	}
	offs, err := rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Queues: refs})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32][]*ferryv1.Message{}
	for _, o := range offs.Offsets {
		for pos := o.Start; pos < o.End; {
			resp, err := rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: "orders", Positions: []*ferryv1.FetchPosition{{Queue: o.Queue, Offset: pos}}, MaxMessages: 1000, MaxWaitNanos: int64(time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Messages) == 0 {
				t.Fatalf("%s queue %d: nothing at %d before its end %d", broker, o.Queue, pos, o.End)
			}
			for _, m := range resp.Messages {
				out[o.Queue] = append(out[o.Queue], m)
				pos = m.Offset + 1
			}
		}
	}
	return out
}

// readLog reads every message of topic orders from a broker: body → copies.
func readLog(t *testing.T, broker string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ms := range queueLog(t, broker) {
		for _, m := range ms {
			out[string(m.Body)]++
		}
	}
	return out
}

// verdict counts what the checker reports.
type verdict struct{ ok, lost, dup, unexpected, stored int }

// check is verify.Check (one definition of lost, duplicated and unexpected
// for ferry verify and these tests) over the load's sends and a log's copies
// of each body.
func check(l *load, log map[string]int) verdict {
	l.mu.Lock()
	sent := make([]verify.Send, 0, len(l.attempts))
	for body := range l.attempts {
		s := verify.Send{ID: body, Key: body, Outcome: verify.OutcomeUnknown}
		if st, ok := l.status[body]; ok {
			s.Outcome, s.Status = verify.OutcomeWeak, st
			if st == ferryv1.Status_STATUS_OK {
				s.Outcome = verify.OutcomeOK
			}
		}
		sent = append(sent, s)
	}
	l.mu.Unlock()
	r := verify.CheckCopies(sent, log)
	return verdict{ok: r.Acked, lost: r.Lost, dup: r.Duplicated, unexpected: r.Unexpected, stored: r.Stored}
}

// masterSlaveFailover runs the scenario: load, the slave paused for a while
// (pause > 0), the master SIGKILLed, the slave promoted; it returns what the
// checker found on the new master.
func masterSlaveFailover(t *testing.T, mode string, pause time.Duration) (verdict, *load) {
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	// The replication links go through proxies: the async negative
	// control black-holes them, else what the master wrote to the socket
	// before its death reaches the paused slave from the kernel's buffers
	// when it resumes, and nothing is lost (seen on a loaded machine).
	mp, sp := ferrytest.NewProxy(t, mr), ferrytest.NewProxy(t, sr)
	master := writeNode(t, "master", "master", mode, mb, mr, []string{sp.Addr()}, "1s")
	slave := writeNode(t, "slave", "slave", mode, sb, sr, []string{mp.Addr()}, "1s")
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	eventually(t, 60*time.Second, "slave linked to master", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	})
	l := startLoad(t, mb, 4)
	time.Sleep(time.Second)
	if pause > 0 {
		okBefore := l.count(ferryv1.Status_STATUS_OK)
		slave.signal(t, syscall.SIGSTOP)
		if mode == "async" {
			mp.Blackhole()
			sp.Blackhole()
		}
		time.Sleep(pause)
		if mode == "async" {
			// The negative control needs acks the slave cannot have: on a
			// loaded machine wait for some (bounded).
			eventually(t, 20*time.Second, "async acks while the slave is frozen", func() bool {
				return l.count(ferryv1.Status_STATUS_OK)-okBefore >= 200
			})
		}
	}
	master.kill(t)
	l.halt()
	if pause > 0 {
		slave.signal(t, syscall.SIGCONT)
	}
	eventually(t, 30*time.Second, "slave sees its master gone", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && !st.LeaderConnected
	})
	// The master's plugin processes exit once they see their host gone.
	eventually(t, 30*time.Second, "master's replication plugin gone", func() bool {
		_, err := clusterStatus(ctx, mr)
		return err != nil
	})
	start := time.Now()
	out, err := exec.Command(bin, "cluster", "promote", "--node", sr).CombinedOutput()
	if err != nil {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	t.Logf("promote (%s): %s", time.Since(start).Round(time.Millisecond), bytes.TrimSpace(out))
	eventually(t, 30*time.Second, "promoted slave takes produce", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.Role == "master"
	})
	v := check(l, readLog(t, sb))
	t.Logf("%s: acked OK %d, REPLICA_TIMEOUT %d, REPLICA_NOT_AVAILABLE %d; on the new master %d stored: lost %d, duplicated %d, unexpected %d",
		mode, v.ok, l.count(ferryv1.Status_STATUS_REPLICA_TIMEOUT), l.count(ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE), v.stored, v.lost, v.dup, v.unexpected)
	return v, l
}

// Sync: every message acked OK survives the master's death and the slave's
// promotion, also when the slave was paused (SIGSTOP) under load just before.
func TestFaultSyncMasterKilledSlavePromoted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	v, l := masterSlaveFailover(t, "sync", 1500*time.Millisecond)
	if v.ok == 0 {
		t.Fatal("no message was acked OK")
	}
	if v.lost != 0 || v.dup != 0 || v.unexpected != 0 {
		t.Fatalf("lost %d, duplicated %d, unexpected %d", v.lost, v.dup, v.unexpected)
	}
	if l.count(ferryv1.Status_STATUS_REPLICA_TIMEOUT)+l.count(ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE) == 0 {
		t.Error("the slave was paused, yet no send was answered REPLICA_TIMEOUT or REPLICA_NOT_AVAILABLE")
	}
}

// The same with the master's fsync overlapped with the replication
// (replicate_before_flush: the batch is shipped once written, before the
// master's fsync): nothing acked OK is lost either.
func TestFaultSyncOverlappedMasterKilledSlavePromoted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	t.Setenv("FERRY_PLUGINS__REPLICATION__CONFIG__REPLICATE_BEFORE_FLUSH", "true") // both nodes inherit it
	v, _ := masterSlaveFailover(t, "sync", 0)
	if v.ok == 0 {
		t.Fatal("no message was acked OK")
	}
	if v.lost != 0 || v.dup != 0 || v.unexpected != 0 {
		t.Fatalf("lost %d, duplicated %d, unexpected %d", v.lost, v.dup, v.unexpected)
	}
}

// Async, the negative control: what the master acked while its slave was
// paused is lost with the master, and the checker says so.
func TestFaultAsyncMasterKilledLosesAcked(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	v, _ := masterSlaveFailover(t, "async", 1500*time.Millisecond)
	if v.lost == 0 {
		t.Fatalf("async replication lost nothing although the slave was paused while %d messages were acked: the checker is blind", v.ok)
	}
	if v.dup != 0 || v.unexpected != 0 {
		t.Fatalf("duplicated %d, unexpected %d", v.dup, v.unexpected)
	}
}
