package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
)

// EmbeddedOptions say how StartEmbedded adapts a pipeline for a benchmark.
type EmbeddedOptions struct {
	Registry  *pluginhost.Registry // built-in plugins
	PluginExe string               // binary re-executed for built-in plugins; default: this one
	Logger    hclog.Logger
	// DataDir replaces the pipeline's; "" means a new temporary directory,
	// removed by Close.
	DataDir string
	// Listen replaces the grpc transport's listen address; "" means a free
	// loopback port.
	Listen string
	// Mode replaces plugins.mode when set (pluginhost.ModeSubprocess or
	// ModeInProcess).
	Mode string
	// DataPlane replaces plugins.data_plane when set ("ring" or "grpc").
	DataPlane string
	// Storage is merged into the storage plugin's config section (e.g.
	// {"flush": "sync"}).
	Storage map[string]any
	// AdminListen replaces the pipeline's admin listener (admin.listen); ""
	// turns it off, so that embedded nodes do not contend for the fixed
	// port a shipped pipeline names (pipelines/broker.yaml: 127.0.0.1:9090).
	AdminListen string
}

// Embedded is a broker node a benchmark started in its own process (with its
// plugins in theirs, unless in-process).
type Embedded struct {
	Engine *engine.Engine
	tmp    string
}

// StartEmbedded starts the node cfg describes, changed as opts say; its
// generators and flows are not run.
func StartEmbedded(ctx context.Context, cfg *config.Pipeline, opts EmbeddedOptions) (*Embedded, error) {
	c := *cfg
	c.Plugins.Storage.Config = maps.Clone(cfg.Plugins.Storage.Config)
	c.Plugins.Transport.Config = maps.Clone(cfg.Plugins.Transport.Config)
	if c.Plugins.Storage.Config == nil {
		c.Plugins.Storage.Config = map[string]any{}
	}
	maps.Copy(c.Plugins.Storage.Config, opts.Storage)
	if opts.Mode != "" {
		c.Plugins.Mode = opts.Mode
	}
	if opts.DataPlane != "" {
		c.Plugins.DataPlane = opts.DataPlane
	}
	e := &Embedded{}
	c.Node.DataDir = opts.DataDir
	if c.Node.DataDir == "" {
		dir, err := os.MkdirTemp("", "ferry-bench-")
		if err != nil {
			return nil, err
		}
		e.tmp, c.Node.DataDir = dir, dir
	}
	listen := opts.Listen
	if listen == "" {
		var err error
		if listen, err = FreeAddr(); err != nil {
			e.cleanup()
			return nil, err
		}
	}
	if c.Plugins.Transport.Config == nil {
		c.Plugins.Transport.Config = map[string]any{}
	}
	c.Plugins.Transport.Config["listen"] = listen
	c.Admin.Listen = opts.AdminListen
	eng, err := engine.Start(ctx, &c, engine.Options{Registry: opts.Registry, PluginExe: opts.PluginExe, Logger: opts.Logger})
	if err != nil {
		e.cleanup()
		return nil, fmt.Errorf("bench: embedded broker: %w", err)
	}
	e.Engine = eng
	return e, nil
}

// Address is where clients reach the node.
func (e *Embedded) Address() string { return e.Engine.Address() }

// Close stops the node and removes its temporary data directory.
func (e *Embedded) Close(ctx context.Context) error {
	err := e.Engine.Close(ctx)
	return errors.Join(err, e.cleanup())
}

func (e *Embedded) cleanup() error {
	if e.tmp == "" {
		return nil
	}
	return os.RemoveAll(e.tmp)
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
