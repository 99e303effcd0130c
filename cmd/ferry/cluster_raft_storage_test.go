package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// storagePlugin is the pid of the storage plugin process in a node's
// process group (0: none running).
func storagePlugin(n *raftNode) int {
	pgid := n.cmd.Process.Pid
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == pgid {
			continue
		}
		st, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(st, ')')
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[2] != strconv.Itoa(pgid) {
			continue
		}
		if cmdline, _ := os.ReadFile(d + "/cmdline"); bytes.Contains(cmdline, []byte("storage/file")) {
			return pid
		}
	}
	return 0
}

// Raft, 3 nodes, under load: the storage plugin of a follower, then of the
// leader, is killed (kill -9) three times each while the apply pipeline has
// appends in flight; the host restarts it. The pipeline starts every
// append that failed again in log order, so every node ends with the same
// log, queue by queue: lost, duplicated and unexpected 0.
func TestFaultRaftStoragePluginKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	var seeds []string
	for _, nd := range nodes {
		nd.start(t, bin)
		seeds = append(seeds, nd.broker)
	}
	waitLeader(t, nodes, "a raft leader")
	l := startClusterLoad(t, seeds, 4, true)
	l.waitOK(t, nodes, time.Time{}, 50, 0, "the load before the first kill")
	for round := range 6 {
		leader, _ := waitLeader(t, nodes, "a raft leader")
		victim := leader
		if round < 3 {
			for _, nd := range nodes {
				if nd != leader {
					victim = nd
					break
				}
			}
		}
		var pid int
		eventually(t, faultWait, victim.id+"'s storage plugin running", func() bool { pid = storagePlugin(victim); return pid != 0 })
		t0 := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s round %d: killed the storage plugin (pid %d) of %s (leader %s)", stamp(), round, pid, victim.id, leader.id)
		eventually(t, faultWait, victim.id+"'s storage plugin restarted", func() bool {
			p := storagePlugin(victim)
			return p != 0 && p != pid
		})
		l.waitOK(t, nodes, t0, 30, 0, fmt.Sprintf("the load after round %d", round))
	}
	l.halt()
	convergeAndCheck(t, nodes, &l.load, faultWait)
	for _, nd := range nodes {
		out := nd.out.String()
		t.Logf("%s: apply pipeline recoveries logged: %d failed waits, %d refused starts", nd.id,
			strings.Count(out, "applying a committed entry failed"), strings.Count(out, "starting a committed entry's append failed"))
	}
}
