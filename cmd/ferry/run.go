package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/logging"
	"github.com/ferrymq/ferry/core/sdk"
)

// quietLogger is the logger of the commands that are not a node (warnings
// and errors only, hclog's text format, like a node's).
func quietLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Warn, Output: os.Stderr})
}

// quietSlog is quietLogger for the Go client (*slog.Logger), at level.
func quietSlog(level hclog.Level) *slog.Logger {
	return logging.Slog(hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: level, Output: os.Stderr}))
}

func init() { rootCmd.AddCommand(newRunCmd()) }

// newRunCmd returns `ferry run`.
func newRunCmd() *cobra.Command {
	var logLevel, logFormat, cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "run PIPELINE.yaml",
		Short: "Run a pipeline: one broker node with its plugins, generators and flows",
		Long: `Run starts the broker node a pipeline describes, with its storage and
transport plugins as subprocesses. A pipeline with generators finishes when
they are done and every flow has consumed what they sent; it prints a summary
and exits 0 if nothing is missing. Otherwise it runs until SIGINT or SIGTERM,
then drains in-flight work and stops.

The node, its plugin processes and its flows' consumers log to stderr through
one logger: hclog's text lines, or with --log-format json one JSON object per
line (@timestamp, @level, @module, @message and the key/values).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				var ps config.Problems
				if errors.As(err, &ps) {
					for _, p := range ps {
						fmt.Fprintln(os.Stderr, p)
					}
					return &exitError{code: 1, msg: fmt.Sprintf("%s has %d problem(s)", args[0], len(ps))}
				}
				return err
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if memProfile != "" {
				defer func() {
					f, err := os.Create(memProfile)
					if err != nil {
						fmt.Fprintln(os.Stderr, "memory profile:", err)
						return
					}
					defer f.Close()
					runtime.GC()
					if err := pprof.WriteHeapProfile(f); err != nil {
						fmt.Fprintln(os.Stderr, "memory profile:", err)
					}
				}()
			}
			sdk.SetGCDefault()
			log, err := logging.New("ferry", logLevel, logFormat, os.Stderr)
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			if routesOnly(cfg) && sdk.SetCoreProcs() {
				log.Debug("the core runs on one processor (GOMAXPROCS=1): its plugins have their own processes on this machine of two cores or fewer")
			}
			// Whatever logs through slog's or the log package's default
			// joins the same stream and format.
			slog.SetDefault(logging.Slog(log))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if ps := config.ValidatePlugins(ctx, cfg, newPluginValidator()); len(ps) > 0 {
				for _, p := range ps {
					fmt.Fprintln(os.Stderr, p)
				}
				return &exitError{code: 1, msg: fmt.Sprintf("%s has %d problem(s)", args[0], len(ps))}
			}
			e, err := engine.Start(ctx, cfg, engine.Options{Registry: builtins(), Logger: log})
			if err != nil {
				if ctx.Err() != nil {
					// SIGINT/SIGTERM while starting: Start stopped what it had begun.
					log.Info("interrupted while starting; stopped")
					return nil
				}
				return err
			}
			log.Info("broker node up", "pipeline", cfg.Name, "node", cfg.Node.ID, "address", e.Address(),
				"storage", cfg.Plugins.Storage.Type, "transport", cfg.Plugins.Transport.Type, "plugins", cfg.Plugins.Mode)
			summary, runErr := e.Run(ctx, cmd.OutOrStdout())
			sctx, cancel := context.WithTimeout(context.Background(), cfg.Node.ShutdownTimeout)
			defer cancel()
			closeErr := e.Close(sctx)
			if summary != nil && (len(summary.Generators) > 0 || len(summary.Flows) > 0) {
				summary.Print(cmd.OutOrStdout(), cfg.Name)
			}
			if runErr != nil && !errors.Is(runErr, context.Canceled) {
				return runErr
			}
			if closeErr != nil {
				return closeErr
			}
			if summary != nil && !summary.OK() {
				return &exitError{code: 1, msg: "some messages were not acknowledged or not delivered"}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text (hclog's lines) or json (one object per line, for log shippers)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write the node's CPU profile to this file (plugins: set "+sdk.EnvCPUProfile+")")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "write the node's heap profile (allocations over its life, live memory) to this file when it stops (plugins: set "+sdk.EnvMemProfile+")")
	return cmd
}

// routesOnly reports whether the node's core only routes requests between
// plugins in their own processes (sdk.SetCoreProcs): plugins as subprocesses,
// and no generator or flow, whose producers and consumers would run in it.
func routesOnly(cfg *config.Pipeline) bool {
	return cfg.Plugins.Mode != "inprocess" && len(cfg.Generators) == 0 && len(cfg.Flows) == 0
}
