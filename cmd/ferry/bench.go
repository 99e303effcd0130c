package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ferrymq/ferry/core/bench"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/logging"
	"github.com/ferrymq/ferry/core/pluginhost"
)

func init() { rootCmd.AddCommand(newBenchCmd()) }

// benchFlags are the flags of `ferry bench`.
type benchFlags struct {
	brokers    []string
	tls        tlsFlags
	embedded   string
	plugins    string // embedded: plugins.mode override
	flush      string // embedded: storage flush override
	dataDir    string
	listen     string
	topic      string
	size       int
	count      int64
	duration   time.Duration
	producers  int
	mode       string
	inflight   int
	linger     time.Duration
	consumers  int
	delivery   string
	fetchMax   int
	noPreload  bool
	json       bool
	progress   string
	cpuProfile string
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench produce|consume|e2e [--broker ADDR | --embedded PIPELINE.yaml] [flags]",
		Short: "Measure produce, consume or end-to-end rates and latencies",
		Long: `Bench runs one workload against a running broker (--broker) or against a
broker node it starts itself from a pipeline file (--embedded), and prints a
result table: the rate in msgs/s and MB/s, latency p50, p90, p99 and p99.9
(from an HDR histogram), and the messages that failed, by status.

  produce  --producers goroutines send --count messages (or for --duration)
           in --mode sync (wait for each ack), async (--inflight messages
           in flight per producer) or oneway (timed until the broker stored
           them all). Latency: send to ack.
  consume  --consumers consumers of a new group read --count messages from
           the topic's start, acking each one, by --delivery pull (fetch and
           ack) or push (handler). What the topic lacks is produced first,
           untimed (unless --no-preload).
  e2e      consumers start at the topic's end, then the producers send;
           latency is send to the consumer's handler, the rate is of
           messages consumed.

An embedded broker keeps its data in a temporary directory (--data-dir to
keep it), listens on a free loopback port (--listen), and runs its plugins as
the pipeline says (--plugins subprocess|inprocess to change it);
--flush sync|async changes its storage's flush. While it runs a progress bar
is drawn on stderr when stderr is a terminal. With --json the result is one
JSON document on stdout. The exit status is 1 if any message failed.`,
		Example: `  ferry bench produce --embedded pipelines/broker.yaml --mode async --count 200000
  ferry bench produce --broker 127.0.0.1:7070 --topic orders --producers 16 --duration 10s
  ferry bench consume --embedded pipelines/broker.yaml --count 200000 --delivery pull --json`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{string(bench.Produce), string(bench.Consume), string(bench.EndToEnd)},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if f.embedded == "" {
				bs, err := brokersOf(cmd, f.brokers)
				if err != nil {
					return err
				}
				f.brokers = bs
			}
			return runBench(ctx, args[0], f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.brokers, "broker", nil, "a running broker: "+brokerUsage+"; repeat or comma-separate for a cluster")
	f.tls.add(fl)
	fl.StringVar(&f.embedded, "embedded", "", "start the broker node of this pipeline file in this process")
	fl.StringVar(&f.plugins, "plugins", "", "embedded: plugin mode, subprocess or inprocess (default: the pipeline's)")
	fl.StringVar(&f.flush, "flush", "", "embedded: the storage's flush, sync or async (default: the pipeline's)")
	fl.StringVar(&f.dataDir, "data-dir", "", "embedded: data directory (default: a temporary one, removed at the end)")
	fl.StringVar(&f.listen, "listen", "", "embedded: the grpc transport's address (default: a free loopback port)")
	fl.StringVar(&f.topic, "topic", "", "topic (default with --embedded: the pipeline's first)")
	fl.IntVar(&f.size, "size", bench.DefaultSize, "message body size in bytes")
	fl.Int64Var(&f.count, "count", 0, fmt.Sprintf("messages to send or consume (default %d unless --duration)", bench.DefaultCount))
	fl.DurationVar(&f.duration, "duration", 0, "send for this long instead of --count (produce, e2e)")
	fl.IntVar(&f.producers, "producers", 1, "producers sending at once")
	fl.StringVar(&f.mode, "mode", "sync", "send mode: sync, async or oneway")
	fl.IntVar(&f.inflight, "inflight", bench.DefaultInflight, "async: messages in flight per producer")
	fl.DurationVar(&f.linger, "linger", client.DefaultLinger, "async: how long a batch waits for more messages")
	fl.IntVar(&f.consumers, "consumers", 1, "consumers of the group (consume, e2e)")
	fl.StringVar(&f.delivery, "delivery", "pull", "consumers' delivery: pull or push")
	fl.IntVar(&f.fetchMax, "fetch-max", 0, fmt.Sprintf("messages per fetch at most (default: the client's, %d)", client.DefaultMaxMessages))
	fl.BoolVar(&f.noPreload, "no-preload", false, "consume: fail instead of producing what the topic lacks")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON on stdout")
	fl.StringVar(&f.progress, "progress", "auto", "progress bar on stderr: auto (when a terminal), always or never")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write this process's CPU profile (client and embedded broker core) to this file")
	return cmd
}

