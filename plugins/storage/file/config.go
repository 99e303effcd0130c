package file

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Flush policies (config key flush).
const (
	// FlushSync acknowledges an append once it is fsynced (group commit).
	FlushSync = "sync"
	// FlushAsync acknowledges an append once it is written to the page
	// cache; fsync runs every flush_interval or flush_bytes.
	FlushAsync = "async"
)

// Defaults and limits of the config section.
const (
	DefaultGroupCommitMaxWait = 2 * time.Millisecond
	DefaultFlushInterval      = 500 * time.Millisecond
	DefaultFlushBytes         = 4 << 20
	DefaultFlushTimeout       = 5 * time.Second
	DefaultSegmentBytes       = 64 << 20
	// MinSegmentBytes is small so that tests can roll segments quickly;
	// production stores want megabytes.
	MinSegmentBytes = 4 << 10
	MaxSegmentBytes = 1 << 30
	// maxGroupCommitMaxWait bounds the extra latency a misconfigured wait
	// could add to every sync append.
	maxGroupCommitMaxWait = time.Second
)

// Config is the plugin's config section (JSON keys in snake_case). Its zero
// value is not valid; start from NewDefaultConfig.
type Config struct {
	// Flush is "sync" (ack after fsync) or "async" (ack after write).
	Flush string `json:"flush"`
	// GroupCommitMaxWait (sync) is the most the flusher waits, while the
	// producers whose appends the previous fsync acknowledged come back, to
	// cover more appends with one fsync. 0 fsyncs as soon as data is there.
	GroupCommitMaxWait sdk.Duration `json:"group_commit_max_wait"`
	// FlushInterval (async) is the longest written data stays unsynced.
	FlushInterval sdk.Duration `json:"flush_interval"`
	// FlushBytes (async) fsyncs early once this much is written unsynced.
	FlushBytes sdk.Bytes `json:"flush_bytes"`
	// FlushTimeout (sync) bounds how long an append waits for its fsync
	// before it is answered FLUSH_TIMEOUT (with its offsets); the caller's
	// deadline applies too, whichever is first.
	FlushTimeout sdk.Duration `json:"flush_timeout"`
	// SegmentBytes is the size at which the commit log rolls to a new file.
	SegmentBytes sdk.Bytes `json:"segment_bytes"`
	// RetentionBytes deletes the oldest segments while the log is larger;
	// 0 keeps everything. Retention works in whole segments and never
	// deletes the segment being written.
	RetentionBytes sdk.Bytes `json:"retention_bytes"`
	// RetentionAge deletes segments whose newest message is older; 0
	// keeps everything.
	RetentionAge sdk.Duration `json:"retention_age"`
	// Preallocate fills each new segment file with zeros (and fsyncs it)
	// in the background before it is written to, as RocketMQ warms its
	// mapped files: an fsync after overwriting allocated blocks needs no
	// journal commit and takes about half as long as one after appending.
	// It costs writing every segment twice (and the CPU to do it), which
	// only pays when appends wait for fsyncs: the default is true under
	// flush: sync and false under flush: async.
	Preallocate *bool `json:"preallocate"`
	// Dir is where the store keeps its files; default
	// <data_dir>/storage-file. It is created if missing; its parent
	// must exist.
	Dir string `json:"dir"`
}

// NewDefaultConfig returns the config used for keys a section leaves out.
func NewDefaultConfig() Config {
	return Config{
		Flush:              FlushSync,
		GroupCommitMaxWait: sdk.Duration(DefaultGroupCommitMaxWait),
		FlushInterval:      sdk.Duration(DefaultFlushInterval),
		FlushBytes:         DefaultFlushBytes,
		FlushTimeout:       sdk.Duration(DefaultFlushTimeout),
		SegmentBytes:       DefaultSegmentBytes,
	}
}

// preallocate tells whether segments are preallocated: as configured, or by
// default under flush: sync.
func (c Config) preallocate() bool {
	if c.Preallocate != nil {
		return *c.Preallocate
	}
	return c.Flush == FlushSync
}

// parseConfig decodes a config section over the defaults and checks it. It
// reports every problem, each with its key: keys are decoded one by one so
// that one wrong value does not hide the next.
func parseConfig(section []byte) (Config, sdk.Problems) {
	cfg := NewDefaultConfig()
	trimmed := bytes.TrimSpace(section)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return cfg, cfg.validate()
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &keys); err != nil {
		return cfg, sdk.Problems{{Message: "must be a mapping of keys to values: " + err.Error()}}
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var ps sdk.Problems
	for _, k := range names {
		one, _ := json.Marshal(map[string]json.RawMessage{k: keys[k]})
		for _, p := range sdk.DecodeConfig(one, &cfg) {
			if p.Path == "" {
				p.Path = k
			}
			ps = append(ps, p)
		}
	}
	if len(ps) > 0 {
		return cfg, ps
	}
	return cfg, cfg.validate()
}

// validate checks ranges and combinations; every problem is reported.
func (c Config) validate() sdk.Problems {
	var ps sdk.Problems
	add := func(path, format string, args ...any) {
		ps = append(ps, sdk.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if c.Flush != FlushSync && c.Flush != FlushAsync {
		add("flush", "must be %q or %q, got %q", FlushSync, FlushAsync, c.Flush)
	}
	if c.GroupCommitMaxWait < 0 || time.Duration(c.GroupCommitMaxWait) > maxGroupCommitMaxWait {
		add("group_commit_max_wait", "must be between 0 and %s, got %s", maxGroupCommitMaxWait, time.Duration(c.GroupCommitMaxWait))
	}
	if c.FlushInterval <= 0 {
		add("flush_interval", "must be positive, got %s", time.Duration(c.FlushInterval))
	}
	if c.FlushBytes <= 0 {
		add("flush_bytes", "must be positive, got %d", c.FlushBytes)
	}
	if c.FlushTimeout <= 0 {
		add("flush_timeout", "must be positive, got %s", time.Duration(c.FlushTimeout))
	}
	if c.SegmentBytes < MinSegmentBytes || c.SegmentBytes > MaxSegmentBytes {
		add("segment_bytes", "must be between %d (4KiB) and %d (1GiB), got %d", MinSegmentBytes, MaxSegmentBytes, c.SegmentBytes)
	}
	if c.RetentionAge < 0 {
		add("retention_age", "must not be negative, got %s", time.Duration(c.RetentionAge))
	}
	return ps
}
