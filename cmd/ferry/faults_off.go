//go:build !ferry_faults

package main

import (
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/verify"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// installFaults arms the file store's power-loss hook in a release build
// only for a node that a running `ferry verify` started and asked for it
// (verifyPowerLoss); see faults_on.go for test builds.
func installFaults(p sdk.Plugin) {
	s, ok := p.(*file.Store)
	if !ok || os.Getenv(verify.EnvPowerLoss) == "" {
		return
	}
	log := hclog.New(&hclog.LoggerOptions{JSONFormat: true, Output: os.Stderr})
	pid, err := verifyPowerLoss()
	if err != nil {
		log.Warn("power-loss hook refused", "error", err)
		return
	}
	log.Warn("power-loss hook armed for ferry verify: SIGUSR1 drops what was not fsynced", "verify_pid", pid)
	installPowerLoss(s, false) // a release build has no lying disk
}

// tearOnPowerLoss is 0 in release builds: a power loss cuts the store
// cleanly at its last fsync (faults_on.go).
const tearOnPowerLoss = 0
