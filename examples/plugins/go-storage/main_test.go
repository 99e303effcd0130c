package main

import (
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
)

// The storage suite from this module's own go test, as any third-party
// store runs it: every case on the store directly, over gRPC and over the
// shared-memory rings, through the real plugin boundary. `ferry plugin
// test storage ./ferry-storage-example` runs the same cases against the
// built executable.
func TestConformance(t *testing.T) {
	sdktest.TestStorage(t, func(*testing.T, string) sdk.Storage { return &store{} }, sdktest.StorageFeatures{})
}
