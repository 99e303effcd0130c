package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// EnvClusterBench runs TestClusterProduceBenchmark: the produce rate with
// replication none, async, sync and raft, nodes on loopback with file
// storage (flush sync), all in one run, as ratios to none. Not run by CI:
//
//	FERRY_CLUSTER_BENCH=1 go test -run TestClusterProduceBenchmark -v ./cmd/ferry/
const EnvClusterBench = "FERRY_CLUSTER_BENCH"

func TestClusterProduceBenchmark(t *testing.T) {
	if os.Getenv(EnvClusterBench) == "" {
		t.Skip("set " + EnvClusterBench + "=1 to run the replication benchmark")
	}
	bin := ferrytest.Binary(t)
	type setup struct {
		name  string
		start func() []string // brokers to send to
	}
	var running []*clusterNode
	stopAll := func() {
		for _, n := range running {
			n.kill(t)
		}
		running = nil
	}
	defer stopAll()
	ctx := context.Background()
	masterSlave := func(mode string) []string {
		mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
		m := writeNode(t, "master", "master", mode, mb, mr, []string{sr}, "3s")
		s := writeNode(t, "slave", "slave", mode, sb, sr, []string{mr}, "3s")
		m.start(t, bin)
		s.start(t, bin)
		running = append(running, m, s)
		eventually(t, 60*time.Second, "slave linked", func() bool {
			st, err := clusterStatus(ctx, sr)
			return err == nil && st.LeaderConnected
		})
		return []string{mb}
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
		{"async", func() []string { return masterSlave("async") }},
		{"sync", func() []string { return masterSlave("sync") }},
		{"raft", func() []string {
			nodes := raftGroup(t, 3)
			var seeds []string
			for _, nd := range nodes {
				nd.start(t, bin)
				running = append(running, nd.clusterNode)
				seeds = append(seeds, nd.broker)
			}
			eventually(t, 60*time.Second, "a raft leader", func() bool { return raftLeader(nodes) != nil })
			return seeds
		}},
	}
	workloads := [][]string{
		{"--mode", "sync", "--producers", "16"},
		{"--mode", "async", "--producers", "4", "--inflight", "256"},
	}
	rates := map[string]map[string]float64{}
	for _, s := range setups {
		brokers := s.start()
		rates[s.name] = map[string]float64{}
		for _, w := range workloads {
			args := append([]string{"bench", "produce", "--broker", strings.Join(brokers, ","), "--topic", "orders", "--size", "1024", "--duration", "5s", "--json"}, w...)
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", s.name, w, err, out)
			}
			var res struct {
				Results []struct {
					Workload   string         `json:"workload"`
					MsgsPerSec float64        `json:"msgs_per_sec"`
					Statuses   map[string]int `json:"statuses"`
				} `json:"results"`
			}
			if err := json.Unmarshal(out, &res); err != nil || len(res.Results) == 0 {
				t.Fatalf("%s: bad bench output %v: %s", s.name, err, out)
			}
			r := res.Results[0]
			rates[s.name][r.Workload] = r.MsgsPerSec
			t.Logf("%-5s %-22s %8.0f msgs/s  statuses %v", s.name, r.Workload, r.MsgsPerSec, r.Statuses)
		}
		stopAll()
	}
	for _, s := range setups {
		var parts []string
		for w, r := range rates[s.name] {
			parts = append(parts, fmt.Sprintf("%s %.2f×", w, r/rates["none"][w]))
		}
		t.Logf("%-5s vs none: %s", s.name, strings.Join(parts, ", "))
	}
}
