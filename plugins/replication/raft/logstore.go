package raft

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// raftLog is raft's log and stable store (term, vote): hashicorp/raft-wal.
type raftLog struct {
	*wal.WAL
}

// GetLog answers hraft.ErrLogNotFound below the first index, as raft
// expects of a compacted log: raft-wal drops only whole segments (64 MiB)
// and still serves compacted entries of its tail segment, so a leader would
// send a follower those instead of the snapshot that replaced them.
func (l raftLog) GetLog(index uint64, log *hraft.Log) error {
	first, err := l.FirstIndex()
	if err != nil {
		return err
	}
	if index < first {
		return hraft.ErrLogNotFound
	}
	return l.WAL.GetLog(index, log)
}

// Files of the raft log formats before raft-wal, in the plugin's data dir.
var oldLogFiles = []string{"raft.db", "log"}

// openWAL opens (creating) raft's log and stable store in the directory
// `wal` under dir. A data dir that holds
// raft state in an older format (a bbolt raft.db, or the segment log of
// the directory log) and no WAL is refused: raft would start from an empty
// log and term there. Ferry has not been released with those formats, so
// nothing migrates them.
func openWAL(dir string, log hclog.Logger) (raftLog, error) {
	walDir := filepath.Join(dir, "wal")
	if _, err := os.Stat(filepath.Join(walDir, metadb.FileName)); errors.Is(err, os.ErrNotExist) {
		for _, name := range oldLogFiles {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				return raftLog{}, fmt.Errorf("%s holds raft state in a pre-release format (%s) that this version does not read; start the node with a new data dir", dir, name)
			}
		}
	}
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return raftLog{}, err
	}
	w, err := wal.Open(walDir, wal.WithLogger(log))
	return raftLog{w}, err
}
