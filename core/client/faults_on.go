//go:build ferry_faults

package client

import "os"

// EnvFaultLinePerBroker, in test builds only (go build -tags ferry_faults),
// set to 1 brings back the async producer's bug this package fixed: a line
// of batches is keyed on its broker too, so that when a queue moves to
// another broker (a raft failover) the batches picked for the new broker go
// out while the old broker's batch is still being retried, and overtake it.
// The negative control of the verify tests of a key's order across a
// failover (cmd/ferry) sets it.
const EnvFaultLinePerBroker = "FERRY_FAULT_ASYNC_LINE_PER_BROKER"

var linePerBroker = os.Getenv(EnvFaultLinePerBroker) == "1"
