package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/internal/atomicfile"
)

// TopicsFile is the node's topic metadata, in its data dir: every topic the
// node holds with its queue count. The pipeline's topics are the declared
// baseline (OpenTopics); the file is what the node holds, so that topics and
// queues added while it runs survive a restart.
const TopicsFile = "topics.json"

const topicsFileVersion = 1

type topicsFile struct {
	Version int         `json:"version"`
	Topics  []topicMeta `json:"topics"`
}

type topicMeta struct {
	Name   string `json:"name"`
	Queues int32  `json:"queues"`
}

// readTopicsFile reads dir's topic metadata; ok is false when there is none
// yet. A damaged or unreadable file is an error naming it: the node does
// not start on metadata it cannot trust.
func readTopicsFile(dir string) (tf topicsFile, ok bool, err error) {
	path := filepath.Join(dir, TopicsFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return tf, false, nil
	}
	if err != nil {
		return tf, false, fmt.Errorf("topic metadata %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &tf); err != nil {
		return tf, false, fmt.Errorf("topic metadata %s is damaged: %v (restore it, or remove it to start from the pipeline's topics alone)", path, err)
	}
	if tf.Version != topicsFileVersion {
		return tf, false, fmt.Errorf("topic metadata %s has version %d; this ferry reads version %d", path, tf.Version, topicsFileVersion)
	}
	for _, t := range tf.Topics {
		if err := names.Topic(t.Name); err != nil {
			return tf, false, fmt.Errorf("topic metadata %s: %v", path, err)
		}
		if t.Queues < 1 || t.Queues > MaxQueues {
			return tf, false, fmt.Errorf("topic metadata %s: topic %q has %d queues (1..%d)", path, t.Name, t.Queues, MaxQueues)
		}
	}
	return tf, true, nil
}

// writeTopicsFile replaces dir's topic metadata atomically and durably: a
// temporary file is written and fsynced, renamed over the old one, and the
// directory fsynced, so a crash leaves the old file or the new one whole.
func writeTopicsFile(dir string, tf topicsFile) error {
	tf.Version = topicsFileVersion
	sort.Slice(tf.Topics, func(i, j int) bool { return tf.Topics[i].Name < tf.Topics[j].Name })
	data, err := json.MarshalIndent(tf, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, TopicsFile)
	err = atomicfile.WriteFile(dir, TopicsFile, append(data, '\n'), 0o644)
	if err != nil {
		return fmt.Errorf("topic metadata %s: %w", path, err)
	}
	return nil
}

// MaxQueues is the most queues a topic has (as in pipelines).
const MaxQueues = 1024

// OpenTopics reconciles the pipeline's topics (Options.Topics, the declared
// baseline) with the metadata the node holds in Options.DataDir, before the
// node serves: topics held but not declared (created while the node ran) are
// served again; a declared topic the node does not hold is created; one
// declared with more queues than held grows (logged). A declared topic with
// fewer queues than the node holds is a conflict: OpenTopics returns an
// error naming each one and changes nothing (queues are never removed, and
// never silently). The engine calls it once, after New and before Start.
// Without a data dir it does nothing (the topics are the declared ones).
func (b *Broker) OpenTopics() error {
	dir := b.opts.DataDir
	if dir == "" {
		return nil
	}
	tf, existed, err := readTopicsFile(dir)
	if err != nil {
		return err
	}
	held := map[string]int32{}
	for _, t := range tf.Topics {
		held[t.Name] = t.Queues
	}
	var conflicts []error
	changed := !existed
	for _, d := range b.opts.Topics {
		q, ok := held[d.Name]
		switch {
		case !ok:
			held[d.Name] = int32(d.Queues)
			changed = true
		case int32(d.Queues) < q:
			conflicts = append(conflicts, fmt.Errorf("topic %q: the pipeline declares %d queues, but this node holds %d (queues were added while it ran; a topic's queues are never removed): declare queues: %d, or more",
				d.Name, d.Queues, q, q))
		case int32(d.Queues) > q:
			b.log.Info("topic grows to the queues the pipeline declares", "topic", d.Name, "from", q, "to", d.Queues)
			held[d.Name] = int32(d.Queues)
			changed = true
		}
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("the pipeline's topics conflict with the node's topic metadata in %s: %w", filepath.Join(dir, TopicsFile), errors.Join(conflicts...))
	}
	if changed {
		out := topicsFile{}
		for n, q := range held {
			out.Topics = append(out.Topics, topicMeta{Name: n, Queues: q})
		}
		if err := writeTopicsFile(dir, out); err != nil {
			return err
		}
	}
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	for n, q := range held {
		if t := b.topics[n]; t != nil {
			t.nqueues.Store(q)
			continue
		}
		b.topics[n] = newTopic(n, q, false)
	}
	return nil
}
