//go:build ferry_faults

package main

import (
	"errors"
	"os"
	"strconv"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// installFaults arms the fault-injection hooks of test builds (go build
// -tags ferry_faults): SIGUSR1 makes the file store "lose power": what was not
// fsynced is dropped, as the OS would drop its page cache, and the process
// dies at once. Release builds arm it only for ferry verify (faults_off.go).
func installFaults(p sdk.Plugin) {
	if s, ok := p.(*file.Store); ok {
		installPowerLoss(s, lyingDisk())
	}
}

// EnvFaultPowerLossLyingDisk, set to "1" in a test build's node that a
// running ferry verify started (its power-loss token checks out:
// verifyPowerLoss), makes the store's power loss drop the newer half of what
// it fsynced as well (file.Store.CrashLyingDisk): a disk whose cache lied
// about fsync. It is verify's negative control for a loss beyond what flush
// async permits; a release build has no such hook (faults_off.go), and a
// node that verify did not start ignores the variable.
const EnvFaultPowerLossLyingDisk = "FERRY_FAULT_POWER_LOSS_LYING_DISK"

func lyingDisk() bool {
	if os.Getenv(EnvFaultPowerLossLyingDisk) != "1" {
		return false
	}
	log := hclog.New(&hclog.LoggerOptions{JSONFormat: true, Output: os.Stderr})
	pid, err := verifyPowerLoss()
	if err == nil && pid == 0 {
		err = errors.New("no ferry verify started this node")
	}
	if err != nil {
		log.Warn("lying-disk hook refused", "error", err)
		return false
	}
	log.Warn("lying-disk hook armed for ferry verify: a power loss drops the newer half of what was fsynced", "verify_pid", pid)
	return true
}

// EnvFaultPowerLossTear, set to "1" in test builds, makes the file store's
// power loss tear the first record the last fsync did not cover (half of
// it stays on disk) instead of cutting cleanly before it (powerloss.go);
// set to N > 1, the first N-1 unsynced records survive whole and the N-th
// is torn, so that a batch of several messages survives in part.
const EnvFaultPowerLossTear = "FERRY_FAULT_POWER_LOSS_TEAR"

// tearOnPowerLoss is the unsynced record a power loss tears (1: the first);
// 0: none.
var tearOnPowerLoss = func() int {
	n, err := strconv.Atoi(os.Getenv(EnvFaultPowerLossTear))
	if err != nil || n < 0 {
		return 0
	}
	return n
}()
