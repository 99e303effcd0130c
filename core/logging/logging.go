// Package logging gives a Ferry process one logger and one format. The
// logger is hclog's (the plugin host's go-plugin logs through it, and
// re-logs each plugin process's lines through it too); Slog adapts it for
// the code that takes a *slog.Logger (the Go client: consumers and
// producers), so their lines come out in the same stream, the same format
// and at the same level instead of through the log package's default.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Formats are the values of the --log-format flags.
var Formats = []string{"text", "json"}

// New returns a process's logger: hclog named name, at level (trace,
// debug, info, warn, error; "" is info), in format "text" (hclog's
// `2026-12-03T14:39:37.543Z [INFO]  name: message: key=value`) or "json"
// (one object per line: @timestamp, @level, @module, @message, then the
// key/values), for log shippers. ferry run and ferry bench call it once.
func New(name, level, format string, out io.Writer) (hclog.Logger, error) {
	if !slices.Contains(Formats, format) {
		return nil, fmt.Errorf("log format must be %s, got %q", strings.Join(Formats, " or "), format)
	}
	lv := hclog.Info
	if level != "" {
		if lv = hclog.LevelFromString(level); lv == hclog.NoLevel {
			return nil, fmt.Errorf("log level must be trace, debug, info, warn or error, got %q", level)
		}
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lv, Output: out, JSONFormat: format == "json"}), nil
}

// Slog returns a *slog.Logger that writes through l: same output, format
// and level. A record's attributes become l's key/value pairs (a group's
// keys prefixed "group.").
func Slog(l hclog.Logger) *slog.Logger { return slog.New(&handler{l: l}) }

type handler struct {
	l      hclog.Logger
	attrs  []any  // key/value pairs from WithAttrs, keys already prefixed
	prefix string // "a.b." from WithGroup
}

func (h *handler) Enabled(_ context.Context, lv slog.Level) bool {
	switch toHclog(lv) {
	case hclog.Debug:
		return h.l.IsDebug()
	case hclog.Info:
		return h.l.IsInfo()
	case hclog.Warn:
		return h.l.IsWarn()
	default:
		return h.l.IsError()
	}
}

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	args := slices.Clone(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		args = appendAttr(args, h.prefix, a)
		return true
	})
	h.l.Log(toHclog(r.Level), r.Message, args...)
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		n.attrs = appendAttr(n.attrs, h.prefix, a)
	}
	return &n
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}

// appendAttr flattens a (a group into its members) onto kv.
func appendAttr(kv []any, prefix string, a slog.Attr) []any {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, m := range v.Group() {
			kv = appendAttr(kv, p, m)
		}
		return kv
	}
	if a.Key == "" {
		return kv
	}
	return append(kv, prefix+a.Key, v.Any())
}

func toHclog(lv slog.Level) hclog.Level {
	switch {
	case lv < slog.LevelInfo:
		return hclog.Debug
	case lv < slog.LevelWarn:
		return hclog.Info
	case lv < slog.LevelError:
		return hclog.Warn
	default:
		return hclog.Error
	}
}
