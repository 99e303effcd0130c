// Package engine runs one pipeline: it starts the plugin host with the
// pipeline's storage and transport plugins, the broker core between them, and
// the pipeline's generators and flows, and shuts all of it down in order.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/broker"
	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/telemetry"
)

// DefaultTransportAddress is where the grpc transport listens unless its
// config says otherwise.
const DefaultTransportAddress = "127.0.0.1:7070"

// Engine is a running pipeline.
type Engine struct {
	cfg       *config.Pipeline
	log       hclog.Logger
	host      *pluginhost.Host
	storage   *pluginhost.Instance
	transport *pluginhost.Instance
	repl      *pluginhost.Instance // nil for replication type none
	broker    *broker.Broker
	core      sdk.Core        // what the transport is served: the broker, behind its guard on a node with users
	self      []client.Option // how the pipeline's own generators and flows authenticate
	auth      *security.Auth  // nil on a node without users
	address   string

	serveCancel context.CancelFunc
	serveDone   chan struct{}
	replDone    chan struct{} // nil without replication
	obs         *observability
	record      bool
}

// Options are the engine's settings that do not come from the pipeline file.
type Options struct {
	// Registry of built-in plugins.
	Registry *pluginhost.Registry
	// PluginExe is the ferry binary re-executed for built-in plugins;
	// default: this process's executable.
	PluginExe string
	Logger    hclog.Logger
	// Record keeps, in Run's Summary, every generated message's outcome
	// (GeneratorResult.Messages) and where each flow first consumed each
	// message (FlowResult.Consumed), so a caller can check each message
	// (the fault tests do, with core/verify's checker). Off, a run keeps
	// only the ids its summary counts.
	Record bool
}

