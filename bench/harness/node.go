package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/bench"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// ServeNode runs, in this process, the node `ferry run PIPELINE` would: the
// pipeline's broker with its plugins in their own processes on the ring data
// plane, its storage's flush set to args[0] ("async" or "sync"), its
// transport listening on args[1], until SIGTERM. Like `ferry run`, it sets
// Ferry's GC default, and the core's one P on a small machine when the core
// only routes (sdk.SetCoreProcs). args: DURABILITY LISTEN PIPELINE.
func ServeNode(args []string) error {
	if len(args) != 3 {
		return errors.New("usage: node run DURABILITY LISTEN PIPELINE")
	}
	cfg, err := config.Load(args[2])
	if err != nil {
		return err
	}
	sdk.SetGCDefault()
	if len(cfg.Generators) == 0 && len(cfg.Flows) == 0 {
		sdk.SetCoreProcs()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	e, err := bench.StartEmbedded(ctx, cfg, bench.EmbeddedOptions{
		Registry: builtin.Registry(), Listen: args[1],
		Logger: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Error, Output: os.Stderr}),
		Mode:   pluginhost.ModeSubprocess, DataPlane: pluginhost.DataPlaneRing, Storage: map[string]any{"flush": args[0]},
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.Close(cctx)
}

// startNode starts ServeNode in a child process (this executable, or
// o.PluginExe, with "node run") and connects a client to it.
func startNode(ctx context.Context, o Options, durability string, cl *closer) (bench.System, error) {
	exe := o.PluginExe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	listen, err := bench.FreeAddr()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "node", "run", durability, listen, o.Pipeline)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node process: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	cl.add(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("node process exited before it listened on %s: %v", listen, err)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node process: nothing listens on %s after 60 s", listen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := client.Dial(ctx, listen)
	if err != nil {
		return nil, err
	}
	cl.add(func() { c.Close() })
	return &bench.Ferry{Label: FerryNode, Client: c}, nil
}
