//go:build !ferry_faults

package main

// consumeFault: release builds print every message (consume_faults_on.go
// has the test builds' hook).
func consumeFault(int64) consumeAction { return consumePrint }
