//go:build !unix

package file

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir opens the LOCK file; without flock on this platform a second
// process is not kept out. Ferry's supported platforms are unix.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage-file: store directory %s: %w", dir, classify(err))
	}
	return f, nil
}

// syncDir is a no-op where directories cannot be fsynced.
func syncDir(string) error { return nil }

// lockHeld cannot tell without flock.
func lockHeld(string) bool { return false }
