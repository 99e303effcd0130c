//go:build ferry_timeline

package ring

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// A diagnostic build (-tags ferry_timeline; scripts/ring-timeline.sh):
// every record published and every frame read is stamped with the wall
// clock, and once timelineMax events were recorded the process writes them
// to "$FERRY_RING_TIMELINE.<pid>", one "unix-nanoseconds kind" line each
// (a read is the negated kind). The processes of a node share the clock, so
// their files merge into one timeline of each request's hops.
var timelinePath = os.Getenv("FERRY_RING_TIMELINE")

const timelineMax = 60000

var (
	timelineAt   [timelineMax]int64
	timelineKind [timelineMax]int32
	timelineN    atomic.Int64
	timelineDone atomic.Bool
)

func timeline(ev int32) {
	if timelinePath == "" {
		return
	}
	i := timelineN.Add(1) - 1
	if i < timelineMax {
		timelineAt[i] = time.Now().UnixNano()
		timelineKind[i] = ev
		return
	}
	if i == timelineMax && timelineDone.CompareAndSwap(false, true) {
		f, err := os.Create(fmt.Sprintf("%s.%d", timelinePath, os.Getpid()))
		if err != nil {
			return
		}
		defer f.Close()
		for j := range timelineMax {
			fmt.Fprintf(f, "%d %d\n", timelineAt[j], timelineKind[j])
		}
	}
}

// Stamp records a diagnostic event of the caller's (a positive number of
// its choosing, 100 and above) on the timeline.
func Stamp(ev int32) { timeline(ev) }
