//go:build !ferry_faults

package raft

// offsetsNoWait is false in release builds: CommitOffsets waits for the
// commit (faults_on.go).
const offsetsNoWait = false
