package verify

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// startTied starts cmd so that it dies with this process: the kernel sends
// it SIGKILL when verify dies, however it dies (kill -9 too), so that no
// node (keep_running: it would run for ever) or group member outlives the
// run. The signal goes when the thread that forked the child exits, not
// the process: every child is forked on one OS thread locked for the
// process's life (tiedStarts), so it is sent only at verify's death. A
// SIGKILL reaches a node stopped by a pause fault too; its plugins, which
// the node's plugin host ties to it (core/pluginhost), are continued when
// it dies and then exit as their host is gone.
func startTied(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if !untied {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	tiedOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for s := range tiedStarts {
				s.done <- s.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	tiedStarts <- tiedStart{cmd: cmd, done: done}
	return <-done
}

type tiedStart struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	tiedOnce   sync.Once
	tiedStarts = make(chan tiedStart)
)
