//go:build ferry_faults

package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// installFaults arms the fault-injection hooks of test builds (go build
// -tags ferry_faults): SIGUSR1 makes the file store "lose power": what was not
// fsynced is dropped, as the OS would drop its page cache, and the process
// dies at once. Release builds have no such hook.
func installFaults(p sdk.Plugin) {
	s, ok := p.(*file.Store)
	if !ok {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		<-sig
		_ = s.CrashLoseUnflushed()
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}()
}
