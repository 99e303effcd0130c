package file

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// The small state files are JSON, rewritten whole and atomically (write a
// temporary file, fsync it, rename it over the old one, fsync the directory),
// so a crash leaves either the old or the new version.

type offsetsFile struct {
	Version int                          `json:"version"`
	Groups  map[string][]queueOffsetJSON `json:"groups"`
}

type queueStartsFile struct {
	Version int               `json:"version"`
	Queues  []queueOffsetJSON `json:"queues"`
}

type queueOffsetJSON struct {
	Topic  string `json:"topic"`
	Queue  int32  `json:"queue"`
	Offset int64  `json:"offset"`
}

func readState(dir, name string, v any) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage-file: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("storage-file: %s is damaged: %w", filepath.Join(dir, name), err)
	}
	return true, nil
}

func checkStateVersion(dir, name string, v int) error {
	if v != formatVersion {
		return fmt.Errorf("storage-file: %s: %w: format version %d, this build reads version %d",
			filepath.Join(dir, name), ErrIncompatible, v, formatVersion)
	}
	return nil
}

func loadOffsets(dir string) (map[string]map[queueKey]int64, error) {
	out := make(map[string]map[queueKey]int64)
	var f offsetsFile
	ok, err := readState(dir, offsetsFileName, &f)
	if err != nil || !ok {
		return out, err
	}
	if err := checkStateVersion(dir, offsetsFileName, f.Version); err != nil {
		return nil, err
	}
	for g, offs := range f.Groups {
		m := make(map[queueKey]int64, len(offs))
		for _, o := range offs {
			m[queueKey{o.Topic, o.Queue}] = o.Offset
		}
		out[g] = m
	}
	return out, nil
}

func loadQueueStarts(dir string) (map[queueKey]int64, error) {
	out := make(map[queueKey]int64)
	var f queueStartsFile
	ok, err := readState(dir, queuesFileName, &f)
	if err != nil || !ok {
		return out, err
	}
	if err := checkStateVersion(dir, queuesFileName, f.Version); err != nil {
		return nil, err
	}
	for _, o := range f.Queues {
		out[queueKey{o.Topic, o.Queue}] = o.Offset
	}
	return out, nil
}

func writeQueueStarts(dir string, starts map[queueKey]int64) error {
	return writeState(dir, queuesFileName, queueStartsFile{Version: formatVersion, Queues: sortedOffsets(starts)})
}

func sortedOffsets(m map[queueKey]int64) []queueOffsetJSON {
	out := make([]queueOffsetJSON, 0, len(m))
	for k, v := range m {
		out = append(out, queueOffsetJSON{Topic: k.topic, Queue: k.queue, Offset: v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Queue < out[j].Queue
	})
	return out
}

func writeState(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, name, b); err != nil {
		return fmt.Errorf("storage-file: write %s: %w", name, classify(err))
	}
	return nil
}

func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+tmpSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}
