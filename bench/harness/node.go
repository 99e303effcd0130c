package harness

import (
	"bufio"
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

	"github.com/ferrymq/ferry/bench/natsbench"
	"github.com/ferrymq/ferry/core/bench"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// ServeNode runs, in this process, the node `ferry run PIPELINE` would: the
// pipeline's broker with its plugins in their own processes on the ring data
// plane (or, with args[3] "inprocess", linked into this process), its
// storage's flush set to args[0] ("async" or "sync"), its transport
// listening on args[1], until SIGTERM. Like `ferry run`, it sets Ferry's GC
// default, and the core's one P on a small machine when the core only routes
// (sdk.SetCoreProcs; not when the plugins run in this process).
// args: DURABILITY LISTEN PIPELINE [MODE].
func ServeNode(args []string) error {
	if len(args) != 3 && len(args) != 4 {
		return errors.New("usage: node run DURABILITY LISTEN PIPELINE [subprocess|inprocess]")
	}
	mode, dataPlane := pluginhost.ModeSubprocess, pluginhost.DataPlaneRing
	if len(args) == 4 {
		switch args[3] {
		case pluginhost.ModeSubprocess:
		case pluginhost.ModeInProcess:
			mode, dataPlane = pluginhost.ModeInProcess, ""
		default:
			return fmt.Errorf("node run: mode %q: want subprocess or inprocess", args[3])
		}
	}
	cfg, err := config.Load(args[2])
	if err != nil {
		return err
	}
	sdk.SetGCDefault()
	if mode == pluginhost.ModeSubprocess && len(cfg.Generators) == 0 && len(cfg.Flows) == 0 {
		sdk.SetCoreProcs()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	e, err := bench.StartEmbedded(ctx, cfg, bench.EmbeddedOptions{
		Registry: builtin.Registry(), Listen: args[1],
		Logger: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Error, Output: os.Stderr}),
		Mode:   mode, DataPlane: dataPlane, Storage: map[string]any{"flush": args[0]},
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
// o.PluginExe, with "node run"), its plugins in the mode given, and connects
// a client to it.
func startNode(ctx context.Context, o Options, durability, mode, label string, cl *closer) (bench.System, error) {
	listen, err := bench.FreeAddr()
	if err != nil {
		return nil, err
	}
	ch, err := startChild(o, cl, "node", "run", durability, listen, o.Pipeline, mode)
	if err != nil {
		return nil, fmt.Errorf("node process: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case err := <-ch.exited:
			ch.exited <- err
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
	return &bench.Ferry{Label: label, Client: c}, nil
}

// child is a process startChild started.
type child struct {
	firstLine chan string // its first line of stdout; closed at EOF
	exited    chan error  // cmd.Wait's result (put back by whoever takes it)
}

// startChild starts this executable (or o.PluginExe) with args, its stderr
// and its stdout after the first line on this process's stderr, and stops
// it (SIGTERM, then SIGKILL after 40 s) when cl closes.
func startChild(o Options, cl *closer, args ...string) (*child, error) {
	exe := o.PluginExe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := &child{firstLine: make(chan string, 1), exited: make(chan error, 1)}
	go func() {
		// The first line (JetStream's URL) goes to lines; the rest to stderr.
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				ch.firstLine <- sc.Text()
				first = false
				continue
			}
			fmt.Fprintln(os.Stderr, sc.Text())
		}
		close(ch.firstLine)
	}()
	go func() { ch.exited <- cmd.Wait() }()
	cl.add(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-ch.exited:
			ch.exited <- err
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			ch.exited <- <-ch.exited
		}
	})
	return ch, nil
}

// ServeJetStream runs, in this process, the JetStream server the comparison
// embeds, with sync_interval always when args[0] is "sync", prints its URL
// on the first line of stdout, and serves until SIGTERM. args: DURABILITY.
func ServeJetStream(args []string) error {
	if len(args) != 1 || (args[0] != "async" && args[0] != "sync") {
		return errors.New("usage: jetstream serve async|sync")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv, err := natsbench.StartServer(natsbench.ServerOptions{SyncAlways: args[0] == "sync"})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Println(srv.URL())
	<-ctx.Done()
	return nil
}

// startJetStream starts ServeJetStream in a child process and connects to it.
func startJetStream(ctx context.Context, o Options, durability string, cl *closer) (bench.System, error) {
	ch, err := startChild(o, cl, "jetstream", "serve", durability)
	if err != nil {
		return nil, fmt.Errorf("jetstream process: %w", err)
	}
	var url string
	select {
	case line, ok := <-ch.firstLine:
		if !ok {
			return nil, errors.New("jetstream process printed no URL")
		}
		url = line
	case err := <-ch.exited:
		ch.exited <- err
		return nil, fmt.Errorf("jetstream process exited before it served: %v", err)
	case <-time.After(60 * time.Second):
		return nil, errors.New("jetstream process: no URL after 60 s")
	}
	js, err := natsbench.Connect(ctx, JetStreamApart, url)
	if err != nil {
		return nil, err
	}
	cl.add(js.Close)
	return js, nil
}
