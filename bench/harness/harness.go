// Package harness is the Ferry-against-JetStream comparison: it starts the
// systems (Ferry embedded with subprocess and in-process plugins, JetStream
// embedded), at matched durability, runs the workloads of the comparison on
// each, interleaved, and reports medians, ratios and whether the targets
// were met.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/bench/natsbench"
	"github.com/ferrymq/ferry/core/bench"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// Names of the systems (the columns of the table).
const (
	Ferry       = "ferry"
	FerryInproc = "ferry in-process"
	FerryGRPC   = "ferry grpc" // plugins in processes, data plane gRPC (the data plane before the rings)
	FerryNode   = "ferry node" // the whole node in a process of its own, as `ferry run` runs it
	JetStream   = "jetstream"
	// With Options.Apart: the in-process node and JetStream each in a
	// process of their own, so that every system's client crosses a process
	// boundary, as every user's does.
	FerryInprocNode = "ferry in-process node"
	JetStreamApart  = "jetstream apart"
)

// Options configure Run.
type Options struct {
	Pipeline     string // Ferry's pipeline; its first topic is used
	Reps         int
	Size         int
	Duration     time.Duration // of each produce workload
	ConsumeCount int64         // messages read by the consume workload
	Durability   []string      // "async", "sync"
	InProcess    bool          // also run Ferry with in-process plugins
	GRPC         bool          // also run Ferry with plugins in processes on the gRPC data plane
	Node         bool          // also run Ferry as a node process of its own (ServeNode), as `ferry run` does
	// Apart also runs the node with in-process plugins and JetStream each in
	// a process of its own (and implies Node): the comparison of servers as
	// users run them, the load generator in this process.
	Apart bool
	// Log, when set, gets a line per run as it ends.
	Log io.Writer
	// PluginExe is the binary the plugin host re-executes for Ferry's
	// plugins: one that calls ServePlugin for `plugin serve KIND/TYPE`.
	// Default: this process's executable.
	PluginExe string
}

// DefaultOptions are the comparison of docs/performance.md: 3 reps of 1 KiB
// messages, 3 s per produce workload, 200k messages consumed, both
// durability levels, Ferry's two plugin builds.
func DefaultOptions() Options {
	return Options{
		Pipeline: "../pipelines/broker.yaml", Reps: 3, Size: 1024, Duration: 3 * time.Second,
		ConsumeCount: 200_000, Durability: []string{"async", "sync"}, InProcess: true,
	}
}

// Report is what Run measured.
type Report struct {
	Cmp        *bench.Comparison
	Pairs      []bench.Pair
	LoadBefore string // /proc/loadavg when the run began
	LoadAfter  string
	Options    Options
}

// ServePlugin serves the built-in plugin args[0] ("KIND/TYPE") on stdio for
// the plugin host, as `ferry plugin serve` does.
func ServePlugin(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: plugin serve KIND/TYPE")
	}
	kind, typ, ok := strings.Cut(args[0], "/")
	f := builtin.Registry().Builtin(kind, typ)
	if !ok || f == nil {
		return fmt.Errorf("no built-in plugin %q", args[0])
	}
	opts := sdk.ServeOpts{}
	switch p := f().(type) {
	case sdk.Storage:
		opts.Storage = p
	case sdk.Transport:
		opts.Transport = p
	default:
		return fmt.Errorf("built-in plugin %q has no servable kind", args[0])
	}
	sdk.Serve(opts)
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// closer collects what Run started, to stop it in reverse order.
type closer []func()

func (c *closer) add(f func()) { *c = append(*c, f) }

func (c *closer) close() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
}

// systems are the systems at one durability level.
type systems struct {
	ferry, inproc, grpc, node, js, inprocNode, jsApart bench.System
}

