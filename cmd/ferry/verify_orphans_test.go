package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// A verify killed with kill -9 mid-run takes its processes with it: its
// node (which runs with keep_running, so it would never stop by itself),
// the node's plugins (they exit when their host is gone) and its group's
// ferry consume.
func TestVerifyDeathEndsItsNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	pids := killVerifyMidRun(t, ferryBin, nil)
	deadline := time.Now().Add(60 * time.Second)
	for {
		var left []string
		for _, p := range pids {
			if st := procState(p.pid); st != "" && st != "Z" {
				left = append(left, fmt.Sprintf("%s %d (%s)", p.what, p.pid, st))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("60s after verify's kill -9 these of its processes still run: %s", strings.Join(left, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The negative control: with verify's children started untied (a test
// build's FERRY_FAULT_VERIFY_UNTIED=1), its node and the node's plugins
// outlive it. (The group's member may die on its own then: its stdout, a
// pipe to verify, is broken at its next delivery.)
func TestVerifyDeathEndsItsNodesControl(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	pids := killVerifyMidRun(t, bin, []string{"FERRY_FAULT_VERIFY_UNTIED=1"})
	// Given time to die (what the tied ones take is well under this),
	// they do not.
	time.Sleep(3 * time.Second)
	var dead, states []string
	for _, p := range pids {
		st := procState(p.pid)
		if p.what != "consumer" && (st == "" || st == "Z") {
			dead = append(dead, p.what)
		}
		states = append(states, fmt.Sprintf("%s %d: %q", p.what, p.pid, st))
	}
	if len(dead) > 0 {
		t.Fatalf("untied, %s did not outlive verify: the test cannot tell (%s)", strings.Join(dead, ", "), strings.Join(states, ", "))
	}
}

type verifyChild struct {
	what string
	pid  int
}

// killVerifyMidRun runs ferry verify (bin) of pipelines/broker.yaml with a
// group, waits until its node, the node's plugins and the group's member
// run, kills verify with kill -9, and returns those processes. A cleanup
// kills any that are left.
//
// (A verify killed while a pause fault holds its node stopped is not the
// test: the node's process group is then orphaned with stopped members,
// and the kernel itself sends them SIGHUP and SIGCONT, which end them.)
func killVerifyMidRun(t *testing.T, bin string, env []string) []verifyChild {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(bin, "verify", "../../pipelines/broker.yaml", "--duration", "60s", "--producers", "1", "--groups", "1",
		"--faults", "kill:transport@55s", "--out", out)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var found []verifyChild
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		for _, p := range found {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		found = found[:0]
		var node, consumer int
		for _, pid := range childrenOf(cmd.Process.Pid) {
			line := cmdline(pid)
			switch {
			case strings.Contains(line, " run ") && strings.Contains(line, out):
				node = pid
			case strings.Contains(line, " consume "):
				consumer = pid
			}
		}
		plugins := 0
		if node != 0 {
			found = append(found, verifyChild{"node", node})
			for _, pid := range childrenOf(node) {
				if strings.Contains(cmdline(pid), " plugin serve ") {
					found = append(found, verifyChild{"plugin " + cmdline(pid), pid})
					plugins++
				}
			}
		}
		if consumer != 0 {
			found = append(found, verifyChild{"consumer", consumer})
		}
		// Storage and transport, and the consumer joined: mid-run.
		if plugins >= 2 && consumer != 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(out, "node.log"))
			t.Fatalf("verify's node, its plugins and its group's member were not all there within 90s: %+v\n%s", found, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	return append([]verifyChild(nil), found...)
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := procStatFields(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// procState is a process's state letter (R, S, T, Z, ...), "" when it is
// gone.
func procState(pid int) string {
	if f := procStatFields(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

// procStatFields are the fields of /proc/PID/stat after the command name.
func procStatFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}
