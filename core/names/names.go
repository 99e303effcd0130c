// Package names holds the one rule for the names of topics and consumer
// groups. Pipeline validation (core/config), the broker's admin calls and its
// auto-created topics all check names here, so a name is accepted or refused
// the same way everywhere, with the same message.
//
// The rule (Kafka's): letters, digits, '.', '_' and '-'; 1 to 249 characters.
// Names starting with %RETRY% or %DLQ% belong to a consumer group's retry and
// dead-letter topics (see sdk.RetryTopic) and are reserved: no topic or group
// may be given one.
package names

import (
	"fmt"
	"strings"
)

// MaxLen is the longest topic or group name.
const MaxLen = 249

// Reserved prefixes: a group's retry and dead-letter topics.
var reserved = []string{"%RETRY%", "%DLQ%"}

// Topic checks a topic name. The error names the topic and what is wrong;
// callers wrap it with their sentinel (sdk.ErrInvalidArgument).
func Topic(name string) error { return check("topic", name) }

// Group checks a consumer group name, by the same rule as topics.
func Group(name string) error { return check("group", name) }

// Rule is the rule in words, for help texts and docs.
const Rule = "letters, digits, '.', '_' and '-', at most 249 characters; the prefixes %RETRY% and %DLQ% are reserved"

func check(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty (a name is %s)", kind, Rule)
	}
	for _, p := range reserved {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%s name %q: the prefix %s is reserved for consumer groups' internal topics", kind, name, p)
		}
	}
	if len(name) > MaxLen {
		return fmt.Errorf("%s name %.40q…: %d characters, more than the limit of %d", kind, name, len(name), MaxLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("%s name %q: character %q at position %d is not allowed (a name is %s)", kind, name, rune(c), i+1, Rule)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%s name %q is not allowed (it reads as a directory)", kind, name)
	}
	return nil
}