func runBench(ctx context.Context, kind string, f benchFlags, stdout, stderr io.Writer) error {
	fail := func(format string, a ...any) error { return &exitError{code: 1, msg: fmt.Sprintf(format, a...)} }
	var brokers []string
	for _, b := range f.brokers {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if (len(brokers) > 0) == (f.embedded != "") {
		return fail("give either --broker or --embedded")
	}
	if f.embedded == "" && (f.plugins != "" || f.flush != "" || f.dataDir != "" || f.listen != "") {
		return fail("--plugins, --flush, --data-dir and --listen apply to --embedded only")
	}
	switch f.plugins {
	case "", pluginhost.ModeSubprocess, pluginhost.ModeInProcess:
	default:
		return fail("--plugins must be subprocess or inprocess, got %q", f.plugins)
	}
	switch f.flush {
	case "", "sync", "async":
	default:
		return fail("--flush must be sync or async, got %q", f.flush)
	}
	switch f.progress {
	case "auto", "always", "never":
	default:
		return fail("--progress must be auto, always or never, got %q", f.progress)
	}
	w := bench.Workload{
		Kind: bench.Kind(kind), Topic: f.topic, Size: f.size, Count: f.count, Duration: f.duration,
		Producers: f.producers, Mode: bench.SendMode(f.mode), Inflight: f.inflight,
		Consumers: f.consumers, Delivery: bench.Delivery(f.delivery), FetchMax: f.fetchMax, Preload: !f.noPreload,
	}
	if f.producers < 1 || f.consumers < 1 || f.inflight < 1 || f.fetchMax < 0 {
		return fail("--producers, --consumers and --inflight must be at least 1, --fetch-max not negative")
	}

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fail("%v", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fail("%v", err)
		}
		defer pprof.StopCPUProfile()
	}

	if f.embedded != "" {
		cfg, err := config.Load(f.embedded)
		if err != nil {
			var ps config.Problems
			if errors.As(err, &ps) {
				for _, p := range ps {
					fmt.Fprintln(stderr, p)
				}
				return fail("%s has %d problem(s)", f.embedded, len(ps))
			}
			return fail("%v", err)
		}
		if w.Topic == "" && len(cfg.Topics) > 0 {
			w.Topic = cfg.Topics[0].Name
		}
		if err := checkWorkload(w); err != nil {
			return err
		}
		opts := bench.EmbeddedOptions{
			Registry: builtins(), DataDir: f.dataDir, Listen: f.listen, Mode: f.plugins,
			Logger: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Warn, Output: stderr}),
		}
		if f.flush != "" {
			opts.Storage = map[string]any{"flush": f.flush}
		}
		e, err := bench.StartEmbedded(ctx, cfg, opts)
		if err != nil {
			return fail("%v", err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), cfg.Node.ShutdownTimeout)
			defer cancel()
			if err := e.Close(cctx); err != nil {
				fmt.Fprintln(stderr, "ferry bench: stopping the embedded broker:", err)
			}
		}()
		brokers = []string{e.Address()}
	} else if err := checkWorkload(w); err != nil {
		return err
	}

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	logger := logging.Slog(hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Error, Output: stderr}))
	copts, err := f.tls.options()
	if err != nil {
		return err
	}
	c, err := client.DialCluster(dctx, brokers, append(copts, client.WithLogger(logger))...)
	if err != nil {
		return fail("cannot reach %s: %v", strings.Join(brokers, ","), err)
	}
	defer c.Close()

	sys := &bench.Ferry{Client: c, Producer: client.ProducerOptions{Linger: f.linger}}
	w = w.WithDefaults()
	rec := bench.NewRecorder()
	show := f.progress == "always" || (f.progress == "auto" && isTerminal(stderr))
	var stopProgress func()
	if show {
		stopProgress = drawProgress(ctx, stderr, w, rec)
	}
	res, err := sys.Run(ctx, w, rec)
	if stopProgress != nil {
		stopProgress()
	}
	if err != nil {
		return fail("%v", err)
	}
	if f.json {
		err = bench.WriteJSON(stdout, []*bench.Result{res})
	} else {
		row := *res
		row.System = "" // one system: no column for it
		err = bench.WriteTable(stdout, []*bench.Result{&row})
	}
	if err != nil {
		return err
	}
	if n := res.Failed(); n > 0 {
		return fail("%d message(s) failed: %s", n, res.Errors())
	}
	if ctx.Err() != nil {
		return fail("interrupted")
	}
	return nil
}

