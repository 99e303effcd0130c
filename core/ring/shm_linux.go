//go:build linux

package ring

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func createShared(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// newBell makes a ring's bell: an eventfd.
func newBell() (int, error) {
	return unix.Eventfd(0, unix.EFD_CLOEXEC)
}

// listenBell returns the consumer's end of a bell: a non-blocking duplicate
// of fd registered with Go's netpoller, so that a reader waiting on it parks
// and holds no thread or P.
func listenBell(fd int) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(d, true); err != nil {
		_ = unix.Close(d)
		return nil, err
	}
	return os.NewFile(uintptr(d), "ferry-ring-bell"), nil
}

// ringFD writes 1 to the eventfd fd (not through the poller: the producer's
// process never waits on the bell it rings).
//
// The bells' system calls are raw (no entersyscall): they never block (the
// eventfd is non-blocking, and its counter cannot reach its limit of 2^64-2),
// and a system call through the scheduler wakes Go's sysmon thread whenever
// it sleeps deeply, which it does each time the process goes idle: between
// the frames of a request/answer chain, an extra thread wake-up or two per
// frame. See docs/performance.md ("sysmon").
func ringFD(fd int) {
	var one = [8]byte{1}
	_, _, _ = unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&one[0])), 8)
}

// readBell waits, on Go's netpoller, until the bell (rc, of listenBell's
// file) was rung, and resets it; the read itself is raw, as in ringFD. It
// returns the file's deadline error when that passes first.
func readBell(rc syscall.RawConn, buf *[8]byte) error {
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		_, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), 8)
		if e == unix.EAGAIN {
			return false
		}
		if e != 0 {
			rerr = e
		}
		return true
	})
	if err != nil {
		return err
	}
	return rerr
}

func closeFD(fd int) error { return unix.Close(fd) }

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
func yieldProcessor() { _, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
