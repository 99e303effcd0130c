package names

import (
	"strings"
	"testing"
)

func TestRule(t *testing.T) {
	ok := []string{"orders", "Orders.EU-1_x", "a", strings.Repeat("x", MaxLen), "0", "..a"}
	for _, n := range ok {
		if err := Topic(n); err != nil {
			t.Errorf("Topic(%q) = %v, want nil", n, err)
		}
		if err := Group(n); err != nil {
			t.Errorf("Group(%q) = %v, want nil", n, err)
		}
	}
	bad := map[string]string{
		"":                            "topic name is empty",
		"a b":                         `character ' ' at position 2 is not allowed`,
		"a/b":                         `character '/' at position 2`,
		"ü":                           "is not allowed",
		strings.Repeat("x", MaxLen+1): "250 characters, more than the limit of 249",
		"%RETRY%billing":              "the prefix %RETRY% is reserved",
		"%DLQ%billing":                "the prefix %DLQ% is reserved",
		"%x":                          `character '%' at position 1`,
		".":                           "reads as a directory",
		"..":                          "reads as a directory",
	}
	for n, want := range bad {
		err := Topic(n)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Topic(%q) = %v, want an error containing %q", n, err, want)
		}
	}
	if err := Group("a b"); err == nil || !strings.HasPrefix(err.Error(), `group name "a b"`) {
		t.Errorf("Group names its kind: %v", err)
	}
}
