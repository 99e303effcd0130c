package config

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ferrymq/ferry/core/sdk"
)

// Problem is one thing wrong with a pipeline file.
type Problem struct {
	File    string // the pipeline file
	Line    int    // line of the key in File; 0 when unknown (a missing key, an environment override)
	Path    string // key path: "topics[1].queues", "flows[0].sink.type"; "" for the whole file
	Message string
}

// String formats p as "FILE:LINE: PATH: MESSAGE", leaving out ":LINE" when
// the line is unknown and "PATH: " when p is about the whole file.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in a pipeline file, sorted by line and then
// key path. As an error it prints one problem per line and matches
// sdk.ErrConfig.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Is reports whether target is sdk.ErrConfig, so that callers can tell a bad
// pipeline from an unreadable one with errors.Is.
func (ps Problems) Is(target error) bool { return target == sdk.ErrConfig }

// sortProblems orders ps by line, then path, then message, and drops exact
// duplicates.
func sortProblems(ps Problems) Problems {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Path, b.Path), cmp.Compare(a.Message, b.Message))
	})
	return slices.Compact(ps)
}

// source records where the keys of a loaded pipeline came from: the line of
// each key in the file, which keys an environment variable set, and which
// keys were given at all (null counts as not given).
type source struct {
	file    string
	lines   map[string]int    // key path → line of the key; list items: line of the item
	env     map[string]string // key path → FERRY_… variable that set it
	present map[string]bool   // key paths with a non-null value
	bad     []string          // key paths whose value could not be decoded
}

func newSource(file string) *source {
	return &source{file: file, lines: map[string]int{}, env: map[string]string{}, present: map[string]bool{}}
}

// failed reports whether the value at path, or at one of its ancestors,
// could not be decoded.
func (s *source) failed(path string) bool {
	if s == nil {
		return false
	}
	for _, b := range s.bad {
		if path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") {
			return true
		}
	}
	return false
}

// envVar returns the environment variable that set path or one of its
// ancestors, or "".
func (s *source) envVar(path string) string {
	if s == nil {
		return ""
	}
	for p := path; ; p = parentPath(p) {
		if v, ok := s.env[p]; ok {
			return v
		}
		if p == "" {
			return ""
		}
	}
}

// line returns the line of path, or of its nearest ancestor in the file when
// path itself is not written there (a missing key); 0 when neither is known
// or the value came from the environment.
func (s *source) line(path string) int {
	if s == nil || s.envVar(path) != "" {
		return 0
	}
	for p := path; p != ""; p = parentPath(p) {
		if l, ok := s.lines[p]; ok {
			return l
		}
	}
	return 0
}

// problem builds a Problem at path, naming the environment variable that set
// the value when there is one.
func (s *source) problem(path, msg string) Problem {
	p := Problem{Path: path, Message: msg}
	if s != nil {
		p.File = s.file
		p.Line = s.line(path)
		if v := s.envVar(path); v != "" {
			p.Message += " (set by " + v + ")"
		}
	}
	return p
}

// parentPath strips the last key or index from a key path:
// "flows[0].sink.type" → "flows[0].sink" → "flows[0]" → "flows" → "".
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func indexPath(parent string, i int) string { return fmt.Sprintf("%s[%d]", parent, i) }
