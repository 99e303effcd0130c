//go:build linux

package ring

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func createShared(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// newBell makes a ring's bell: a non-blocking eventfd, so that a reader
// waiting for it parks in Go's netpoller and holds no thread or P.
func newBell() (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "ferry-ring-bell"), nil
}

func mapShared(f *os.File, size int) ([]byte, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("ring: map shared memory: %w", err)
	}
	return mem, nil
}

func unmapShared(mem []byte) error {
	if mem == nil {
		return nil
	}
	return unix.Munmap(mem)
}

// yieldProcessor lets another runnable thread, of any process, have this
// core for a moment (sched_yield).
func yieldProcessor() { _, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
