package sdktest_test

import (
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

// The suite checks itself against the in-memory store; the file store runs it
// from its own package.
func TestStorageMemory(t *testing.T) {
	sdktest.TestStorage(t, func(*testing.T, string) sdk.Storage { return memory.New() }, sdktest.StorageFeatures{
		RetentionConfig: []byte(`{"max_messages": 64}`),
	})
}
