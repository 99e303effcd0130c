//go:build unix

package sink

import (
	"os/exec"
	"syscall"
)

// killGroup runs cmd in its own process group and makes cancelling it kill
// the whole group, so that a shell's children do not outlive a timeout.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