// start brings up the systems of one durability level.
func start(ctx context.Context, o Options, cfg *config.Pipeline, durability string, cl *closer) (*systems, error) {
	var s systems
	logger := hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Error, Output: os.Stderr})
	ferry := func(mode, dataPlane, label string) (bench.System, error) {
		e, err := bench.StartEmbedded(ctx, cfg, bench.EmbeddedOptions{
			Registry: builtin.Registry(), PluginExe: o.PluginExe, Logger: logger,
			Mode: mode, DataPlane: dataPlane, Storage: map[string]any{"flush": durability},
		})
		if err != nil {
			return nil, err
		}
		cl.add(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = e.Close(cctx)
		})
		c, err := client.Dial(ctx, e.Address())
		if err != nil {
			return nil, err
		}
		cl.add(func() { c.Close() })
		return &bench.Ferry{Label: label, Client: c}, nil
	}
	var err error
	if s.ferry, err = ferry(pluginhost.ModeSubprocess, pluginhost.DataPlaneRing, Ferry); err != nil {
		return nil, err
	}
	if o.InProcess {
		if s.inproc, err = ferry(pluginhost.ModeInProcess, "", FerryInproc); err != nil {
			return nil, err
		}
	}
	if o.GRPC {
		if s.grpc, err = ferry(pluginhost.ModeSubprocess, pluginhost.DataPlaneGRPC, FerryGRPC); err != nil {
			return nil, err
		}
	}
	if o.Node || o.Apart {
		if s.node, err = startNode(ctx, o, durability, pluginhost.ModeSubprocess, FerryNode, cl); err != nil {
			return nil, err
		}
	}
	if o.Apart {
		if s.inprocNode, err = startNode(ctx, o, durability, pluginhost.ModeInProcess, FerryInprocNode, cl); err != nil {
			return nil, err
		}
		if s.jsApart, err = startJetStream(ctx, o, durability, cl); err != nil {
			return nil, err
		}
	}
	srv, err := natsbench.StartServer(natsbench.ServerOptions{SyncAlways: durability == "sync"})
	if err != nil {
		return nil, err
	}
	cl.add(srv.Close)
	js, err := natsbench.Connect(ctx, JetStream, srv.URL())
	if err != nil {
		return nil, err
	}
	cl.add(js.Close)
	s.js = js
	return &s, nil
}

