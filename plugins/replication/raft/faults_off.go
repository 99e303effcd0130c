//go:build !ferry_faults

package raft

// offsetsNoWait is false in release builds: CommitOffsets waits for the
// commit (faults_on.go).
const offsetsNoWait = false

// noReapply is false in release builds: entries the store lost are applied
// again from the log (faults_on.go).
const noReapply = false

// noRPCCheck is false in release builds: raft requests must claim their
// link's node id (faults_on.go).
const noRPCCheck = false

// offsetsNoForward is false in release builds: a follower forwards the
// consumer commits made through it to the leader (faults_on.go).
const offsetsNoForward = false

// forwardNoGate is false in release builds: a forwarded commit goes through
// the leader's core (forward.go).
const forwardNoGate = false
