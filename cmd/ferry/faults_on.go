//go:build ferry_faults

package main

import (
	"os"
	"strconv"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// installFaults arms the fault-injection hooks of test builds (go build
// -tags ferry_faults): SIGUSR1 makes the file store "lose power": what was not
// fsynced is dropped, as the OS would drop its page cache, and the process
// dies at once. Release builds arm it only for ferry verify (faults_off.go).
func installFaults(p sdk.Plugin) {
	if s, ok := p.(*file.Store); ok {
		installPowerLoss(s)
	}
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
