package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/core/sdk"
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
	// The topic's own settings (topicsettings.go); absent when unset.
	RetentionBytes    int64 `json:"retention_bytes,omitempty"`
	RetentionAgeNanos int64 `json:"retention_age_nanos,omitempty"`
	MaxMessageBytes   int64 `json:"max_message_bytes,omitempty"`
}

// settings is m's settings, nil when it has none.
func (m topicMeta) settings() *sdk.TopicSettings {
	return normSettings(&sdk.TopicSettings{RetentionBytes: m.RetentionBytes, RetentionAgeNanos: m.RetentionAgeNanos, MaxMessageBytes: m.MaxMessageBytes})
}

// metaOf is the metadata of a topic with queues and settings s.
func metaOf(name string, queues int32, s *sdk.TopicSettings) topicMeta {
	return topicMeta{Name: name, Queues: queues, RetentionBytes: s.GetRetentionBytes(), RetentionAgeNanos: s.GetRetentionAgeNanos(), MaxMessageBytes: s.GetMaxMessageBytes()}
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
		if err := checkSettings(t.Name, t.settings()); err != nil {
			return tf, false, fmt.Errorf("topic metadata %s: %v", path, err)
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
		return b.openSettingsWithoutDir()
	}
	tf, existed, err := readTopicsFile(dir)
	if err != nil {
		return err
	}
	held := map[string]topicMeta{}
	for _, t := range tf.Topics {
		held[t.Name] = t
	}
	var conflicts []error
	changed := !existed
	for _, d := range b.opts.Topics {
		if err := checkSettings(d.Name, d.Settings); err != nil {
			conflicts = append(conflicts, err)
			continue
		}
		m, ok := held[d.Name]
		switch {
		case !ok:
			held[d.Name] = metaOf(d.Name, int32(d.Queues), normSettings(d.Settings))
			changed = true
			continue
		case int32(d.Queues) < m.Queues:
			conflicts = append(conflicts, fmt.Errorf("topic %q: the pipeline declares %d queues, but this node holds %d (queues were added while it ran; a topic's queues are never removed): declare queues: %d, or more",
				d.Name, d.Queues, m.Queues, m.Queues))
			continue
		case int32(d.Queues) > m.Queues:
			b.log.Info("topic grows to the queues the pipeline declares", "topic", d.Name, "from", m.Queues, "to", d.Queues)
			m.Queues = int32(d.Queues)
			changed = true
		}
		merged, errs := declaredSettings(d, m.settings())
		conflicts = append(conflicts, errs...)
		if !sameSettings(merged, m.settings()) {
			b.log.Info("topic takes the settings the pipeline declares", "topic", d.Name)
			m = metaOf(d.Name, m.Queues, merged)
			changed = true
		}
		held[d.Name] = m
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("the pipeline's topics conflict with the node's topic metadata in %s: %w", filepath.Join(dir, TopicsFile), errors.Join(conflicts...))
	}
	if changed {
		out := topicsFile{}
		for _, m := range held {
			out.Topics = append(out.Topics, m)
		}
		if err := writeTopicsFile(dir, out); err != nil {
			return err
		}
	}
	b.topicsMu.Lock()
	for n, m := range held {
		t := b.topics[n]
		if t == nil {
			t = newTopic(n, m.Queues, false)
			b.topics[n] = t
		}
		t.nqueues.Store(m.Queues)
		t.settings.Store(m.settings())
	}
	b.topicsMu.Unlock()
	return b.openRetention()
}

// declaredSettings is what a declared topic's settings make of those the
// node holds: a setting the pipeline leaves unset keeps the held one; one
// it sets where the node holds none is taken; one it sets to another value
// than the node holds (set by `ferry topic alter`, or by an earlier
// pipeline) is a conflict, returned, never applied silently.
func declaredSettings(d Topic, held *sdk.TopicSettings) (*sdk.TopicSettings, []error) {
	out := normSettings(held)
	if out == nil {
		out = &sdk.TopicSettings{}
	}
	if d.Settings == nil {
		return normSettings(out), nil
	}
	var errs []error
	take := func(key string, dst *int64, declared int64, show func(int64) string) {
		switch {
		case declared == 0 || declared == *dst:
		case *dst == 0:
			*dst = declared
		default:
			errs = append(errs, fmt.Errorf("topic %q: the pipeline declares %s: %s, but this node holds %s (set by `ferry topic alter` or an earlier pipeline; it is not changed silently): declare %s: %s, or change it with `ferry topic alter`",
				d.Name, key, show(declared), show(*dst), key, show(*dst)))
		}
	}
	num := func(v int64) string { return fmt.Sprint(v) }
	dur := func(v int64) string { return time.Duration(v).String() }
	take("retention_bytes", &out.RetentionBytes, d.Settings.RetentionBytes, num)
	take("retention_age", &out.RetentionAgeNanos, d.Settings.RetentionAgeNanos, dur)
	take("max_message_bytes", &out.MaxMessageBytes, d.Settings.MaxMessageBytes, num)
	return normSettings(out), errs
}

// openSettingsWithoutDir takes the declared topics' settings on a node
// without a data dir (nothing is held).
func (b *Broker) openSettingsWithoutDir() error {
	var errs []error
	b.topicsMu.Lock()
	for _, d := range b.opts.Topics {
		if err := checkSettings(d.Name, d.Settings); err != nil {
			errs = append(errs, err)
			continue
		}
		if t := b.topics[d.Name]; t != nil {
			t.settings.Store(normSettings(d.Settings))
		}
	}
	b.topicsMu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("the pipeline's topics: %w", errors.Join(errs...))
	}
	return b.openRetention()
}

// openRetention hands the store the topics' own retention at start, when
// any topic has one (the store keeps what it was handed last, and each
// change is handed to it as it is made).
func (b *Broker) openRetention() error {
	set := b.retentionSet(nil)
	if len(set) == 0 {
		return nil
	}
	if err := b.pushRetention(context.Background(), nil); err != nil {
		return fmt.Errorf("topic %q has a retention of its own, which this node's store cannot keep: %w", set[0].Topic, err)
	}
	return nil
}
