package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Result is what one run of a workload measured.
type Result struct {
	System   string `json:"system,omitempty"`
	Workload string `json:"workload"`
	Kind     Kind   `json:"kind"`
	Size     int    `json:"size"`
	// Messages counted in the rate: acked with status OK (or sent, oneway;
	// or consumed, Consume and EndToEnd).
	Messages int64         `json:"messages"`
	Bytes    int64         `json:"bytes"`
	Elapsed  time.Duration `json:"-"`
	Rate     float64       `json:"msgs_per_sec"`
	MBps     float64       `json:"mb_per_sec"` // 10^6 bytes of bodies per second
	// Latency is send to ack (Produce), send to handler (EndToEnd); nil
	// when nothing was timed (Consume, oneway).
	Latency *Latency `json:"latency,omitempty"`
	// Statuses counts messages by how they ended: OK, SENT (oneway), a
	// weaker status (FLUSH_TIMEOUT, ...) or an error's code (UNAVAILABLE,
	// DEADLINE_EXCEEDED, ...).
	Statuses map[string]int64 `json:"statuses"`
	// Reps is how many runs a median was taken over (0 or 1: one run).
	Reps int `json:"reps,omitempty"`
}

// Latency is a latency distribution's summary.
type Latency struct {
	Count int64
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	P999  time.Duration
	Max   time.Duration
	Mean  time.Duration
}

type latencyJSON struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p99_9_us"`
	Max   float64 `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func fromUS(v float64) time.Duration { return time.Duration(v * float64(time.Microsecond)) }

// MarshalJSON writes the latencies in microseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(latencyJSON{l.Count, us(l.P50), us(l.P90), us(l.P99), us(l.P999), us(l.Max), us(l.Mean)})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (l *Latency) UnmarshalJSON(b []byte) error {
	var j latencyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = Latency{j.Count, fromUS(j.P50), fromUS(j.P90), fromUS(j.P99), fromUS(j.P999), fromUS(j.Max), fromUS(j.Mean)}
	return nil
}

type resultJSON Result

// MarshalJSON adds elapsed_s.
func (r *Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		*resultJSON
		ElapsedS float64 `json:"elapsed_s"`
	}{(*resultJSON)(r), r.Elapsed.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (r *Result) UnmarshalJSON(b []byte) error {
	var v struct {
		*resultJSON
		ElapsedS float64 `json:"elapsed_s"`
	}
	v.resultJSON = (*resultJSON)(r)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.Elapsed = time.Duration(v.ElapsedS * float64(time.Second))
	return nil
}

// Failed is the number of messages whose status is neither OK nor SENT.
func (r *Result) Failed() int64 {
	var n int64
	for s, c := range r.Statuses {
		if s != StatusOK && s != StatusSent {
			n += c
		}
	}
	return n
}

// Errors lists the statuses other than OK and SENT with their counts,
// "FLUSH_TIMEOUT 3, UNAVAILABLE 1", or "0".
func (r *Result) Errors() string {
	var parts []string
	for _, s := range slices.Sorted(maps.Keys(r.Statuses)) {
		if s != StatusOK && s != StatusSent && r.Statuses[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, r.Statuses[s]))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}

// WriteTable prints results as an aligned table: rate in msgs/s and MB/s,
// latency percentiles, and the errors by status. The system column appears
// when a result names one.
func WriteTable(w io.Writer, results []*Result) error {
	withSystem := slices.ContainsFunc(results, func(r *Result) bool { return r.System != "" })
	rows := [][]string{{"workload", "msgs", "time", "msgs/s", "MB/s", "p50", "p90", "p99", "p99.9", "max", "errors"}}
	for _, r := range results {
		row := []string{r.Workload, fmt.Sprint(r.Messages), FormatDuration(r.Elapsed), FormatCount(r.Rate), fmt.Sprintf("%.1f", r.MBps)}
		if l := r.Latency; l != nil {
			row = append(row, FormatDuration(l.P50), FormatDuration(l.P90), FormatDuration(l.P99), FormatDuration(l.P999), FormatDuration(l.Max))
		} else {
			row = append(row, "-", "-", "-", "-", "-")
		}
		rows = append(rows, append(row, r.Errors()))
	}
	if withSystem {
		rows[0] = append([]string{"system"}, rows[0]...)
		for i, r := range results {
			rows[i+1] = append([]string{r.System}, rows[i+1]...)
		}
	}
	// Names and errors align left, numbers right.
	left := func(col int) bool { return col == len(rows[0])-1 || col == 0 || (withSystem && col == 1) }
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			if i > 0 {
				b.WriteString("  ")
			}
			if left(i) {
				b.WriteString(cell + pad)
			} else {
				b.WriteString(pad + cell)
			}
		}
		s := strings.TrimRight(b.String(), " ")
		b.Reset()
		if _, err := io.WriteString(w, s+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON prints results as one JSON document: {"results": [...]}.
func WriteJSON(w io.Writer, results []*Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Results []*Result `json:"results"`
	}{results})
}

// FormatCount writes n rounded, with thousands separators: 57,871.
func FormatCount(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// FormatDuration writes d with three significant digits in a unit that
// suits it: 147µs, 1.23ms, 4.56s.
func FormatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return sig3(us(d)) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	default:
		return sig3(d.Seconds()) + "s"
	}
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
