//go:build !ferry_timeline

package ring

// timeline stamps a ring event in the diagnostic build (timeline_on.go).
func timeline(int32) {}

// Stamp records a diagnostic event on the timeline of the diagnostic build
// (timeline_on.go); here it does nothing.
func Stamp(int32) {}
