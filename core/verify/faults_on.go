//go:build ferry_faults

package verify

import "os"

// EnvFaultUntied, in test builds only (go build -tags ferry_faults), set to
// "1", starts verify's nodes and group members without the signal that
// ends them when verify dies (startTied): the negative control of the test
// that they do not outlive a verify killed with kill -9.
const EnvFaultUntied = "FERRY_FAULT_VERIFY_UNTIED"

var untied = os.Getenv(EnvFaultUntied) == "1"
