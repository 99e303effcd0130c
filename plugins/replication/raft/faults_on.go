//go:build ferry_faults

package raft

import "os"

// EnvFaultOffsetsNoWait, in test builds only (go build -tags ferry_faults),
// set to "1", makes CommitOffsets answer as soon as raft took the entry,
// without waiting for its commit: the broker's old best-effort reporting,
// for the negative control of the test that a consumer commit acknowledged
// on the leader survives the leader's kill.
const EnvFaultOffsetsNoWait = "FERRY_FAULT_RAFT_OFFSETS_NOWAIT"

var offsetsNoWait = os.Getenv(EnvFaultOffsetsNoWait) == "1"

// EnvFaultNoReapply, in test builds only, set to "1", makes a node trust its
// applied-index file as it did before the store took committed entries
// without an fsync (the file written after each batch, read at start): what
// a power loss made the store lose is then not applied again. The negative
// control of the power-loss test of log-durable applies.
const EnvFaultNoReapply = "FERRY_FAULT_RAFT_NO_REAPPLY"

var noReapply = os.Getenv(EnvFaultNoReapply) == "1"

// EnvFaultNoRPCCheck, in test builds only, set to "1", takes raft's
// requests on a link whatever node id they claim, as before the check of
// rpcguard.go: the negative control of the test that an impostor's raft
// requests are refused.
const EnvFaultNoRPCCheck = "FERRY_FAULT_RAFT_NO_RPC_CHECK"

var noRPCCheck = os.Getenv(EnvFaultNoRPCCheck) == "1"

// EnvFaultNoForward, in test builds only, set to "1", makes a follower keep
// the consumer commits made through it, as it did before they were
// forwarded to the leader (forward.go): the negative control of the test
// that such a commit survives the leader's kill.
const EnvFaultNoForward = "FERRY_FAULT_RAFT_NO_FORWARD"

var offsetsNoForward = os.Getenv(EnvFaultNoForward) == "1"

// EnvFaultForwardNoGate, in test builds only, set to "1", makes the leader
// commit a follower's forwarded consumer commit through the log without
// its core's checks (the group's gate and generation), as before
// forward.go's commitForwarded: the negative control of the test that a
// commit sent through a follower before its group's deletion does not
// bring the group back.
const EnvFaultForwardNoGate = "FERRY_FAULT_RAFT_FORWARD_NO_GATE"

var forwardNoGate = os.Getenv(EnvFaultForwardNoGate) == "1"
