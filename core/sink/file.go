package sink

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferrymq/ferry/core/config"
)

// newFileSink appends each message to a file (created with its directory if
// missing), one write per message; a message is acknowledged once written
// (to the page cache: the file sink does not fsync).
func newFileSink(cfg config.Sink, o Options) (Sink, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	f, err := os.OpenFile(cfg.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	return newWriterSink(f, f, formatOr(cfg.Format, "json"), o.Flow), nil
}
