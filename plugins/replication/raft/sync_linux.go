package raft

import (
	"os"
	"syscall"
)

// syncFile makes a file's data durable. fdatasync skips the timestamp
// update fsync would also write; a grown size is still synced.
func syncFile(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
