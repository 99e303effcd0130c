// Package atomicfile replaces small state files so that a crash leaves the
// old content or the new one whole, never a mix or nothing: the data goes to
// a temporary file in the same directory, which is fsynced, renamed over the
// old file, and the directory fsynced so that the rename itself is durable.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile replaces dir/name with data, created with perm. The directory
// must exist.
func WriteFile(dir, name string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, nothing is there
	if err = tmp.Chmod(perm); err == nil {
		if _, err = tmp.Write(data); err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err == nil {
		err = SyncDir(dir)
	}
	return err
}

// SyncDir fsyncs a directory: the entries created, renamed or removed in it
// are durable once it returns.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
