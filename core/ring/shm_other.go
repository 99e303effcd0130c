//go:build !linux

package ring

import (
	"errors"
	"os"
	"syscall"
)

var errUnsupported = errors.New("ring: the shared-memory data plane is only supported on Linux")

func createShared(string) (*os.File, error)    { return nil, errUnsupported }
func newBell() (int, error)                    { return -1, errUnsupported }
func listenBell(int) (*os.File, error)         { return nil, errUnsupported }
func ringFD(int)                               {}
func readBell(syscall.RawConn, *[8]byte) error { return errUnsupported }
func closeFD(int) error                        { return nil }
func mapShared(*os.File, int) ([]byte, error)  { return nil, errUnsupported }
func unmapShared([]byte) error                 { return nil }

func yieldProcessor() {}
