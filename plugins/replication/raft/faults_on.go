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
