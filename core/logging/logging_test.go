package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// A slog record comes out through the hclog logger: its level, its format,
// its key/values (groups prefixed), and nothing below the logger's level.
func TestSlogWritesThroughHclog(t *testing.T) {
	var buf bytes.Buffer
	l, err := New("ferry", "warn", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	s := Slog(l.Named("client")).With("group", "g").WithGroup("q")
	s.Info("dropped: below warn")
	s.Warn("commit failed", "queue", 3)
	s.Error("gave up", "err", "boom")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (info dropped):\n%s", len(lines), buf.String())
	}
	var w map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &w); err != nil {
		t.Fatalf("not JSON: %s", lines[0])
	}
	if w["@level"] != "warn" || w["@message"] != "commit failed" || w["@module"] != "ferry.client" || w["group"] != "g" || w["q.queue"] != float64(3) {
		t.Errorf("warn line %v", w)
	}
	if !strings.Contains(lines[1], `"@level":"error"`) || !strings.Contains(lines[1], `"q.err":"boom"`) {
		t.Errorf("error line %s", lines[1])
	}

	buf.Reset()
	l, _ = New("ferry", "", "text", &buf)
	Slog(l).Info("hello", "k", "v")
	if got := buf.String(); !strings.Contains(got, " [INFO]  ferry: hello: k=v") {
		t.Errorf("text line %q", got)
	}
}

func TestNewRejectsBadSettings(t *testing.T) {
	if _, err := New("ferry", "info", "xml", &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `log format must be text or json, got "xml"`) {
		t.Errorf("bad format: %v", err)
	}
	if _, err := New("ferry", "loud", "text", &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `got "loud"`) {
		t.Errorf("bad level: %v", err)
	}
}
