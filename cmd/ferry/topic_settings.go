package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// settingsFlags are a topic's own settings on `ferry topic create` and
// `alter` (docs/admin.md, "Per-topic settings").
type settingsFlags struct {
	retentionBytes, retentionAge, maxMessageBytes string
}

func (f *settingsFlags) add(cmd *cobra.Command, alter bool) {
	unset := ""
	if alter {
		unset = `; "default" unsets it`
	}
	cmd.Flags().StringVar(&f.retentionBytes, "retention-bytes", "", "the topic's own retention by size, per queue (e.g. 64MiB); the store keeps at most this much of each queue"+unset)
	cmd.Flags().StringVar(&f.retentionAge, "retention-age", "", "the topic's own retention by age (e.g. 24h)"+unset)
	cmd.Flags().StringVar(&f.maxMessageBytes, "max-message-bytes", "", "the largest message body a produce of the topic may carry (e.g. 64KiB, at most 4MiB)"+unset)
}

// parse is the settings the flags name, nil when none; "default" (alter
// only) is -1: unset.
func (f *settingsFlags) parse(alter bool) (*ferryv1.TopicSettings, error) {
	var s ferryv1.TopicSettings
	given := false
	one := func(flag, v string, dst *int64, parse func(string) (int64, error)) error {
		if v == "" {
			return nil
		}
		given = true
		if v == "default" {
			if !alter {
				return fmt.Errorf("--%s default: a new topic has no setting to unset; leave the flag out", flag)
			}
			*dst = -1
			return nil
		}
		n, err := parse(v)
		if err != nil {
			return fmt.Errorf("--%s %q: %v", flag, v, err)
		}
		if n <= 0 {
			return fmt.Errorf("--%s %q: must be above 0 (leave it out, or \"default\" on alter, for the store's and broker's default)", flag, v)
		}
		*dst = n
		return nil
	}
	dur := func(v string) (int64, error) {
		d, err := time.ParseDuration(v)
		return int64(d), err
	}
	if err := one("retention-bytes", f.retentionBytes, &s.RetentionBytes, sdk.ParseBytes); err != nil {
		return nil, err
	}
	if err := one("retention-age", f.retentionAge, &s.RetentionAgeNanos, dur); err != nil {
		return nil, err
	}
	if err := one("max-message-bytes", f.maxMessageBytes, &s.MaxMessageBytes, sdk.ParseBytes); err != nil {
		return nil, err
	}
	if !given {
		return nil, nil
	}
	return &s, nil
}

// topicSettingsJSON is a topic's own settings in --json; absent fields are
// unset.
type topicSettingsJSON struct {
	RetentionBytes  int64  `json:"retention_bytes,omitempty"`
	RetentionAge    string `json:"retention_age,omitempty"`
	MaxMessageBytes int64  `json:"max_message_bytes,omitempty"`
}

func settingsJSONOf(s *ferryv1.TopicSettings) *topicSettingsJSON {
	if s == nil || (s.RetentionBytes == 0 && s.RetentionAgeNanos == 0 && s.MaxMessageBytes == 0) {
		return nil
	}
	out := &topicSettingsJSON{RetentionBytes: s.RetentionBytes, MaxMessageBytes: s.MaxMessageBytes}
	if s.RetentionAgeNanos > 0 {
		out.RetentionAge = time.Duration(s.RetentionAgeNanos).String()
	}
	return out
}

// line is the settings as describe prints them.
func (s *topicSettingsJSON) line() string {
	var parts []string
	if s.RetentionBytes > 0 {
		parts = append(parts, fmt.Sprintf("retention_bytes %d per queue", s.RetentionBytes))
	}
	if s.RetentionAge != "" {
		parts = append(parts, "retention_age "+s.RetentionAge)
	}
	if s.MaxMessageBytes > 0 {
		parts = append(parts, fmt.Sprintf("max_message_bytes %d", s.MaxMessageBytes))
	}
	return "settings: " + strings.Join(parts, ", ")
}

func settingsLine(s *ferryv1.TopicSettings) string {
	if j := settingsJSONOf(s); j != nil {
		return j.line()
	}
	return ""
}
