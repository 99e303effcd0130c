package bench

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds: 1 µs to 5 minutes, 3 significant digits (a value is
// within 0.1% of what was recorded).
const (
	histLowest  = int64(time.Microsecond)
	histHighest = int64(5 * time.Minute)
	histDigits  = 3
)

// StatusOK is the status of a message that was acked as durable as
// configured; StatusSent that of a oneway message that left without error.
const (
	StatusOK   = "OK"
	StatusSent = "SENT"
)

// Recorder gathers the outcomes of one run: latencies in an HDR histogram,
// how many messages ended with each status, and the progress a caller shows
// while it runs. Its methods are safe from any goroutine.
type Recorder struct {
	done  atomic.Int64 // messages completed (any status) in the current phase
	phase atomic.Pointer[string]

	mu       sync.Mutex
	hist     *hdrhistogram.Histogram
	statuses map[string]int64
	ok       int64 // messages counted in the rate
	bytes    int64
}

// NewRecorder returns an empty recorder in phase "" (not started: a System
// sets "run" when the timed part begins, after any "preload").
func NewRecorder() *Recorder {
	r := &Recorder{hist: newHistogram(), statuses: map[string]int64{}}
	r.SetPhase("")
	return r
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// SetPhase names what the run does now ("preload", "run", "drain") and
// restarts the progress count; what was recorded stays.
func (r *Recorder) SetPhase(p string) {
	r.phase.Store(&p)
	r.done.Store(0)
}

// Progress is the current phase and how many messages it completed.
func (r *Recorder) Progress() (phase string, done int64) {
	return *r.phase.Load(), r.done.Load()
}

// Tick counts n messages of the current phase for Progress only, such as a
// preload's.
func (r *Recorder) Tick(n int) { r.done.Add(int64(n)) }

// Record counts one message that ended with status, of size body bytes.
// Messages whose status is StatusOK or StatusSent count in the rate; the
// others are failures. A latency > 0 goes into the histogram.
func (r *Recorder) Record(status string, size int, latency time.Duration) {
	r.done.Add(1)
	r.mu.Lock()
	r.statuses[status]++
	if status == StatusOK || status == StatusSent {
		r.ok++
		r.bytes += int64(size)
	}
	if latency > 0 {
		_ = r.hist.RecordValue(min(max(int64(latency), histLowest), histHighest))
	}
	r.mu.Unlock()
}

// Latency records a latency without counting a message (a consumer's view
// of an end-to-end run, whose messages the producers count).
func (r *Recorder) Latency(latency time.Duration) {
	r.mu.Lock()
	_ = r.hist.RecordValue(min(max(int64(latency), histLowest), histHighest))
	r.mu.Unlock()
}

// Counted returns how many messages counted in the rate so far.
func (r *Recorder) Counted() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok
}

// Result sums up the run of w that took elapsed.
func (r *Recorder) Result(system string, w Workload, elapsed time.Duration) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{
		System: system, Workload: w.Name, Kind: w.Kind, Size: w.Size,
		Messages: r.ok, Bytes: r.bytes, Elapsed: elapsed,
		Statuses: make(map[string]int64, len(r.statuses)),
	}
	for k, v := range r.statuses {
		res.Statuses[k] = v
	}
	if s := elapsed.Seconds(); s > 0 {
		res.Rate = float64(r.ok) / s
		res.MBps = float64(r.bytes) / s / 1e6
	}
	if r.hist.TotalCount() > 0 {
		res.Latency = &Latency{
			Count: r.hist.TotalCount(),
			P50:   time.Duration(r.hist.ValueAtPercentile(50)),
			P90:   time.Duration(r.hist.ValueAtPercentile(90)),
			P99:   time.Duration(r.hist.ValueAtPercentile(99)),
			P999:  time.Duration(r.hist.ValueAtPercentile(99.9)),
			Max:   time.Duration(r.hist.Max()),
			Mean:  time.Duration(r.hist.Mean()),
		}
	}
	return res
}