// checkWorkload reports a workload's problems as flag errors.
func checkWorkload(w bench.Workload) error {
	if w.Topic == "" {
		return &exitError{code: 1, msg: "--topic is required with --broker"}
	}
	if err := w.WithDefaults().Validate(); err != nil {
		return &exitError{code: 1, msg: strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// drawProgress draws a bar per phase of the run (preload, run, drain) on w
// until the returned function is called: messages done of Count, or time
// passed of Duration, with the current rate.
func drawProgress(ctx context.Context, w io.Writer, wl bench.Workload, rec *bench.Recorder) func() {
	p := mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond), mpb.ForceAutoRefresh())
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var (
			bar     *mpb.Bar
			phase   string
			started time.Time
			total   int64
			counts  *atomic.Int64
		)
		for finished := false; ; {
			select {
			case <-done:
				finished = true
			default:
			}
			ph, n := rec.Progress()
			if ph != phase && ph != "" {
				if bar != nil {
					bar.SetTotal(-1, true)
				}
				phase, started = ph, time.Now()
				total = wl.Count
				if wl.Duration > 0 && ph == "run" {
					total = wl.Duration.Milliseconds()
				}
				total = max(total, 1)
				count := new(atomic.Int64) // this phase's messages
				start := started
				rate := func(decor.Statistics) string {
					n := count.Load()
					secs := time.Since(start).Seconds()
					if secs <= 0 {
						return ""
					}
					return fmt.Sprintf("%s msgs  %s msgs/s", bench.FormatCount(float64(n)), bench.FormatCount(float64(n)/secs))
				}
				bar = p.AddBar(total,
					mpb.PrependDecorators(decor.Name(fmt.Sprintf("%-8s", ph)), decor.Percentage(decor.WCSyncSpace)),
					mpb.AppendDecorators(decor.Any(rate, decor.WCSyncSpace)),
				)
				counts = count
			}
			if bar != nil {
				counts.Store(n)
				if wl.Duration > 0 && ph == "run" {
					bar.SetCurrent(min(time.Since(started).Milliseconds(), total))
				} else {
					bar.SetCurrent(min(n, total))
				}
			}
			if finished {
				if bar != nil {
					bar.SetTotal(-1, true)
				}
				return
			}
			select {
			case <-done:
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		p.Wait()
	}
}
