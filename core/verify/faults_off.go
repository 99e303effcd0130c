//go:build !ferry_faults

package verify

// untied is false in release builds: verify's children die with it
// (startTied; faults_on.go).
const untied = false
