package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// Per-topic settings (docs/admin.md, "Per-topic settings"): retention by
// size and by age, which the store applies (sdk.TopicRetainer), and max
// message bytes, which Produce checks. They live with the topic in the
// node's topic metadata (TopicsFile), are set by CreateTopic and
// AlterTopic and by the pipeline's topics (the declared baseline), and are
// replicated with the topic: a change carries the topic's whole settings
// after it (TopicChange.settings, ReplicatedTopic.settings).

// settingsOf is t's settings, nil when it has none.
func (t *topic) settingsOf() *sdk.TopicSettings { return t.settings.Load() }

// emptySettings reports whether s sets nothing.
func emptySettings(s *sdk.TopicSettings) bool {
	return s == nil || (s.RetentionBytes == 0 && s.RetentionAgeNanos == 0 && s.MaxMessageBytes == 0)
}

// normSettings is s, or nil when it sets nothing.
func normSettings(s *sdk.TopicSettings) *sdk.TopicSettings {
	if emptySettings(s) {
		return nil
	}
	return &sdk.TopicSettings{RetentionBytes: s.RetentionBytes, RetentionAgeNanos: s.RetentionAgeNanos, MaxMessageBytes: s.MaxMessageBytes}
}

// sameSettings reports whether a and b set the same (nil sets nothing).
func sameSettings(a, b *sdk.TopicSettings) bool {
	a, b = normSettings(a), normSettings(b)
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.RetentionBytes == b.RetentionBytes && a.RetentionAgeNanos == b.RetentionAgeNanos && a.MaxMessageBytes == b.MaxMessageBytes
}

// sameRetention reports whether a and b keep the same retention.
func sameRetention(a, b *sdk.TopicSettings) bool {
	return a.GetRetentionBytes() == b.GetRetentionBytes() && a.GetRetentionAgeNanos() == b.GetRetentionAgeNanos()
}

// checkSettings refuses settings out of range, naming the topic and the
// setting (ErrInvalidArgument).
func checkSettings(name string, s *sdk.TopicSettings) error {
	if s == nil {
		return nil
	}
	var errs []error
	if s.RetentionBytes < 0 {
		errs = append(errs, fmt.Errorf("retention_bytes must not be negative, got %d", s.RetentionBytes))
	}
	if s.RetentionAgeNanos < 0 {
		errs = append(errs, fmt.Errorf("retention_age must not be negative, got %s", time.Duration(s.RetentionAgeNanos)))
	}
	if s.MaxMessageBytes < 0 || s.MaxMessageBytes > DefaultMaxMessageBytes {
		errs = append(errs, fmt.Errorf("max_message_bytes must be between 1 and the broker's limit of %d (0: that limit), got %d", DefaultMaxMessageBytes, s.MaxMessageBytes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: topic %q: %w", sdk.ErrInvalidArgument, name, errors.Join(errs...))
	}
	return nil
}

// alterSettings applies an alter's settings to old: a field 0 keeps old's,
// -1 unsets it, any other value sets it (checked by checkSettings).
func alterSettings(name string, old, change *sdk.TopicSettings) (*sdk.TopicSettings, error) {
	out := &sdk.TopicSettings{}
	if old != nil {
		out.RetentionBytes, out.RetentionAgeNanos, out.MaxMessageBytes = old.RetentionBytes, old.RetentionAgeNanos, old.MaxMessageBytes
	}
	if change == nil {
		return normSettings(out), nil
	}
	apply := func(dst *int64, v int64) {
		switch v {
		case 0:
		case -1:
			*dst = 0
		default:
			*dst = v
		}
	}
	apply(&out.RetentionBytes, change.RetentionBytes)
	apply(&out.RetentionAgeNanos, change.RetentionAgeNanos)
	apply(&out.MaxMessageBytes, change.MaxMessageBytes)
	if err := checkSettings(name, out); err != nil {
		return nil, err
	}
	return normSettings(out), nil
}

// maxBody is the largest body a produce of t may carry.
func (t *topic) maxBody() int64 {
	if s := t.settingsOf(); s != nil && s.MaxMessageBytes > 0 {
		return s.MaxMessageBytes
	}
	return DefaultMaxMessageBytes
}

// retentionSet lists every topic's own retention, with override applied
// (a topic mapped to nil has none; one absent keeps what it has).
func (b *Broker) retentionSet(override map[string]*sdk.TopicSettings) []*sdk.TopicRetention {
	var out []*sdk.TopicRetention
	add := func(name string, s *sdk.TopicSettings) {
		if s != nil && (s.RetentionBytes > 0 || s.RetentionAgeNanos > 0) {
			out = append(out, &sdk.TopicRetention{Topic: name, RetentionBytes: s.RetentionBytes, RetentionAgeNanos: s.RetentionAgeNanos})
		}
	}
	b.topicsMu.RLock()
	for n, t := range b.topics {
		if _, ok := override[n]; !ok && !t.internal {
			add(n, t.settingsOf())
		}
	}
	b.topicsMu.RUnlock()
	for n, s := range override {
		add(n, s)
	}
	return out
}

// pushRetention hands the store every topic's own retention, with override
// applied. A store without the capability, or without one of the settings,
// is errors.ErrUnsupported naming what it lacks. b.retentionMu orders the
// calls.
func (b *Broker) pushRetention(ctx context.Context, override map[string]*sdk.TopicSettings) error {
	b.retentionMu.Lock()
	defer b.retentionMu.Unlock()
	set := b.retentionSet(override)
	if b.storage == nil {
		return fmt.Errorf("%w: this node has no store", errors.ErrUnsupported)
	}
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	return b.storageCall(cctx, func(s sdk.Storage) error {
		tr, ok := s.(sdk.TopicRetainer)
		if !ok {
			return fmt.Errorf("%w: this node's store has no retention per topic (sdk.TopicRetainer)", errors.ErrUnsupported)
		}
		return tr.SetTopicRetention(cctx, set)
	})
}

// retentionFor hands the store the retention of topic name with settings s
// when it differs from old's: the store refuses a setting it lacks, and the
// error names the topic.
func (b *Broker) retentionFor(ctx context.Context, name string, old, s *sdk.TopicSettings) error {
	if sameRetention(old, s) {
		return nil
	}
	if err := b.pushRetention(ctx, map[string]*sdk.TopicSettings{name: s}); err != nil {
		return fmt.Errorf("topic %q: its retention (retention_bytes %d, retention_age %s) cannot be kept: %w",
			name, s.GetRetentionBytes(), time.Duration(s.GetRetentionAgeNanos()), err)
	}
	return nil
}
