//go:build !ferry_faults

package main

import "github.com/ferrymq/ferry/core/sdk"

// installFaults does nothing in release builds; see faults_on.go.
func installFaults(sdk.Plugin) {}