// Start brings a pipeline's node up: plugins, broker and transport. Flows and
// generators are run by Run.
func Start(ctx context.Context, cfg *config.Pipeline, opts Options) (*Engine, error) {
	reg, log := opts.Registry, opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := checkExposure(cfg, log); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Node.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	obs, err := startTracing(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	host, err := pluginhost.New(reg, pluginhost.Options{
		Mode:        cfg.Plugins.Mode,
		DataPlane:   cfg.Plugins.DataPlane,
		RingSize:    cfg.Plugins.RingSizeKiB << 10,
		Dirs:        cfg.Plugins.Dirs,
		Env:         &sdk.Environment{Pipeline: cfg.Name, Node: cfg.Node.ID, DataDir: cfg.Node.DataDir},
		Logger:      log,
		Exe:         opts.PluginExe,
		PluginEnv:   pluginEnv(cfg),
		DialOptions: telemetry.GRPCDialOptions(),
		Restarted:   obs.metrics.PluginRestarted,
	})
	if err != nil {
		obs.stop(context.Background())
		return nil, err
	}
	e := &Engine{cfg: cfg, log: log, host: host, address: TransportAddress(cfg), obs: obs, record: opts.Record}
	ok := false
	defer func() {
		if !ok {
			host.Close()
			obs.stop(context.Background())
		}
	}()
	if e.storage, err = host.Start(ctx, sdk.KindStorage, cfg.Plugins.Storage.Type, sectionJSON(cfg.Plugins.Storage.Config)); err != nil {
		return nil, err
	}
	if t := cfg.Plugins.Replication.Type; t != "" && t != "none" {
		if e.repl, err = host.Start(ctx, sdk.KindReplication, t, sectionJSON(cfg.Plugins.Replication.Config)); err != nil {
			return nil, err
		}
	}
	topics := make([]broker.Topic, len(cfg.Topics))
	for i, t := range cfg.Topics {
		topics[i] = broker.Topic{Name: t.Name, Queues: t.Queues}
		if t.RetentionBytes != 0 || t.RetentionAge != 0 || t.MaxMessageBytes != 0 {
			topics[i].Settings = &sdk.TopicSettings{RetentionBytes: t.RetentionBytes,
				RetentionAgeNanos: int64(t.RetentionAge), MaxMessageBytes: int64(t.MaxMessageBytes)}
		}
	}
	bopts := broker.Options{
		Pipeline: cfg.Name, Node: cfg.Node.ID, Role: cfg.Node.Role, Address: e.address,
		Topics: topics, DataDir: cfg.Node.DataDir, Logger: log.Named("broker"), Metrics: obs.metrics,
		EphemeralGroupTTL: cfg.Node.EphemeralGroupTTL,
	}
	if a := cfg.Node.AutoCreateTopics; a.Enabled {
		bopts.AutoCreateQueues = int32(a.Queues)
	}
	for _, f := range cfg.Flows {
		bopts.Groups = append(bopts.Groups, f.Group)
	}
	if e.repl != nil {
		bopts.Replication = e.repl
	}
	e.broker = broker.New(bopts, e.storage)
	if err := e.broker.OpenTopics(); err != nil {
		return nil, err
	}
	e.broker.Start()
	e.core = e.broker
	if cfg.Security.Enabled() {
		live, err := security.OpenLiveUsers(cfg.Node.DataDir)
		if err != nil {
			_ = e.broker.Close(context.Background())
			return nil, err
		}
		sec := cfg.Security
		users, overridden, err := live.Apply(sec.Users)
		if err != nil {
			_ = e.broker.Close(context.Background())
			return nil, err
		}
		for _, u := range overridden {
			log.Warn("a user of the pipeline is changed by the node's live state, which wins (docs/security.md)", "user", u, "file", live.Path())
		}
		sec.Users = users
		auth, err := security.NewAuth(sec, log.Named("security"))
		if err != nil {
			_ = e.broker.Close(context.Background())
			return nil, err
		}
		auth.SetLive(live)
		user, password, err := auth.Internal()
		if err != nil {
			_ = e.broker.Close(context.Background())
			return nil, err
		}
		e.self = []client.Option{client.WithCredentials(user, password)}
		e.auth = auth
		e.core = security.NewGuard(e.broker, auth)
		log.Info("clients must authenticate", "users", len(users))
	}
	if e.transport, err = host.Start(ctx, sdk.KindTransport, cfg.Plugins.Transport.Type, sectionJSON(cfg.Plugins.Transport.Config)); err != nil {
		_ = e.broker.Close(context.Background())
		return nil, err
	}
	if err := e.startAdmin(ctx); err != nil {
		_ = e.broker.Close(context.Background())
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	e.serveCancel, e.serveDone = cancel, make(chan struct{})
	go e.serveTransport(sctx)
	if e.repl != nil {
		e.replDone = make(chan struct{})
		go e.serveReplication(sctx)
	}
	ok = true
	return e, nil
}

// sectionJSON encodes a plugin's config section for the plugin.
func sectionJSON(section map[string]any) []byte {
	if len(section) == 0 {
		return nil
	}
	b, err := json.Marshal(section)
	if err != nil {
		// koanf produces only JSON-encodable values.
		panic(fmt.Sprintf("plugin config is not JSON-encodable: %v", err))
	}
	return b
}

// TransportAddress is where clients reach the pipeline's grpc transport.
func TransportAddress(cfg *config.Pipeline) string {
	if a, ok := cfg.Plugins.Transport.Config["listen"].(string); ok && a != "" {
		return a
	}
	return DefaultTransportAddress
}

// checkExposure refuses a node whose listeners beyond loopback lack TLS or
// authentication, naming each listener and the keys that secure it; with
// security.allow_plaintext it starts and logs a warning for each.
func checkExposure(cfg *config.Pipeline, log hclog.Logger) error {
	exposed := security.Exposure(cfg.Listeners())
	if cfg.Security.AllowPlaintext {
		for _, x := range exposed {
			log.Warn("insecure listener: "+x.Message(true), "listener", x.Key, "listen", x.Addr)
		}
		return nil
	}
	var errs []error
	for _, x := range exposed {
		errs = append(errs, fmt.Errorf("%s: %s", x.Key, x.Message(false)))
	}
	return errors.Join(errs...)
}

// Address is where clients reach this node.
func (e *Engine) Address() string { return e.address }

// Storage and Transport are the supervised plugins (for tests and status).
func (e *Engine) Storage() *pluginhost.Instance   { return e.storage }
func (e *Engine) Transport() *pluginhost.Instance { return e.transport }

// serveTransport keeps the transport plugin serving the broker, again after
// each restart of the plugin.
func (e *Engine) serveTransport(ctx context.Context) {
	defer close(e.serveDone)
	impl, gen, _ := e.transport.Current()
	for {
		if impl != nil {
			err := impl.(sdk.Transport).Serve(ctx, e.core)
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("transport stopped serving", "error", err, "generation", gen)
			e.transport.Broken(gen)
		}
		var err error
		if impl, gen, err = e.transport.Next(ctx, gen); err != nil {
			return
		}
	}
}

// Replication is the supervised replication plugin, nil for none.
func (e *Engine) Replication() *pluginhost.Instance { return e.repl }

// Broker is the node's broker core.
func (e *Engine) Broker() *broker.Broker { return e.broker }

// serveReplication keeps the replication plugin linked to the broker core,
// again after each restart of the plugin.
func (e *Engine) serveReplication(ctx context.Context) {
	defer close(e.replDone)
	impl, gen, _ := e.repl.Current()
	for {
		if impl != nil {
			err := impl.(sdk.Replication).Serve(ctx, e.broker.ReplicaCore())
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("replication plugin stopped serving", "error", err, "generation", gen)
			e.repl.Broken(gen)
		}
		var err error
		if impl, gen, err = e.repl.Next(ctx, gen); err != nil {
			return
		}
	}
}

// Close shuts the node down: the transport stops taking requests, the broker
// answers what it accepted, then the plugins stop (the store flushes).
func (e *Engine) Close(ctx context.Context) error {
	e.broker.Drain() // long-poll fetches answer now, not after their max_wait
	e.serveCancel()
	select {
	case <-e.serveDone:
	case <-ctx.Done():
	}
	if e.replDone != nil {
		select {
		case <-e.replDone:
		case <-ctx.Done():
		}
	}
	var errs []error
	if err := e.broker.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	e.host.Close()
	e.obs.stop(ctx)
	return errors.Join(errs...)
}

// Summary is what a finished pipeline reports.
type Summary struct {
	Generators []GeneratorResult
	Flows      []FlowResult
	Elapsed    time.Duration
}

// runAll runs fns and returns their first error.
func runAll(fns ...func() error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(fns))
	for i, fn := range fns {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn() }()
	}
	wg.Wait()
	return errors.Join(errs...)
}
