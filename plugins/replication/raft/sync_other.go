//go:build !linux

package raft

import "os"

// syncFile makes a file's data durable.
func syncFile(f *os.File) error { return f.Sync() }
