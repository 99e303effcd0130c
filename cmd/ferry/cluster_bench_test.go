package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// EnvClusterBench runs TestClusterProduceBenchmark: the produce rate with
// replication none, async, sync and raft, nodes on loopback with file
// storage (flush sync; and sync replication once more with the slave's
// store on flush async, RocketMQ's usual SYNC_MASTER setup), as ratios to none measured in the same run. The
// setups are interleaved: every rep runs each setup once, fresh; the result
// is the median of the reps (FERRY_CLUSTER_BENCH_REPS, default 3). Not run by
// CI (about 1 minute per rep):
//
//	FERRY_CLUSTER_BENCH=1 go test -run TestClusterProduceBenchmark -v -timeout 30m ./cmd/ferry/
//
// FERRY_CLUSTER_BENCH_ONLY=raft,none runs only the named setups (keep none
// in the list: the ratios are to it). The setups named *-grpc-plane are sync
// and raft with the plugins' hot calls on gRPC (plugins.data_plane: grpc),
// against the shared-memory rings of the others. raft is the raft plugin's
// default (store_fsync: false), raft-store-fsync the same group with
// store_fsync: true: FERRY_CLUSTER_BENCH_ONLY=none,raft,raft-store-fsync
// sets them side by side. sync-tls and raft-tls are sync and raft with
// their replication links over mutual TLS (a CA made by the test, each
// node's certificate naming its node id): FERRY_CLUSTER_BENCH_ONLY=none,sync,sync-tls,raft,raft-tls
// measures what TLS costs replication. FERRY_CLUSTER_BENCH_DURATION (default 5s) is
// each workload's duration (a short one for a smoke run only).
const EnvClusterBench = "FERRY_CLUSTER_BENCH"

