package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Median returns a result whose rate, throughput, elapsed time and latency
// percentiles are each the median over rs (runs of one workload on one
// system), whose statuses are summed, and whose Reps is len(rs). nil for
// no runs.
func Median(rs []*Result) *Result {
	if len(rs) == 0 {
		return nil
	}
	m := *rs[0]
	m.Reps = len(rs)
	m.Statuses = map[string]int64{}
	for _, r := range rs {
		for k, v := range r.Statuses {
			m.Statuses[k] += v
		}
	}
	m.Rate = median(rs, func(r *Result) float64 { return r.Rate })
	m.MBps = median(rs, func(r *Result) float64 { return r.MBps })
	m.Messages = int64(median(rs, func(r *Result) float64 { return float64(r.Messages) }))
	m.Bytes = int64(median(rs, func(r *Result) float64 { return float64(r.Bytes) }))
	m.Elapsed = time.Duration(median(rs, func(r *Result) float64 { return float64(r.Elapsed) }))
	var ls []*Result
	for _, r := range rs {
		if r.Latency != nil {
			ls = append(ls, r)
		}
	}
	if len(ls) > 0 {
		d := func(f func(l *Latency) time.Duration) time.Duration {
			return time.Duration(median(ls, func(r *Result) float64 { return float64(f(r.Latency)) }))
		}
		m.Latency = &Latency{
			Count: int64(median(ls, func(r *Result) float64 { return float64(r.Latency.Count) })),
			P50:   d(func(l *Latency) time.Duration { return l.P50 }),
			P90:   d(func(l *Latency) time.Duration { return l.P90 }),
			P99:   d(func(l *Latency) time.Duration { return l.P99 }),
			P999:  d(func(l *Latency) time.Duration { return l.P999 }),
			Max:   d(func(l *Latency) time.Duration { return l.Max }),
			Mean:  d(func(l *Latency) time.Duration { return l.Mean }),
		}
	}
	return &m
}

// median of f over rs: the middle value, or the mean of the two middle ones.
func median(rs []*Result, f func(*Result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Case is one row of a comparison: a workload and the systems it runs on.
// Systems of different rows may share names ("ferry", "jetstream") while
// being configured differently (say, for durability): a name is a column.
type Case struct {
	Row      string
	Workload Workload
	Systems  []System
	// Target, when set, is the least ratio of rates wanted between the
	// comparison's first pair of systems (see Comparison.Pairs).
	Target float64
}

// Pair names two systems whose rates are compared: Num / Den. Min, when
// set, is the least ratio wanted on every row (a case's Target overrides it
// for the first pair).
type Pair struct {
	Num, Den string
	Min      float64
}

// Comparison is the outcome of RunComparison: every run of every case on
// every system.
type Comparison struct {
	Cases []Case
	Reps  int
	// Runs[row][system] are the results of the reps, in order.
	Runs map[string]map[string][]*Result
	// Systems are the systems' names in order of first appearance.
	Systems []string
}

// RunComparison runs each case's workload on each of its systems reps
// times, interleaved so that drift during the run (caches warming, other
// load on the machine) falls on every system alike: rep by rep, case by
// case, and the systems in an order that reverses on every rep (A B C, then
// C B A). Each run's workload gets a fresh Recorder. after, if not nil, is
// called after each run (for progress); a run's error stops everything.
func RunComparison(ctx context.Context, cases []Case, reps int, after func(rep int, c Case, s System, r *Result)) (*Comparison, error) {
	cmp := &Comparison{Cases: cases, Reps: reps, Runs: map[string]map[string][]*Result{}}
	for _, c := range cases {
		if cmp.Runs[c.Row] != nil {
			return nil, fmt.Errorf("bench: two cases are named %q", c.Row)
		}
		cmp.Runs[c.Row] = map[string][]*Result{}
		for _, s := range c.Systems {
			if !slices.Contains(cmp.Systems, s.Name()) {
				cmp.Systems = append(cmp.Systems, s.Name())
			}
		}
	}
	for rep := range reps {
		for _, c := range cases {
			order := slices.Clone(c.Systems)
			if rep%2 == 1 {
				slices.Reverse(order)
			}
			for _, s := range order {
				if err := ctx.Err(); err != nil {
					return cmp, err
				}
				w := c.Workload.WithDefaults()
				r, err := s.Run(ctx, w, NewRecorder())
				if err != nil {
					return cmp, fmt.Errorf("%s on %s (rep %d): %w", c.Row, s.Name(), rep+1, err)
				}
				cmp.Runs[c.Row][s.Name()] = append(cmp.Runs[c.Row][s.Name()], r)
				if after != nil {
					after(rep, c, s, r)
				}
			}
		}
	}
	return cmp, nil
}

// Median is the median result of row on system, nil if it did not run.
func (cmp *Comparison) Median(row, system string) *Result {
	return Median(cmp.Runs[row][system])
}

// Ratio is the ratio of the median rates of row on p.Num and p.Den; 0 when
// one did not run.
func (cmp *Comparison) Ratio(row string, p Pair) float64 {
	a, b := cmp.Median(row, p.Num), cmp.Median(row, p.Den)
	if a == nil || b == nil || b.Rate == 0 {
		return 0
	}
	return a.Rate / b.Rate
}

// Medians returns the median result of every row on every system that ran
// it, in order, for WriteTable or WriteJSON.
func (cmp *Comparison) Medians() []*Result {
	var out []*Result
	for _, c := range cmp.Cases {
		for _, s := range cmp.Systems {
			if m := cmp.Median(c.Row, s); m != nil {
				m.Workload = c.Row
				out = append(out, m)
			}
		}
	}
	return out
}

// WriteMarkdown prints the comparison as a Markdown table: one row per
// case, one column per system with its median rate and, where measured,
// median p50 and p99, then one column per pair with the ratio of the median
// rates (and whether the case's target, for the first pair, was met).
func (cmp *Comparison) WriteMarkdown(w io.Writer, pairs []Pair) error {
	var b strings.Builder
	b.WriteString("| workload |")
	for _, s := range cmp.Systems {
		fmt.Fprintf(&b, " %s |", s)
	}
	for _, p := range pairs {
		fmt.Fprintf(&b, " %s ÷ %s |", p.Num, p.Den)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("--:|", len(cmp.Systems)+len(pairs)))
	b.WriteString("\n")
	for _, c := range cmp.Cases {
		fmt.Fprintf(&b, "| %s |", c.Row)
		for _, s := range cmp.Systems {
			m := cmp.Median(c.Row, s)
			switch {
			case m == nil:
				b.WriteString(" — |")
			case m.Latency != nil && c.Workload.Kind == Produce:
				fmt.Fprintf(&b, " %s msgs/s, p50 %s, p99 %s |", FormatCount(m.Rate), FormatDuration(m.Latency.P50), FormatDuration(m.Latency.P99))
			default:
				fmt.Fprintf(&b, " %s msgs/s |", FormatCount(m.Rate))
			}
			if m != nil && m.Failed() > 0 {
				fmt.Fprintf(&b, " (errors: %s)", m.Errors())
			}
		}
		for i, p := range pairs {
			r := cmp.Ratio(c.Row, p)
			target := p.Min
			if i == 0 && c.Target > 0 {
				target = c.Target
			}
			switch {
			case r == 0:
				b.WriteString(" — |")
			case target > 0:
				verdict := "met"
				if r < target {
					verdict = "missed"
				}
				fmt.Fprintf(&b, " %.2f× (target ≥ %g×: %s) |", r, target, verdict)
			default:
				fmt.Fprintf(&b, " %.2f× |", r)
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
