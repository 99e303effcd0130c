package engine

import "time"

// SetLagInterval makes the engines started after it measure their flows'
// lag every d (the node's periodic GetOffsets), so a short idle covers as
// many rounds as a long one; the returned func restores the default.
func SetLagInterval(d time.Duration) (restore func()) {
	old := lagInterval
	lagInterval = d
	return func() { lagInterval = old }
}