func TestClusterProduceBenchmark(t *testing.T) {
	if os.Getenv(EnvClusterBench) == "" {
		t.Skip("set " + EnvClusterBench + "=1 to run the replication benchmark")
	}
	reps := 3
	if r, err := strconv.Atoi(os.Getenv("FERRY_CLUSTER_BENCH_REPS")); err == nil && r > 0 {
		reps = r
	}
	duration := "5s"
	if d := os.Getenv("FERRY_CLUSTER_BENCH_DURATION"); d != "" {
		if v, err := time.ParseDuration(d); err != nil || v <= 0 {
			t.Fatalf("FERRY_CLUSTER_BENCH_DURATION=%q: want a positive duration such as 5s", d)
		}
		duration = d
	}
	bin := ferrytest.Binary(t)
	type setup struct {
		name  string
		start func() []string // brokers to send to
	}
	var running []*clusterNode
	// slave is the master–slave setups' slave node while it runs, whose
	// processes' CPU time per message acked is reported.
	var slave *clusterNode
	stopAll := func() {
		for _, n := range running {
			n.kill(t)
		}
		running = nil
	}
	defer stopAll()
	ctx := context.Background()
	// The *-tls setups' replication links speak mutual TLS with the
	// cluster CA, each node's certificate naming its node id.
	ca := securitytest.NewCA(t, "bench")
	pairs := map[string]securitytest.Pair{}
	for _, id := range []string{"master", "slave", "r1", "r2", "r3"} {
		pairs[id] = ca.Issue(id, securitytest.Options{Peer: true})
	}
	masterSlave := func(mode, slaveFlush string, tls bool) []string {
		mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
		var mLink, sLink string
		var peers *security.Peers
		if tls {
			mLink, sLink = peerLink(pairs["master"], ca.CertFile, ""), peerLink(pairs["slave"], ca.CertFile, "")
			peers = mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: pairs["slave"].CertFile, KeyFile: pairs["slave"].KeyFile, CAFile: ca.CertFile}})
		}
		m := writeLinkedNode(t, "master", "master", mode, mb, mr, []string{sr}, mLink)
		s := writeLinkedNode(t, "slave", "slave", mode, sb, sr, []string{mr}, sLink)
		if slaveFlush != "sync" {
			y, err := os.ReadFile(s.yaml)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.yaml, []byte(strings.Replace(string(y), "flush: sync", "flush: "+slaveFlush, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		m.start(t, bin)
		s.start(t, bin)
		running = append(running, m, s)
		slave = s
		eventually(t, 60*time.Second, "slave linked", func() bool {
			st, err := clusterStatusVia(ctx, peers, sr)
			return err == nil && st.LeaderConnected
		})
		return []string{mb}
	}
	// raftSetup starts 3 raft nodes with extra keys of the raft config;
	// tls secures their links.
	raftSetup := func(extra string, tls bool) []string {
		var peers *security.Peers
		if tls {
			node := func(file string) string {
				return filepath.Join(filepath.Dir(file), "{{node}}"+strings.TrimPrefix(filepath.Base(file), "r1"))
			}
			extra += fmt.Sprintf("tls: {cert_file: %q, key_file: %q, ca_file: %q}\n", node(pairs["r1"].CertFile), node(pairs["r1"].KeyFile), ca.CertFile)
			peers = mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: pairs["r1"].CertFile, KeyFile: pairs["r1"].KeyFile, CAFile: ca.CertFile}})
		}
		nodes := raftGroupVia(t, 3, nil, extra)
		var seeds []string
		for _, nd := range nodes {
			nd.peers = peers
			nd.start(t, bin)
			running = append(running, nd.clusterNode)
			seeds = append(seeds, nd.broker)
		}
		eventually(t, 60*time.Second, "a raft leader", func() bool { return raftLeader(nodes) != nil })
		return seeds
	}
	setups := []setup{
		{"none", func() []string {
			b := ferrytest.FreeAddr(t)
			dir := t.TempDir()
			yaml := fmt.Sprintf("name: bench\nnode: {id: solo, data_dir: %s}\nplugins:\n  storage: {type: file, config: {flush: sync}}\n  transport: {type: grpc, config: {listen: %q}}\ntopics:\n  - {name: orders, queues: 4}\n", filepath.Join(dir, "data"), b)
			path := filepath.Join(dir, "solo.yaml")
			if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			n := &clusterNode{id: "solo", broker: b, yaml: path}
			n.start(t, bin)
			running = append(running, n)
			eventually(t, 60*time.Second, "broker up", func() bool {
				return exec.Command(bin, "produce", "--broker", b, "--topic", "orders", "--count", "1", "--size", "8").Run() == nil
			})
			return []string{b}
		}},
		{"async", func() []string { return masterSlave("async", "sync", false) }},
		{"sync", func() []string { return masterSlave("sync", "sync", false) }},
		// The same with the replication link over mutual TLS.
		{"sync-tls", func() []string { return masterSlave("sync", "sync", true) }},
		// RocketMQ's usual SYNC_MASTER deployment: the slave confirms
		// once the batch is in its page cache (its store's flush: async);
		// the master still fsyncs before it answers.
		{"sync-slave-async-flush", func() []string { return masterSlave("sync", "async", false) }},
		// raft with its default store_fsync: false (the store takes
		// committed entries without an fsync of its own: one fsync per
		// message, the raft log's), then with store_fsync: true (the
		// store fsyncs each applied batch too: the old double write).
		{"raft", func() []string { return raftSetup("", false) }},
		{"raft-tls", func() []string { return raftSetup("", true) }},
		{"raft-store-fsync", func() []string { return raftSetup("store_fsync: true\n", false) }},
	}
	// The same setups with every plugin's hot calls on gRPC instead of the
	// shared-memory rings (plugins.data_plane: grpc, through the
	// environment the nodes inherit).
	for _, name := range []string{"sync", "raft"} {
		for _, s := range setups {
			if s.name == name {
				start := s.start
				setups = append(setups, setup{name + "-grpc-plane", func() []string {
					t.Setenv("FERRY_PLUGINS__DATA_PLANE", "grpc")
					defer os.Unsetenv("FERRY_PLUGINS__DATA_PLANE")
					return start()
				}})
			}
		}
	}
	if only := os.Getenv("FERRY_CLUSTER_BENCH_ONLY"); only != "" {
		want := map[string]bool{}
		for _, name := range strings.Split(only, ",") {
			want[strings.TrimSpace(name)] = true
		}
		var kept []setup
		for _, s := range setups {
			if want[s.name] {
				kept = append(kept, s)
			}
		}
		if len(kept) == 0 {
			t.Fatalf("FERRY_CLUSTER_BENCH_ONLY=%q names no setup", only)
		}
		setups = kept
	}
	workloads := [][]string{
		{"--mode", "sync", "--producers", "1"},
		{"--mode", "sync", "--producers", "16"},
		{"--mode", "async", "--producers", "4", "--inflight", "256"},
	}
	// FERRY_CLUSTER_BENCH_BINS=old=PATH,new=PATH runs every setup with
	// each binary in turn (named setup@old, setup@new), interleaved, each
	// setup's ratio to none of the same binary.
	type binary struct{ name, path string }
	bins := []binary{{"", bin}}
	if v := os.Getenv("FERRY_CLUSTER_BENCH_BINS"); v != "" {
		bins = nil
		for _, kv := range strings.Split(v, ",") {
			name, path, ok := strings.Cut(kv, "=")
			if !ok || name == "" || path == "" {
				t.Fatalf("FERRY_CLUSTER_BENCH_BINS=%q: want name=path,name=path", v)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("FERRY_CLUSTER_BENCH_BINS: binary %s: %v", name, err)
			}
			bins = append(bins, binary{name, path})
		}
	}
	type sample struct{ rate, p50, slaveCPU float64 }
	samples := map[string]map[string][]sample{} // setup → workload → one per rep
	var order []string                          // workload names, in order
	var names []string                          // setups, as reported
	noneOf := map[string]string{}               // setup → the none it is a ratio to
	for _, s := range setups {
		for _, b := range bins {
			name, none := s.name, "none"
			if b.name != "" {
				name, none = name+"@"+b.name, "none@"+b.name
			}
			names = append(names, name)
			noneOf[name] = none
		}
	}
	for rep := range reps {
		for i, run := range names {
			s, b := setups[i/len(bins)], bins[i%len(bins)]
			bin = b.path
			slave = nil
			brokers := s.start()
			if samples[run] == nil {
				samples[run] = map[string][]sample{}
			}
			for _, w := range workloads {
				var cpu0 map[string]time.Duration
				if slave != nil {
					cpu0 = groupCPU(t, slave.cmd.Process.Pid)
				}
				args := append([]string{"bench", "produce", "--broker", strings.Join(brokers, ","), "--topic", "orders", "--size", "1024", "--duration", duration, "--json"}, w...)
				out, err := exec.Command(bin, args...).Output()
				var exit *exec.ExitError
				if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1 && json.Valid(out)) {
					t.Fatalf("%s %v: %v\n%s", s.name, w, err, out)
				}
				// Exit status 1 with a result: some sends did not end OK (a
				// raft leader that stepped down on a loaded machine, say);
				// the statuses below count them.
				var res struct {
					Results []struct {
						Workload   string         `json:"workload"`
						MsgsPerSec float64        `json:"msgs_per_sec"`
						Statuses   map[string]int `json:"statuses"`
						Latency    *struct {
							P50 float64 `json:"p50_us"`
						} `json:"latency"`
					} `json:"results"`
				}
				if err := json.Unmarshal(out, &res); err != nil || len(res.Results) == 0 {
					t.Fatalf("%s: bad bench output %v: %s", s.name, err, out)
				}
				r := res.Results[0]
				p50 := 0.0
				if r.Latency != nil {
					p50 = r.Latency.P50
				}
				if rep == 0 && i == 0 {
					order = append(order, r.Workload)
				}
				// The slave's processes' CPU time per message it took.
				perMsg, cpuNote := 0.0, ""
				if cpu0 != nil {
					cpu1 := groupCPU(t, slave.cmd.Process.Pid)
					var total time.Duration
					var parts []string
					for _, k := range slices.Sorted(maps.Keys(cpu1)) {
						d := cpu1[k] - cpu0[k]
						total += d
						parts = append(parts, fmt.Sprintf("%s %.1f", k, perMessage(d, r.Statuses)))
					}
					perMsg = perMessage(total, r.Statuses)
					cpuNote = fmt.Sprintf("  slave CPU %.1f µs/msg (%s)", perMsg, strings.Join(parts, ", "))
				}
				samples[run][r.Workload] = append(samples[run][r.Workload], sample{r.MsgsPerSec, p50, perMsg})
				t.Logf("rep %d: %-22s %-22s %8.0f msgs/s  p50 %6.0f µs  statuses %v%s", rep+1, run, r.Workload, r.MsgsPerSec, p50, r.Statuses, cpuNote)
			}
			stopAll()
		}
	}
	median := func(xs []sample, f func(sample) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	t.Logf("medians of %d reps (ratio: median rate ÷ median rate of none):", reps)
	for _, name := range names {
		var parts []string
		for _, w := range order {
			rate := median(samples[name][w], func(x sample) float64 { return x.rate })
			none := 0.0 // not measured: no ratio
			if len(samples[noneOf[name]][w]) > 0 {
				none = median(samples[noneOf[name]][w], func(x sample) float64 { return x.rate })
			}
			p50 := median(samples[name][w], func(x sample) float64 { return x.p50 })
			part := fmt.Sprintf("%s %.0f/s p50 %.0fµs %.2f×", w, rate, p50, rate/none)
			if cpu := median(samples[name][w], func(x sample) float64 { return x.slaveCPU }); cpu > 0 {
				part += fmt.Sprintf(" slave %.1fµs/msg", cpu)
			}
			parts = append(parts, part)
		}
		t.Logf("%-26s %s", name, strings.Join(parts, " | "))
	}
}

// perMessage is d in µs per message taken (answered OK or sent) by a
// bench run of statuses.
func perMessage(d time.Duration, statuses map[string]int) float64 {
	n := statuses["OK"] + statuses["SENT"]
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// groupCPU is the CPU time (user and system) of every live process in the
// process group pgid so far, by what each is: "core" for the group's
// leader (ferry run), else the plugin it serves ("storage", "replication",
// "transport", from `ferry plugin serve KIND/TYPE`).
func groupCPU(t *testing.T, pgid int) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	const tick = 10 * time.Millisecond // USER_HZ 100, as on every Linux
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// Fields after the command's closing parenthesis: state(3) ppid
		// pgrp ... utime(14) stime(15).
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 13 {
			continue
		}
		if pg, _ := strconv.Atoi(f[2]); pg != pgid {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		kind := "core"
		if pid != pgid {
			kind = "plugin"
			if cmd, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline")); err == nil {
				args := strings.Split(string(cmd), "\x00")
				for j := 0; j+2 < len(args); j++ {
					if args[j] == "plugin" && args[j+1] == "serve" {
						kind, _, _ = strings.Cut(args[j+2], "/")
					}
				}
			}
		}
		out[kind] += time.Duration(ut+st) * tick
	}
	return out
}
