package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
	raftplugin "github.com/ferrymq/ferry/plugins/replication/raft"
)

// EnvShortFaults makes the raft fault test run 20 s of failovers, one every
// 5 s, instead of its full 60 s with 5–10 s between faults (which CI and
// `make test` run), for quick local iterations.
const EnvShortFaults = "FERRY_SHORT_FAULTS"

// EnvFaultKeep names a directory under which the raft fault tests keep each
// node's data dir (for a post-mortem) instead of a temporary one.
const EnvFaultKeep = "FERRY_FAULT_KEEP"

type raftNode struct {
	*clusterNode
	admin string
	runs  int // incarnations started
}

// raftGroup writes the pipelines of n raft nodes that reach each other
// directly.
func raftGroup(t *testing.T, n int) []*raftNode {
	t.Helper()
	return raftGroupVia(t, n, nil, "")
}

// raftGroupVia writes the pipelines of n raft nodes. via, when not nil,
// gives the raft address node from names for node to, whose raft listen
// address is target, in its peers (e.g. a proxy's to target); each node
// names itself by its own listen address. extra holds more keys of the
// raft plugin's config, one "key: value" per line; "{{node}}" in it
// stands for each node's id (its certificate's file, say).
func raftGroupVia(t *testing.T, n int, via func(from, to int, target string) string, extra string) []*raftNode {
	t.Helper()
	var nodes []*raftNode
	for i := range n {
		nodes = append(nodes, &raftNode{clusterNode: &clusterNode{id: fmt.Sprintf("r%d", i+1), broker: ferrytest.FreeAddr(t), repl: ferrytest.FreeAddr(t)}, admin: ferrytest.FreeAddr(t)})
	}
	keep := os.Getenv(EnvFaultKeep)
	for i, nd := range nodes {
		var peers []string
		for j, peer := range nodes {
			raft := peer.repl
			if via != nil && j != i {
				raft = via(i, j, peer.repl)
			}
			peers = append(peers, fmt.Sprintf("{id: %s, raft: %q, broker: %q, admin: %q}", peer.id, raft, peer.broker, peer.admin))
		}
		dir := t.TempDir()
		if keep != "" {
			dir = filepath.Join(keep, t.Name(), nd.id)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s keeps its data in %s", nd.id, dir)
		}
		yaml := fmt.Sprintf(`name: raft-faults
node: {id: %s, data_dir: %s}
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: %q}}
  replication:
    type: raft
    config:
      listen: %q
      admin: %q
      peers: [%s]
%stopics:
  - {name: orders, queues: 4}
`, nd.id, filepath.Join(dir, "data"), nd.broker, nd.repl, nd.admin, strings.Join(peers, ", "), indent(strings.ReplaceAll(extra, "{{node}}", nd.id), "      "))
		nd.yaml = filepath.Join(dir, nd.id+".yaml")
		if err := os.WriteFile(nd.yaml, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// indent puts prefix before every line of s.
func indent(s, prefix string) string {
	var b strings.Builder
	for l := range strings.Lines(s) {
		b.WriteString(prefix + l)
	}
	return b.String()
}

// start runs the node (again). Each incarnation's output is kept apart and
// printed, labelled, if the test fails.
func (n *raftNode) start(t *testing.T, bin string) {
	t.Helper()
	n.runs++
	run, out := n.runs, &syncBuffer{}
	cmd := exec.Command(bin, "run", "--log-level", cmp.Or(n.logLevel, "warn"), n.yaml)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd, n.out = cmd, out
	t.Logf("%s %s run %d started (pid %d)", stamp(), n.id, run, cmd.Process.Pid)
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
		if strings.Contains(out.String(), "append wire mismatch") {
			t.Errorf("%s run %d: a message's wire form was paired with another message (its log says)", n.id, run)
		}
		if t.Failed() {
			t.Logf("--- %s run %d output:\n%s", n.id, run, out.String())
		}
	})
}

// status asks the node's admin listener for its replication status.
func (n *raftNode) status(ctx context.Context) (*ferryv1.ReplicationStatusResponse, error) {
	return clusterStatusVia(ctx, n.peers, n.admin)
}

// stamp is the wall clock, to line the test's events up with the nodes' logs.
func stamp() string { return time.Now().Format("15:04:05.000") }

// raftLeader returns the node that reports itself leader in the highest
// term (a deposed leader that just woke up may still claim an older one), or
// nil.
func raftLeader(nodes []*raftNode) *raftNode {
	nd, _ := raftLeaderStatus(nodes)
	return nd
}

// raftLeaderStatus is raftLeader with the leader's status as it answered.
func raftLeaderStatus(nodes []*raftNode) (*raftNode, *ferryv1.ReplicationStatusResponse) {
	var best *raftNode
	var bestSt *ferryv1.ReplicationStatusResponse
	for _, nd := range nodes {
		if st, err := nd.status(context.Background()); err == nil && st.Role == "leader" && (best == nil || st.Epoch > bestSt.Epoch) {
			best, bestSt = nd, st
		}
	}
	return best, bestSt
}

// faultWait caps each wait of the raft fault tests on a condition (a
// leader, commits going on, convergence). Generous: on a loaded 2-core
// machine an election, a status call or a batch of commits can take
// seconds; a healthy cluster meets each condition far sooner.
const faultWait = 60 * time.Second

// waitLeader polls for up to faultWait until a node reports itself leader
// and returns it with its status. Tests call it wherever they need the
// current leader: on a loaded machine leadership may move at any time.
func waitLeader(t *testing.T, nodes []*raftNode, what string) (*raftNode, *ferryv1.ReplicationStatusResponse) {
	t.Helper()
	var nd *raftNode
	var st *ferryv1.ReplicationStatusResponse
	eventually(t, faultWait, what, func() bool { nd, st = raftLeaderStatus(nodes); return nd != nil })
	return nd, st
}

// clusterLoad is load through client.DialCluster: each worker re-dials when
// a send fails (after a failover its client may still route to a follower).
type clusterLoad struct {
	load
	seeds  []string
	okAt   []time.Time // when each OK answer arrived
	okSent []time.Time // when the send of each OK answer began
	lastOK time.Time
	errs   map[string]int // failed sends by error, shortened
}

// startClusterLoad starts workers sending through client.DialCluster. With
// skew, half of them send every message to queue 0: with more than the
// store's de-dup window (sdk.DedupWindow ids per queue) in one queue,
// entries applied twice show up as duplicates.
func startClusterLoad(t *testing.T, seeds []string, workers int, skew bool) *clusterLoad {
	return startClusterLoadWith(t, seeds, workers, skew, time.Second)
}

// startClusterLoadWith is startClusterLoad with each send given up after
// sendTimeout (the producer's timeout; twice that for the whole call).
func startClusterLoadWith(t *testing.T, seeds []string, workers int, skew bool, sendTimeout time.Duration) *clusterLoad {
	l := &clusterLoad{load: load{attempts: map[string]bool{}, status: map[string]ferryv1.Status{}, stop: make(chan struct{})}, seeds: seeds, errs: map[string]int{}}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	for w := range workers {
		l.wg.Go(func() {
			var c *client.Client
			var p *client.Producer // one per client: its round robin spreads sends over the queues
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				if c == nil {
					ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
					c, _ = client.DialCluster(ctx, seeds, client.WithLogger(logger))
					cancel()
					if c == nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					opts := client.ProducerOptions{Retries: client.NoRetries, Timeout: sendTimeout}
					if skew && w%2 == 0 {
						opts.Selector = queueZero{}
					}
					p = c.NewProducer(opts)
				}
				body := fmt.Sprintf("w%d-%d", w, i)
				l.mu.Lock()
				l.attempts[body] = true
				l.mu.Unlock()
				// A short timeout: a send to a frozen leader is given up
				// soon (its outcome is unknown; it never counts as OK).
				sent := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*sendTimeout)
				r, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: body, Body: []byte(body)})
				cancel()
				if err != nil {
					l.mu.Lock()
					l.errs[errKind(err)]++
					l.mu.Unlock()
					// NOT_LEADER (nothing stored): the client refreshed its
					// routes already. Anything else: dial afresh.
					if !errors.Is(err, sdk.ErrNotLeader) {
						c.Close()
						c = nil
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				now := time.Now()
				l.mu.Lock()
				l.status[body] = r.Status
				if r.Status == ferryv1.Status_STATUS_OK {
					l.okAt = append(l.okAt, now)
					l.okSent = append(l.okSent, sent)
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.halt)
	return l
}

// firstOKSentAfter is when the first OK answer to a send begun after t0
// arrived: what a producer that starts sending at the fault waits.
func (l *clusterLoad) firstOKSentAfter(t0 time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	best, ok := time.Time{}, false
	for i, at := range l.okAt {
		if l.okSent[i].After(t0) && (!ok || at.Before(best)) {
			best, ok = at, true
		}
	}
	return best, ok
}

// countOKSentAfter counts the sends begun after t0 that were acked OK.
func (l *clusterLoad) countOKSentAfter(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, sent := range l.okSent {
		if sent.After(t0) {
			n++
		}
	}
	return n
}

// waitOK waits up to faultWait until at least n sends begun after t0 were
// acked OK (and, with at least > 0, until at least that long after t0 has
// passed, so that a fault stays in effect that long), and returns how many
// were. Failing, it names what it waited for, the nodes and the failed sends.
func (l *clusterLoad) waitOK(t *testing.T, nodes []*raftNode, t0 time.Time, n int, atLeast time.Duration, what string) int {
	t.Helper()
	got := 0
	if !within(faultWait, func() bool {
		got = l.countOKSentAfter(t0)
		return got >= n && time.Since(t0) >= atLeast
	}) {
		t.Fatalf("%s: %d of %d sends begun after %s acked OK within %s; nodes %v; failed sends %v",
			what, got, n, t0.Format("15:04:05.000"), faultWait, raftStatuses(nodes), l.errTally())
	}
	return got
}

// firstOKAfter is when the first OK answer after t0 arrived.
func (l *clusterLoad) firstOKAfter(t0 time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	best, ok := time.Time{}, false
	for _, at := range l.okAt {
		if at.After(t0) && (!ok || at.Before(best)) {
			best, ok = at, true
		}
	}
	return best, ok
}

// Raft, 3 nodes, flush sync, under load: the leader is killed (kill -9, then
// restarted) or paused (SIGSTOP, SIGCONT 2 s later) every 5–10 s for 60 s
// (every 5 s for 20 s with FERRY_SHORT_FAULTS=1). Nothing acked OK may be
// lost, nothing unexpected may appear, and every node ends with the same
// log. Failover time (the fault to the next OK answer) is measured.
func TestFaultRaftLeaderKilledOrPaused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	duration, every := 60*time.Second, 5*time.Second
	long := os.Getenv(EnvShortFaults) == ""
	if !long {
		duration = 20 * time.Second
	}
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	var seeds []string
	for _, nd := range nodes {
		nd.logLevel = "info" // the data plane each plugin started on
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	waitLeader(t, nodes, "a raft leader")
	for _, nd := range nodes {
		// A leader is elected by the nodes up first: on a loaded machine
		// another may still be starting its plugins.
		for by := time.Now().Add(60 * time.Second); time.Now().Before(by); time.Sleep(50 * time.Millisecond) {
			if ring, other := pluginGenerations(nd.out.String(), "replication"); len(ring)+len(other) > 0 {
				break
			}
		}
		if ring, other := pluginGenerations(nd.out.String(), "replication"); len(ring) != 1 || len(other) != 0 {
			t.Fatalf("%s: raft plugin generations on the rings %v, on another data plane %v; want one, on the rings", nd.id, ring, other)
		}
	}
	l := startClusterLoad(t, seeds, 4, true)
	l.waitOK(t, nodes, time.Time{}, 20, 2*time.Second, "the load before the first fault")
	var failovers, fresh, elections []time.Duration
	end := time.Now().Add(duration)
	for round := 0; time.Now().Before(end); round++ {
		leader, _ := waitLeader(t, nodes, "a raft leader")
		errsBefore := l.errTally()
		t0 := time.Now()
		if round%2 == 0 {
			leader.kill(t)
			t.Logf("%s round %d: killed leader %s", stamp(), round, leader.id)
		} else {
			leader.signal(t, syscall.SIGSTOP)
			t.Logf("%s round %d: paused leader %s", stamp(), round, leader.id)
		}
		var next *raftNode
		eventually(t, faultWait, "a new raft leader", func() bool {
			for _, nd := range nodes {
				if nd == leader {
					continue
				}
				if st, err := nd.status(context.Background()); err == nil && st.Role == "leader" {
					next = nd
					return true
				}
			}
			return false
		})
		elections = append(elections, time.Since(t0))
		var okAt, freshAt time.Time
		eventually(t, faultWait, "an OK answer to a send begun after the fault", func() bool {
			var ok bool
			freshAt, ok = l.firstOKSentAfter(t0)
			return ok
		})
		okAt, _ = l.firstOKAfter(t0)
		failovers = append(failovers, okAt.Sub(t0))
		fresh = append(fresh, freshAt.Sub(t0))
		t.Logf("%s round %d: %s leads within %s; first OK answer after %s, first OK answer to a send begun after the fault after %s", stamp(), round,
			next.id, elections[len(elections)-1].Round(time.Millisecond), okAt.Sub(t0).Round(time.Millisecond), freshAt.Sub(t0).Round(time.Millisecond))
		t.Logf("round %d: sends failed meanwhile: %v", round, tallySince(l.errTally(), errsBefore))
		if round%2 == 0 {
			time.Sleep(500 * time.Millisecond)
			leader.start(t, bin)
		} else {
			time.Sleep(2 * time.Second)
			leader.signal(t, syscall.SIGCONT)
			t.Logf("%s round %d: resumed %s", stamp(), round, leader.id)
		}
		gap := every
		if long {
			gap += time.Duration(rand.Int64N(int64(5 * time.Second))) // 5–10 s
		}
		time.Sleep(gap - time.Since(t0))
	}
	l.halt()
	t.Logf("%s load stopped", stamp())
	convergeAndCheck(t, nodes, &l.load, faultWait)
	for _, ds := range [][]time.Duration{elections, failovers, fresh} {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	}
	t.Logf("failover, fault → another node leads: %v (max %s); fault → next OK answer to a producer: %v (max %s); fault → first OK answer to a send begun after the fault: %v (max %s)",
		elections, elections[len(elections)-1].Round(time.Millisecond), failovers, failovers[len(failovers)-1].Round(time.Millisecond),
		fresh, fresh[len(fresh)-1].Round(time.Millisecond))
}

// convergeAndCheck waits up to d for every node's queues to end at the same
// offsets, then reads every node's whole log and checks it against what the
// load sent: lost, duplicated and unexpected must be 0, and every queue must
// hold the same messages in the same order on every node. Where they do not,
// it reports where and how (with each copy's raft index).
func convergeAndCheck(t *testing.T, nodes []*raftNode, l *load, d time.Duration) {
	t.Helper()
	lastLog := time.Now()
	convergeBy := time.Now().Add(d)
	for {
		var counts []string
		var ends []string
		for _, nd := range nodes {
			st, err := nd.status(context.Background())
			if err != nil {
				counts = append(counts, nd.id+": "+err.Error())
				continue
			}
			ends = append(ends, fmt.Sprint(queueEnds(st.Offsets)))
			detail := ""
			if len(st.Replicas) > 0 {
				detail = st.Replicas[0].Detail
			}
			counts = append(counts, fmt.Sprintf("%s %s term %d: %d %v (%s)", nd.id, st.Role, st.Epoch, sumEnds(st.Offsets), queueEnds(st.Offsets), detail))
		}
		same := len(ends) == len(nodes)
		for _, e := range ends {
			same = same && e == ends[0]
		}
		if same {
			t.Logf("%s converged: %v", stamp(), counts)
			break
		}
		if time.Since(lastLog) > 5*time.Second || time.Now().After(convergeBy) {
			t.Logf("%s converging: %v", stamp(), counts)
			lastLog = time.Now()
		}
		if time.Now().After(convergeBy) {
			t.Errorf("the nodes' logs did not converge within %s; checking each as it is", d)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var logs []map[int32][]storedMsg
	for _, nd := range nodes {
		logs = append(logs, readQueues(t, nd.broker))
	}
	for i, nd := range nodes {
		v := check(l, bodyCounts(logs[i]))
		l.mu.Lock()
		attempted := len(l.attempts)
		l.mu.Unlock()
		t.Logf("%s: acked OK %d, attempted %d; stored %d: lost %d, duplicated %d, unexpected %d", nd.id, v.ok, attempted, v.stored, v.lost, v.dup, v.unexpected)
		if v.lost != 0 || v.unexpected != 0 || v.dup != 0 {
			t.Errorf("%s: lost %d, duplicated %d, unexpected %d", nd.id, v.lost, v.dup, v.unexpected)
			if v.dup > 0 {
				reportDuplicates(t, nd.id, logs[i])
			}
			if v.lost > 0 {
				t.Logf("%s: lost e.g. %v", nd.id, lostBodies(l, logs[i], 10))
			}
		}
		if v.ok == 0 {
			t.Error("nothing was acked OK")
		}
	}
	for i := 1; i < len(nodes); i++ {
		for q := range int32(4) {
			a, b := logs[0][q], logs[i][q]
			if diverged, at := firstDifference(a, b); diverged {
				t.Errorf("queue %d: %s (%d messages) and %s (%d messages) differ from offset %d on:\n  %s: %s\n  %s: %s",
					q, nodes[0].id, len(a), nodes[i].id, len(b), at, nodes[0].id, window(a, at), nodes[i].id, window(b, at))
			}
		}
	}
}

// storedMsg is one message of a node's log, with the raft entry it came
// from.
type storedMsg struct {
	body   string
	offset int64
	index  string // ferry-raft-index
}

// readQueues reads every message of topic orders from a broker, per queue in
// offset order.
func readQueues(t *testing.T, broker string) map[int32][]storedMsg {
	t.Helper()
	out := map[int32][]storedMsg{}
	for q, ms := range queueLog(t, broker) {
		for _, m := range ms {
			out[q] = append(out[q], storedMsg{string(m.Body), m.Offset, m.Headers[raftplugin.HeaderRaftIndex]})
		}
	}
	return out
}

func bodyCounts(qs map[int32][]storedMsg) map[string]int {
	out := map[string]int{}
	for _, ms := range qs {
		for _, m := range ms {
			out[m.body]++
		}
	}
	return out
}

func queueEnds(offs []*ferryv1.QueueOffsets) []int64 {
	ends := make([]int64, 4)
	for _, o := range offs {
		if o.Topic == "orders" && o.Queue >= 0 && o.Queue < 4 {
			ends[o.Queue] = o.End
		}
	}
	return ends
}

// firstDifference is the first position where two queues differ (a body, or
// one ending before the other).
func firstDifference(a, b []storedMsg) (bool, int) {
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) || a[i].body != b[i].body {
			return true, i
		}
	}
	return false, 0
}

// window shows a few messages from position at: body@offset#raft-index.
func window(ms []storedMsg, at int) string {
	var parts []string
	for i := max(0, at-2); i < min(len(ms), at+5); i++ {
		parts = append(parts, fmt.Sprintf("%s@%d#%s", ms[i].body, ms[i].offset, ms[i].index))
	}
	if at >= len(ms) {
		parts = append(parts, "(end)")
	}
	return strings.Join(parts, " ")
}

// reportDuplicates shows where a node's duplicated messages are: how many,
// the raft indexes of their copies, and a few examples.
func reportDuplicates(t *testing.T, node string, qs map[int32][]storedMsg) {
	t.Helper()
	copies := map[string][]storedMsg{}
	queue := map[string]int32{}
	for q, ms := range qs {
		for _, m := range ms {
			copies[m.body] = append(copies[m.body], m)
			queue[m.body] = q
		}
	}
	sameIndex, n := 0, 0
	var examples []string
	for body, cs := range copies {
		if len(cs) < 2 {
			continue
		}
		n++
		if cs[0].index == cs[1].index {
			sameIndex++
		}
		if len(examples) < 10 {
			var parts []string
			for _, c := range cs {
				parts = append(parts, fmt.Sprintf("@%d#%s", c.offset, c.index))
			}
			examples = append(examples, fmt.Sprintf("%s q%d %s", body, queue[body], strings.Join(parts, " ")))
		}
	}
	t.Logf("%s: %d bodies stored more than once, %d of them twice from the same raft entry; e.g. %s", node, n, sameIndex, strings.Join(examples, "; "))
}

// errKind shortens an error for a tally: its sentinel's name, or its text
// without addresses.
func errKind(err error) string {
	s := err.Error()
	for _, k := range []string{"NOT_LEADER", "not leader", "UNAVAILABLE", "outcome unknown", "DeadlineExceeded", "deadline exceeded", "REPLICA_TIMEOUT", "Unavailable"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// errTally is the load's failed sends so far, by kind.
func (l *clusterLoad) errTally() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.errs)
}

// raftStatuses describes every node's raft status, for a test's log.
func raftStatuses(nodes []*raftNode) []string {
	var out []string
	for _, nd := range nodes {
		st, err := nd.status(context.Background())
		if err != nil {
			out = append(out, nd.id+": "+err.Error())
			continue
		}
		detail := ""
		if len(st.Replicas) > 0 {
			detail = st.Replicas[0].Detail
		}
		out = append(out, fmt.Sprintf("%s %s term %d leader %q: %d %v (%s)", nd.id, st.Role, st.Epoch, st.LeaderNode, sumEnds(st.Offsets), queueEnds(st.Offsets), detail))
	}
	return out
}

// lostBodies lists up to n bodies answered OK that a node's log lacks.
func lostBodies(l *load, qs map[int32][]storedMsg, n int) []string {
	have := bodyCounts(qs)
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for body, st := range l.status {
		if st == ferryv1.Status_STATUS_OK && have[body] == 0 && len(out) < n {
			out = append(out, body)
		}
	}
	sort.Strings(out)
	return out
}

// tallySince is now minus before, by kind.
func tallySince(now, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, n := range now {
		if d := n - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// queueZero sends every message to queue 0.
type queueZero struct{}

func (queueZero) Select(*client.Message, int32) int32 { return 0 }
