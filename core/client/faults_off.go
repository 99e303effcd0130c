//go:build !ferry_faults

package client

// linePerBroker is false in release builds: an async line follows its queue
// to another broker (queueKey). The negative control of this package's
// tests sets it (export_test.go); a ferry_faults build takes it from the
// environment (faults_on.go).
var linePerBroker = false
