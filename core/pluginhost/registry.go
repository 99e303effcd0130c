// Package pluginhost finds, launches, configures and supervises Ferry's
// plugins. Built-in plugins run as subprocesses by re-executing the ferry
// binary (`ferry plugin serve storage/memory`); external plugins are
// executables named ferry-<kind>-<type> in the configured plugin directories.
// A plugin that dies is noticed at once, logged, and started again with
// backoff; users of an Instance see the new process as a new generation.
//
// For tests and for measuring the boundary, Mode "inprocess" links built-in
// plugins into the host process instead.
package pluginhost

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferrymq/ferry/core/sdk"
)

// Factory makes a new, unconfigured built-in plugin.
type Factory func() sdk.Plugin

// Registry lists the built-in plugins by kind and type.
type Registry struct {
	builtins map[string]map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{builtins: map[string]map[string]Factory{}} }

// Register adds a built-in plugin. It panics on a duplicate: registration is
// static, done once by the binary's main package.
func (r *Registry) Register(kind, typ string, f Factory) {
	if r.builtins[kind] == nil {
		r.builtins[kind] = map[string]Factory{}
	}
	if _, dup := r.builtins[kind][typ]; dup {
		panic(fmt.Sprintf("pluginhost: %s/%s registered twice", kind, typ))
	}
	r.builtins[kind][typ] = f
}

// Builtin returns the factory of a built-in plugin, or nil.
func (r *Registry) Builtin(kind, typ string) Factory { return r.builtins[kind][typ] }

// ExecutableName is the file name of an external plugin.
func ExecutableName(kind, typ string) string { return "ferry-" + kind + "-" + typ }

// ValidType reports whether typ is a plugin type: a name of lowercase
// letters, digits and '_', never a path ("/../../x" would name a file
// outside the plugin directories).
func ValidType(typ string) bool {
	if typ == "" {
		return false
	}
	for _, c := range typ {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// External finds an external plugin's executable in dirs, or "" (always for
// a type that is not ValidType).
func External(kind, typ string, dirs []string) string {
	if !ValidType(typ) {
		return ""
	}
	for _, d := range dirs {
		p := filepath.Join(d, ExecutableName(kind, typ))
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Known reports whether kind/typ is built in or found in dirs.
func (r *Registry) Known(kind, typ string, dirs []string) bool {
	return r.Builtin(kind, typ) != nil || External(kind, typ, dirs) != ""
}

// Types lists the built-in types of kind and the external ones in dirs.
func (r *Registry) Types(kind string, dirs []string) []string {
	seen := map[string]bool{}
	for t := range r.builtins[kind] {
		seen[t] = true
	}
	prefix := "ferry-" + kind + "-"
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if t, ok := strings.CutPrefix(e.Name(), prefix); ok && ValidType(t) {
				seen[t] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
