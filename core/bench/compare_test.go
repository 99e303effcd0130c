package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/bench"
)

// fakeSystem answers with a fixed rate and logs the order of its runs.
type fakeSystem struct {
	name string
	rate float64
	log  *[]string
}

func (f *fakeSystem) Name() string { return f.name }

func (f *fakeSystem) Run(_ context.Context, w bench.Workload, rec *bench.Recorder) (*bench.Result, error) {
	*f.log = append(*f.log, f.name)
	for range 10 {
		rec.Record(bench.StatusOK, w.Size, time.Duration(1e6/f.rate)*time.Microsecond)
	}
	r := rec.Result(f.name, w, time.Second)
	r.Rate = f.rate + float64(len(*f.log)) // differs per rep: the median must pick the middle
	return r, nil
}

// Systems run interleaved, in an order reversed on every rep; medians and
// ratios come from the reps.
func TestRunComparison(t *testing.T) {
	var log []string
	a := &fakeSystem{name: "ferry", rate: 2000, log: &log}
	b := &fakeSystem{name: "jetstream", rate: 1000, log: &log}
	cases := []bench.Case{
		{Row: "1 sync producer", Workload: bench.Workload{Kind: bench.Produce, Topic: "t"}, Systems: []bench.System{a, b}, Target: 1},
		{Row: "consume", Workload: bench.Workload{Kind: bench.Consume, Topic: "t"}, Systems: []bench.System{a, b}, Target: 3},
	}
	cmp, err := bench.RunComparison(context.Background(), cases, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(log, " "), "ferry jetstream ferry jetstream jetstream ferry jetstream ferry ferry jetstream ferry jetstream"; got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	// ferry's rates in row 1: 2001, 2006, 2009 → median 2006; jetstream's: 1002, 1005, 1010 → 1005.
	if m := cmp.Median("1 sync producer", "ferry"); m.Rate != 2006 || m.Reps != 3 || m.Statuses["OK"] != 30 {
		t.Errorf("median %+v", m)
	}
	if r := cmp.Ratio("1 sync producer", bench.Pair{Num: "ferry", Den: "jetstream"}); r != 2006.0/1005 {
		t.Errorf("ratio %v", r)
	}
	var md strings.Builder
	if err := cmp.WriteMarkdown(&md, []bench.Pair{{Num: "ferry", Den: "jetstream"}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"| workload | ferry | jetstream | ferry ÷ jetstream |",
		"| 1 sync producer | 2,006 msgs/s, p50 500µs, p99 500µs | 1,005 msgs/s, p50 1.00ms, p99 1.00ms | 2.00× (target ≥ 1×: met) |",
		"(target ≥ 3×: missed)",
	} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
	if n := len(cmp.Medians()); n != 4 {
		t.Errorf("%d medians, want 4", n)
	}
}

func TestMedianEven(t *testing.T) {
	rs := []*bench.Result{{Rate: 1, Latency: &bench.Latency{P99: 10}}, {Rate: 4, Latency: &bench.Latency{P99: 30}}, {Rate: 2}, {Rate: 3}}
	m := bench.Median(rs)
	if m.Rate != 2.5 || m.Latency.P99 != 20 || m.Reps != 4 {
		t.Errorf("median rate %v p99 %v reps %d", m.Rate, m.Latency.P99, m.Reps)
	}
	if bench.Median(nil) != nil {
		t.Error("median of nothing")
	}
}
