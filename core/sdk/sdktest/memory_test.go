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

// plainStorage hides the store's optional capabilities (sdk.EarlyOffsets):
// a third-party store that has only Storage.
type plainStorage struct{ sdk.Storage }

// A store without sdk.EarlyOffsets still works through the plugin boundary,
// where the host's client asks for early answers the plugin never sends: the
// final answer ends its AppendWritten.
func TestStorageWithoutEarlyOffsets(t *testing.T) {
	sdktest.TestStorage(t, func(*testing.T, string) sdk.Storage { return plainStorage{memory.New()} }, sdktest.StorageFeatures{})
}
