//go:build !ferry_timeline

package ring

// timeline stamps a ring event in the diagnostic build (timeline_on.go).
func timeline(int32) {}
