// Command ferry-vs-jetstream runs the same workloads on Ferry and on NATS
// JetStream in one run and prints the medians and their ratios.
//
// Ferry is pipelines/broker.yaml embedded in this process (the broker core
// here, its file storage and grpc transport plugins in their own processes,
// re-executing this binary), and the same node with its plugins linked
// in-process (and, with -node, the whole node in a process of its own, as
// `ferry run` runs it: the load generator here, the core and its plugins
// there); JetStream is an embedded nats-server (one replica, file
// storage). Durability is matched: Ferry `flush: async` against JetStream's
// default (fsync every 2 minutes), Ferry `flush: sync` against JetStream
// `sync_interval: always`. Each workload runs --reps times on each system,
// interleaved, the order of the systems reversed on every rep, so that drift
// during the run falls on all of them alike.
//
//	cd bench && go run ./cmd/ferry-vs-jetstream -reps 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/bench/harness"
)

func main() {
	if len(os.Args) >= 3 && os.Args[1] == "plugin" && os.Args[2] == "serve" {
		// The plugin host re-executes this binary for the built-in plugins.
		if err := harness.ServePlugin(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "ferry-vs-jetstream:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) >= 3 && os.Args[1] == "jetstream" && os.Args[2] == "serve" {
		// -apart: JetStream in a process of its own.
		if err := harness.ServeJetStream(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "ferry-vs-jetstream jetstream:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) >= 3 && os.Args[1] == "node" && os.Args[2] == "run" {
		// -node: Ferry's whole node in a process of its own.
		if err := harness.ServeNode(os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "ferry-vs-jetstream node:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "ferry-vs-jetstream:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ferry-vs-jetstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := harness.DefaultOptions()
	fs.StringVar(&o.Pipeline, "pipeline", o.Pipeline, "Ferry pipeline to embed (its first topic is used)")
	fs.IntVar(&o.Reps, "reps", o.Reps, "repetitions of each workload on each system (at least 3 for a median worth the name)")
	fs.IntVar(&o.Size, "size", o.Size, "message body bytes")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long each produce workload sends")
	fs.Int64Var(&o.ConsumeCount, "consume-count", o.ConsumeCount, "messages read by the consume workload")
	durability := fs.String("durability", strings.Join(o.Durability, ","), "durability levels to compare: async (Ferry flush async, JetStream default), sync (Ferry flush sync, JetStream sync_interval always)")
	noInproc := fs.Bool("no-inprocess", false, "leave out Ferry with in-process plugins")
	withNode := fs.Bool("node", false, "also run Ferry's whole node in a process of its own (core and plugins, as `ferry run` runs it), the load generator in this one")
	apart := fs.Bool("apart", false, "also run Ferry with in-process plugins and JetStream each in a process of their own, and Ferry's node as -node does: every server's client crosses a process boundary, as users' clients do")
	withGRPC := fs.Bool("grpc", false, "also run Ferry with its plugins in processes on the gRPC data plane (plugins.data_plane: grpc), for the rings' before/after")
	jsonOut := fs.String("json", "", "also write every run and the medians as JSON to this file")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile (load generators, Ferry's broker core, nats-server) here; plugins: set FERRY_PLUGIN_CPUPROFILE")
	quiet := fs.Bool("quiet", false, "do not print each run as it ends")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Durability = strings.Split(*durability, ",")
	o.InProcess = !*noInproc
	o.GRPC = *withGRPC
	o.Node = *withNode
	o.Apart = *apart
	if !*quiet {
		o.Log = stderr
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	rep, err := harness.Run(ctx, o)
	if rep == nil {
		return err
	}
	if werr := rep.Write(stdout); werr != nil {
		err = errors.Join(err, werr)
	}
	fmt.Fprintf(stdout, "\n%d reps, %d-byte messages, produce workloads %s each; took %s\n", o.Reps, o.Size, o.Duration, time.Since(start).Round(time.Second))
	if *jsonOut != "" {
		f, ferr := os.Create(*jsonOut)
		if ferr != nil {
			return errors.Join(err, ferr)
		}
		defer f.Close()
		err = errors.Join(err, rep.WriteJSON(f))
	}
	return err
}