func (s *systems) list() []bench.System {
	out := []bench.System{s.ferry}
	if s.inproc != nil {
		out = append(out, s.inproc)
	}
	if s.grpc != nil {
		out = append(out, s.grpc)
	}
	if s.node != nil {
		out = append(out, s.node)
	}
	out = append(out, s.js)
	for _, x := range []bench.System{s.inprocNode, s.jsApart} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// Cases are the comparison's workloads at one durability level on its
// systems, with the targets (Ferry ÷ JetStream).
func Cases(o Options, topic, durability string, sys []bench.System) []bench.Case {
	label := map[string]string{"async": "flush async vs JS default", "sync": "flush sync vs JS sync always"}[durability]
	produce := func(mode bench.SendMode, producers, inflight int) bench.Workload {
		return bench.Workload{Kind: bench.Produce, Topic: topic, Size: o.Size, Duration: o.Duration, Mode: mode, Producers: producers, Inflight: inflight}
	}
	cases := []bench.Case{
		{Row: label + ": 1 sync producer", Workload: produce(bench.Sync, 1, 0), Systems: sys},
		{Row: label + ": 16 sync producers", Workload: produce(bench.Sync, 16, 0), Systems: sys},
		{Row: label + ": async, 256 in flight", Workload: produce(bench.Async, 1, 256), Systems: sys},
	}
	switch durability {
	case "async":
		cases[0].Target = 1
		cases[2].Target = 2
		if o.ConsumeCount > 0 {
			cases = append(cases, bench.Case{
				Row: fmt.Sprintf("consume %dk, ack each (pull)", o.ConsumeCount/1000), Target: 1.5, Systems: sys,
				Workload: bench.Workload{Kind: bench.Consume, Topic: topic, Size: o.Size, Count: o.ConsumeCount, Delivery: bench.Pull, Preload: true},
			})
		}
	case "sync":
		cases[1].Target = 10
	}
	return cases
}

// warmUp runs a short untimed async and sync produce on s: connections,
// routes, page cache and the plugins' first segments are set up before
// anything is measured.
func warmUp(ctx context.Context, s bench.System, topic string, size int) error {
	for _, w := range []bench.Workload{
		{Kind: bench.Produce, Topic: topic, Size: size, Mode: bench.Async, Count: 5000},
		{Kind: bench.Produce, Topic: topic, Size: size, Mode: bench.Sync, Count: 200, Producers: 4},
	} {
		r, err := s.Run(ctx, w.WithDefaults(), bench.NewRecorder())
		if err != nil {
			return fmt.Errorf("warm-up of %s: %w", s.Name(), err)
		}
		if r.Failed() > 0 {
			return fmt.Errorf("warm-up of %s: %s", s.Name(), r.Errors())
		}
	}
	return nil
}

// Run starts the systems, runs the comparison and stops them. The report
// holds what ran even when an error stopped the run.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Reps < 1 {
		return nil, errors.New("reps must be at least 1")
	}
	cfg, err := config.Load(o.Pipeline)
	if err != nil {
		return nil, err
	}
	if len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%s declares no topic", o.Pipeline)
	}
	topic := cfg.Topics[0].Name
	var cl closer
	defer cl.close()
	var cases []bench.Case
	for _, d := range o.Durability {
		if d != "async" && d != "sync" {
			return nil, fmt.Errorf("durability %q: want async or sync", d)
		}
		s, err := start(ctx, o, cfg, d, &cl)
		if err != nil {
			return nil, fmt.Errorf("starting the %s-durability systems: %w", d, err)
		}
		for _, sys := range s.list() {
			if err := warmUp(ctx, sys, topic, o.Size); err != nil {
				return nil, err
			}
		}
		cases = append(cases, Cases(o, topic, d, s.list())...)
	}
	rep := &Report{Options: o, LoadBefore: loadavg(), Pairs: []bench.Pair{{Num: Ferry, Den: JetStream}}}
	if o.InProcess {
		rep.Pairs = append(rep.Pairs, bench.Pair{Num: Ferry, Den: FerryInproc, Min: 0.8})
	}
	if o.GRPC {
		rep.Pairs = append(rep.Pairs, bench.Pair{Num: Ferry, Den: FerryGRPC})
	}
	if o.Node || o.Apart {
		rep.Pairs = append(rep.Pairs, bench.Pair{Num: FerryNode, Den: JetStream})
		if o.InProcess {
			rep.Pairs = append(rep.Pairs, bench.Pair{Num: FerryNode, Den: FerryInproc, Min: 0.8})
		}
	}
	if o.Apart {
		rep.Pairs = append(rep.Pairs,
			bench.Pair{Num: FerryNode, Den: JetStreamApart},
			bench.Pair{Num: FerryNode, Den: FerryInprocNode, Min: 0.8},
			bench.Pair{Num: FerryInprocNode, Den: JetStreamApart})
	}
	var after func(int, bench.Case, bench.System, *bench.Result)
	if o.Log != nil {
		after = func(i int, c bench.Case, s bench.System, r *bench.Result) {
			p := ""
			if r.Latency != nil {
				p = fmt.Sprintf(", p50 %s, p99 %s", bench.FormatDuration(r.Latency.P50), bench.FormatDuration(r.Latency.P99))
			}
			fmt.Fprintf(o.Log, "rep %d  %-55s %-16s %10s msgs/s%s  errors %s\n", i+1, c.Row, s.Name(), bench.FormatCount(r.Rate), p, r.Errors())
		}
	}
	rep.Cmp, err = bench.RunComparison(ctx, cases, o.Reps, after)
	rep.LoadAfter = loadavg()
	return rep, err
}

