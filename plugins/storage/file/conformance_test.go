package file

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
)

// dataFiles lists the segments of a store kept in <dir>/storage-file.
func dataFiles(dir string) ([]string, error) {
	return filepath.Glob(filepath.Join(dir, dirName, "*"+segmentSuffix))
}

func newForSuite(t *testing.T, _ string) sdk.Storage { return newTestStore(t) }

// newTestStore returns a store that logs to the test's log.
func newTestStore(t testing.TB) *Store {
	s := New()
	s.log = hclog.New(&hclog.LoggerOptions{Name: "storage-file", Output: sdktest.TestWriter(t), Level: hclog.Info})
	return s
}

func TestConformanceSync(t *testing.T) {
	sdktest.TestStorage(t, newForSuite, sdktest.StorageFeatures{
		Config:          []byte(`{"flush": "sync", "segment_bytes": "1MiB"}`),
		Durable:         true,
		DataFiles:       dataFiles,
		RetentionConfig: []byte(`{"flush": "sync", "segment_bytes": "16KiB", "retention_bytes": "48KiB"}`),
	})
}

func TestConformanceAsync(t *testing.T) {
	sdktest.TestStorage(t, newForSuite, sdktest.StorageFeatures{
		Config:          []byte(`{"flush": "async", "flush_interval": "20ms", "preallocate": false}`),
		Durable:         true,
		DataFiles:       dataFiles,
		RetentionConfig: []byte(`{"flush": "async", "flush_interval": "10ms", "segment_bytes": "16KiB", "retention_age": "100ms", "preallocate": false}`),
	})
}

// Small preallocated segments: every case also crosses segment boundaries
// and uses spare segment files.
func TestConformanceSmallSegments(t *testing.T) {
	sdktest.TestStorage(t, newForSuite, sdktest.StorageFeatures{
		Config:    []byte(`{"segment_bytes": "4KiB", "group_commit_max_wait": "0s"}`),
		Durable:   true,
		DataFiles: dataFiles,
	})
}
