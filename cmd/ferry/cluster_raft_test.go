package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// EnvLongFaults makes the raft fault test run its full 60 s of failovers
// (CI runs a short version).
const EnvLongFaults = "FERRY_LONG_FAULTS"

type raftNode struct {
	*clusterNode
	admin string
}

func raftGroup(t *testing.T, n int) []*raftNode {
	t.Helper()
	var nodes []*raftNode
	for i := range n {
		nodes = append(nodes, &raftNode{clusterNode: &clusterNode{id: fmt.Sprintf("r%d", i+1), broker: ferrytest.FreeAddr(t), repl: ferrytest.FreeAddr(t)}, admin: ferrytest.FreeAddr(t)})
	}
	var peers []string
	for _, nd := range nodes {
		peers = append(peers, fmt.Sprintf("{id: %s, raft: %q, broker: %q, admin: %q}", nd.id, nd.repl, nd.broker, nd.admin))
	}
	for _, nd := range nodes {
		dir := t.TempDir()
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
topics:
  - {name: orders, queues: 4}
`, nd.id, filepath.Join(dir, "data"), nd.broker, nd.repl, nd.admin, strings.Join(peers, ", "))
		nd.yaml = filepath.Join(dir, nd.id+".yaml")
		if err := os.WriteFile(nd.yaml, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// raftLeader returns the node that reports itself leader in the highest
// term (a deposed leader that just woke up may still claim an older one), or
// nil.
func raftLeader(nodes []*raftNode) *raftNode {
	var best *raftNode
	var term uint64
	for _, nd := range nodes {
		if st, err := clusterStatus(context.Background(), nd.admin); err == nil && st.Role == "leader" && (best == nil || st.Epoch > term) {
			best, term = nd, st.Epoch
		}
	}
	return best
}

// clusterLoad is load through client.DialCluster: each worker re-dials when
// a send fails (after a failover its client may still route to a follower).
type clusterLoad struct {
	load
	seeds  []string
	okAt   []time.Time // when each OK answer arrived
	lastOK time.Time
}

func startClusterLoad(t *testing.T, seeds []string, workers int) *clusterLoad {
	l := &clusterLoad{load: load{attempts: map[string]bool{}, status: map[string]ferryv1.Status{}, stop: make(chan struct{})}, seeds: seeds}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
	for w := range workers {
		l.wg.Go(func() {
			var c *client.Client
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
				}
				body := fmt.Sprintf("w%d-%d", w, i)
				l.mu.Lock()
				l.attempts[body] = true
				l.mu.Unlock()
				// A short timeout: a send to a frozen leader is given up
				// soon (its outcome is unknown; it never counts as OK).
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				r, err := c.NewProducer(client.ProducerOptions{Retries: client.NoRetries, Timeout: time.Second}).SendSync(ctx, client.Message{Topic: "orders", Key: body, Body: []byte(body)})
				cancel()
				if err != nil {
					c.Close()
					c = nil
					time.Sleep(10 * time.Millisecond)
					continue
				}
				now := time.Now()
				l.mu.Lock()
				l.status[body] = r.Status
				if r.Status == ferryv1.Status_STATUS_OK {
					l.okAt = append(l.okAt, now)
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(l.halt)
	return l
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
// restarted) or paused (SIGSTOP, SIGCONT 2 s later) every 5 s (CI) or every
// 5–10 s for 60 s (FERRY_LONG_FAULTS=1). Nothing
// acked OK may be lost, nothing unexpected may appear, and every node ends
// with the same log. Failover time (the fault to the next OK answer) is
// measured. CI runs ~20 s; FERRY_LONG_FAULTS=1 runs 60 s.
func TestFaultRaftLeaderKilledOrPaused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	duration, every := 20*time.Second, 5*time.Second
	long := os.Getenv(EnvLongFaults) != ""
	if long {
		duration = 60 * time.Second
	}
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	var seeds []string
	for _, nd := range nodes {
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	eventually(t, 60*time.Second, "a raft leader", func() bool { return raftLeader(nodes) != nil })
	l := startClusterLoad(t, seeds, 4)
	time.Sleep(2 * time.Second)
	var failovers, elections []time.Duration
	end := time.Now().Add(duration)
	for round := 0; time.Now().Before(end); round++ {
		var leader *raftNode
		eventually(t, 30*time.Second, "a raft leader", func() bool { leader = raftLeader(nodes); return leader != nil })
		t0 := time.Now()
		if round%2 == 0 {
			leader.kill(t)
			t.Logf("round %d: killed leader %s", round, leader.id)
		} else {
			leader.signal(t, syscall.SIGSTOP)
			t.Logf("round %d: paused leader %s", round, leader.id)
		}
		eventually(t, 30*time.Second, "a new raft leader", func() bool {
			for _, nd := range nodes {
				if nd == leader {
					continue
				}
				if st, err := clusterStatus(context.Background(), nd.admin); err == nil && st.Role == "leader" {
					return true
				}
			}
			return false
		})
		elections = append(elections, time.Since(t0))
		var okAt time.Time
		eventually(t, 30*time.Second, "an OK answer after the fault", func() bool {
			var ok bool
			okAt, ok = l.firstOKAfter(t0)
			return ok
		})
		failovers = append(failovers, okAt.Sub(t0))
		t.Logf("round %d: new leader within %s, first OK answer after %s", round, elections[len(elections)-1].Round(time.Millisecond), okAt.Sub(t0).Round(time.Millisecond))
		if round%2 == 0 {
			time.Sleep(500 * time.Millisecond)
			leader.start(t, bin)
		} else {
			time.Sleep(2 * time.Second)
			leader.signal(t, syscall.SIGCONT)
		}
		gap := every
		if long {
			gap += time.Duration(rand.Int64N(int64(5 * time.Second))) // 5–10 s
		}
		time.Sleep(gap - time.Since(t0))
	}
	l.halt()
	// Every node converges to the same log.
	var logs []map[string]int
	lastLog := time.Now()
	convergeBy := time.Now().Add(60 * time.Second)
	for !func() bool {
		var counts []string
		var ends []int64
		for _, nd := range nodes {
			st, err := clusterStatus(context.Background(), nd.admin)
			if err != nil {
				counts = append(counts, nd.id+": "+err.Error())
				continue
			}
			ends = append(ends, sumEnds(st.Offsets))
			detail := ""
			if len(st.Replicas) > 0 {
				detail = st.Replicas[0].Detail
			}
			counts = append(counts, fmt.Sprintf("%s %s: %d (%s)", nd.id, st.Role, sumEnds(st.Offsets), detail))
		}
		if time.Since(lastLog) > 5*time.Second {
			t.Logf("converging: %v", counts)
			lastLog = time.Now()
		}
		return len(ends) == 3 && ends[0] == ends[1] && ends[1] == ends[2]
	}() {
		if time.Now().After(convergeBy) {
			t.Errorf("the nodes' logs did not converge within 60s; checking each as it is")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, nd := range nodes {
		logs = append(logs, readLog(t, nd.broker))
	}
	sort.Slice(failovers, func(i, j int) bool { return failovers[i] < failovers[j] })
	for i, nd := range nodes {
		v := check(&l.load, logs[i])
		t.Logf("%s: acked OK %d, attempted %d; stored %d: lost %d, duplicated %d, unexpected %d", nd.id, v.ok, len(l.attempts), v.stored, v.lost, v.dup, v.unexpected)
		if v.lost != 0 || v.unexpected != 0 || v.dup != 0 {
			t.Errorf("%s: lost %d, duplicated %d, unexpected %d", nd.id, v.lost, v.dup, v.unexpected)
		}
		if v.ok == 0 {
			t.Error("nothing was acked OK")
		}
	}
	sort.Slice(elections, func(i, j int) bool { return elections[i] < elections[j] })
	t.Logf("failover, fault → another node leads: %v (max %s); fault → next OK answer to a producer: %v (max %s)",
		elections, elections[len(elections)-1].Round(time.Millisecond), failovers, failovers[len(failovers)-1].Round(time.Millisecond))
}