// Targets lists each target of the issue with the measured value and
// whether it was met.
func (r *Report) Targets() []string {
	var out []string
	cmp := r.Cmp
	for _, c := range cmp.Cases {
		if c.Target > 0 {
			ratio := cmp.Ratio(c.Row, r.Pairs[0])
			out = append(out, verdict(ratio >= c.Target, fmt.Sprintf("%s: ferry ÷ jetstream %.2f× (target ≥ %g×)", c.Row, ratio, c.Target)))
		}
		if c.Workload.Kind == bench.Produce && c.Workload.Mode == bench.Sync && c.Workload.Producers == 1 && c.Target > 0 {
			f, j := cmp.Median(c.Row, Ferry), cmp.Median(c.Row, JetStream)
			if f != nil && j != nil && f.Latency != nil && j.Latency != nil {
				out = append(out, verdict(f.Latency.P99 <= j.Latency.P99, fmt.Sprintf("%s: p99 ferry %s, jetstream %s (target: ferry's ≤ jetstream's)",
					c.Row, bench.FormatDuration(f.Latency.P99), bench.FormatDuration(j.Latency.P99))))
			}
		}
	}
	if r.Options.Apart {
		// Every server in a process of its own, as users run them.
		apart := bench.Pair{Num: FerryNode, Den: JetStreamApart}
		for _, c := range cmp.Cases {
			if c.Target > 0 {
				ratio := cmp.Ratio(c.Row, apart)
				out = append(out, verdict(ratio >= c.Target, fmt.Sprintf("%s: node ÷ jetstream apart %.2f× (target ≥ %g×)", c.Row, ratio, c.Target)))
			}
			if c.Workload.Kind == bench.Produce && c.Workload.Mode == bench.Sync && c.Workload.Producers == 1 && c.Target > 0 {
				f, i := cmp.Median(c.Row, FerryNode), cmp.Median(c.Row, FerryInprocNode)
				if f != nil && i != nil && f.Latency != nil && i.Latency != nil {
					out = append(out, verdict(f.Latency.P50 <= i.Latency.P50+25*time.Microsecond, fmt.Sprintf("%s: p50 node %s, in-process node %s (target: at most 25 µs more)",
						c.Row, bench.FormatDuration(f.Latency.P50), bench.FormatDuration(i.Latency.P50))))
				}
			}
		}
	}
	for _, p := range r.Pairs[1:] {
		if p.Den != FerryInproc && p.Den != FerryInprocNode {
			continue
		}
		worst, row := 0.0, ""
		for _, c := range cmp.Cases {
			if x := cmp.Ratio(c.Row, p); x > 0 && (row == "" || x < worst) {
				worst, row = x, c.Row
			}
		}
		if row != "" {
			what, den := "subprocess", "in-process"
			if p.Num == FerryNode {
				what = "node process"
			}
			if p.Den == FerryInprocNode {
				den = "in-process node"
			}
			out = append(out, verdict(worst >= p.Min, fmt.Sprintf("%s ÷ %s, lowest over the workloads: %.2f× (%s; target ≥ %g×)", what, den, worst, row, p.Min)))
		}
	}
	return out
}

func verdict(ok bool, s string) string {
	if ok {
		return "met     " + s
	}
	return "MISSED  " + s
}

// Write prints the table of medians with ratios, the targets, and the
// machine's load.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nMedians of %d reps (interleaved), %d-byte messages, %d cores (GOMAXPROCS %d), load average before %s, after %s:\n\n",
		r.Options.Reps, r.Options.Size, runtime.NumCPU(), runtime.GOMAXPROCS(0), r.LoadBefore, r.LoadAfter)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := r.Cmp.WriteMarkdown(w, r.Pairs); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nTargets:")
	for _, t := range r.Targets() {
		fmt.Fprintln(w, "  "+t)
	}
	fmt.Fprintln(w, "\nAll medians:")
	return bench.WriteTable(w, r.Cmp.Medians())
}

// WriteJSON writes every run and the medians.
func (r *Report) WriteJSON(w io.Writer) error {
	var runs []*bench.Result
	for _, c := range r.Cmp.Cases {
		for _, s := range r.Cmp.Systems {
			for _, x := range r.Cmp.Runs[c.Row][s] {
				y := *x
				y.Workload = c.Row
				runs = append(runs, &y)
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{
		"reps": r.Options.Reps, "size": r.Options.Size, "produce_seconds": r.Options.Duration.Seconds(),
		"load_before": r.LoadBefore, "load_after": r.LoadAfter,
		"medians": r.Cmp.Medians(), "runs": runs, "targets": r.Targets(),
	})
}
