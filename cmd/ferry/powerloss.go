package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/verify"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// installPowerLoss arms the file store's power-loss hook: on SIGUSR1 the
// store drops what it did not fsync, as the OS would drop its page cache at a
// power cut (file.Store.CrashLoseUnflushed), and the process dies at once.
//
// In test builds with FERRY_FAULT_POWER_LOSS_TEAR=N (faults_on.go) the
// power loss also tears a write: the first N-1 records the last fsync did
// not cover stay whole and half of the N-th stays on disk
// (file.Store.CrashTearUnflushedAt), and a line on stderr says which record.
// With lyingDisk (test builds only, for a node a running ferry verify
// started: faults_on.go) the power loss also drops the newer half of what
// the store fsynced (file.Store.CrashLyingDisk): a loss beyond what any
// flush policy permits, which verify's verdict must fail.
func installPowerLoss(s *file.Store, lyingDisk bool) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		<-sig
		if lyingDisk {
			dropped, err := s.CrashLyingDisk()
			hclog.New(&hclog.LoggerOptions{JSONFormat: true, Output: os.Stderr}).Warn("power loss on a disk that lied about fsync",
				"fsynced_records_dropped", dropped, "error", err)
		} else if tearOnPowerLoss > 0 {
			pos, size, err := s.CrashTearUnflushedAt(tearOnPowerLoss)
			// JSON, so that the plugin host logs it at its level.
			hclog.New(&hclog.LoggerOptions{JSONFormat: true, Output: os.Stderr}).Warn("power loss with a torn write",
				"torn_record", tearOnPowerLoss, "torn_record_pos", pos, "torn_record_bytes", size, "half_kept", size > 0, "error", err)
		} else {
			_ = s.CrashLoseUnflushed()
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}()
}

// verifyPowerLoss says whether a running `ferry verify` asked for the
// power-loss hook of this node's store, and which one: the variable
// verify.EnvPowerLoss names a token file, private to its owner (mode 0600),
// that holds verify.PowerLossToken's line naming the pid of a live process
// whose command line is `ferry verify ...`. A production node has no such
// file, so its store has no such hook.
func verifyPowerLoss() (pid int, err error) {
	path := os.Getenv(verify.EnvPowerLoss)
	if path == "" {
		return 0, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o077 != 0 {
		return 0, fmt.Errorf("%s is not a private regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) != 3 || f[0] != verify.PowerLossMagic {
		return 0, fmt.Errorf("%s is not a token of ferry verify", path)
	}
	pid, err = strconv.Atoi(f[1])
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s names no process", path)
	}
	argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	args := strings.Split(string(argv), "\x00")
	if err != nil || len(args) < 2 || args[1] != "verify" {
		return 0, fmt.Errorf("process %d of %s is not a running ferry verify", pid, path)
	}
	return pid, nil
}
