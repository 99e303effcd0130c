//go:build ferry_faults

package main

import (
	"os"
	"strconv"
	"strings"
)

// consumeFault is ferry consume's fault hook in test builds (go build -tags
// ferry_faults), the negative control of ferry verify's group checks:
// FERRY_FAULT_CONSUME=skip:N makes the consumer take every Nth message it is
// given as processed without printing it (the group commits past a message
// it never delivered: lost); hold:N takes every Nth as processed, holds it
// back and prints it after the next one (a key's messages delivered out of
// order). Both may be given, comma-separated; a malformed value arms
// nothing. n counts the messages this process was given, from 1.
func consumeFault(n int64) consumeAction {
	for _, f := range strings.Split(os.Getenv("FERRY_FAULT_CONSUME"), ",") {
		kind, every, _ := strings.Cut(f, ":")
		k, err := strconv.ParseInt(every, 10, 64)
		if err != nil || k <= 0 || n%k != 0 {
			continue
		}
		switch kind {
		case "skip":
			return consumeSkip
		case "hold":
			return consumeHold
		}
	}
	return consumePrint
}
