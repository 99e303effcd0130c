package sdktest

import (
	"errors"
	"fmt"
	"strings"
)

// A conformance case is a named func that takes a harness (an interface: what
// the case may start and inspect) and returns nil when the implementation
// behaves, an error saying what it did wrong when it does not, or a Skip when
// the case does not apply. The same cases run from Go tests (TestStorage, on
// testing.T) and from `ferry plugin test` against a plugin executable started
// by the plugin host (package core/plugintest).

// SkipError is returned by a case that does not apply (a feature the
// implementation lacks, something the harness cannot do).
type SkipError struct{ Reason string }

func (e *SkipError) Error() string { return "skipped: " + e.Reason }

// Skip returns a SkipError.
func Skip(format string, args ...any) error { return &SkipError{Reason: fmt.Sprintf(format, args...)} }

// Skipped reports whether err is a SkipError, and its reason.
func Skipped(err error) (string, bool) {
	var s *SkipError
	if errors.As(err, &s) {
		return s.Reason, true
	}
	return "", false
}

// Result is the outcome of one case as a runner reports it.
type Result struct {
	Name string
	Err  error // nil: passed
}

// Status is PASS, FAIL or SKIP.
func (r Result) Status() string {
	if r.Err == nil {
		return "PASS"
	}
	if _, ok := Skipped(r.Err); ok {
		return "SKIP"
	}
	return "FAIL"
}

// Selected reports whether the case named name is selected by filter (a
// comma-separated list of case names, or of name prefixes ending in '*'); an
// empty filter selects every case.
func Selected(name, filter string) bool {
	if filter == "" {
		return true
	}
	for _, f := range strings.Split(filter, ",") {
		f = strings.TrimSpace(f)
		if p, ok := strings.CutSuffix(f, "*"); ok && strings.HasPrefix(name, p) || f == name {
			return true
		}
	}
	return false
}
