package sdk

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/telemetry"
)

// Plugin kinds, as named in YAML and in go-plugin's plugin sets.
const (
	KindStorage     = "storage"
	KindTransport   = "transport"
	KindReplication = "replication"
)

// ProtocolVersion is the version of the plugin contract in core/proto. A
// host and a plugin agree on it in the handshake; a new incompatible contract
// adds a version, and hosts keep serving the old plugin sets.
const ProtocolVersion = 1

// Handshake is what host and plugin check before they talk. The cookie stops
// a plugin binary from being run by hand by mistake.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "FERRY_PLUGIN_COOKIE",
	MagicCookieValue: "ferry-plugin-5b1c0e2a",
}

// maxMessageBytes bounds one gRPC message across the boundary (a batch).
const maxMessageBytes = 256 << 20

// grpcServerOptions are the plugin side's gRPC settings: large batches and
// windows sized for streams that carry hundreds of KiB per batch.
func grpcServerOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
		grpc.InitialWindowSize(8 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		grpc.UnaryInterceptor(unaryServerErrors),
	}, GRPCBufferServerOptions()...)
}

// GRPCDialOptions are the host side's gRPC settings for talking to a plugin.
func GRPCDialOptions() []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithInitialWindowSize(8 << 20),
		grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithUnaryInterceptor(unaryClientErrors),
	}, GRPCBufferDialOptions()...)
}

// ServeOpts names the one implementation a plugin process serves.
type ServeOpts struct {
	Storage     Storage
	Transport   Transport
	Replication Replication
	Stage       Stage
	// Logger for the plugin's own messages; they reach the host's log on
	// stderr. Default: a JSON logger the host understands.
	Logger hclog.Logger
	// RingFDs are the data plane segment's descriptors (ring.Segment.Files
	// order) when the plugin does not inherit them through EnvRingFD: for
	// harnesses that serve a plugin in-process. Plugins leave it nil.
	RingFDs []int
}

func (o ServeOpts) impl() (Plugin, plugin.PluginSet, error) {
	set := plugin.PluginSet{}
	var impl Plugin
	n := 0
	if o.Storage != nil {
		set[KindStorage] = &grpcPlugin{kind: KindStorage, impl: o.Storage, ringFDs: o.RingFDs}
		impl, n = o.Storage, n+1
	}
	if o.Transport != nil {
		set[KindTransport] = &grpcPlugin{kind: KindTransport, impl: o.Transport, ringFDs: o.RingFDs}
		impl, n = o.Transport, n+1
	}
	if o.Replication != nil {
		set[KindReplication] = &grpcPlugin{kind: KindReplication, impl: o.Replication, ringFDs: o.RingFDs}
		impl, n = o.Replication, n+1
	}
	if o.Stage != nil {
		set[KindStage] = &grpcPlugin{kind: KindStage, impl: o.Stage}
		impl, n = o.Stage, n+1
	}
	if n != 1 {
		return nil, nil, fmt.Errorf("sdk.Serve: exactly one of Storage, Transport, Replication, Stage must be set, got %d", n)
	}
	return impl, set, nil
}

// Serve serves one plugin until the host stops it, then closes it. It never
// returns early: it exits the process on a usage error. The plugin also exits
// when its host dies or on SIGTERM, after Close.
func Serve(opts ServeOpts) {
	cfg, impl, err := NewServeConfig(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	setProcs()
	SetGCDefault()
	stopProfile := startProfile(cfg.Logger)
	// Trace like the host: it passes its settings in the environment.
	stopTracing, err := telemetry.SetupFromEnv(context.Background())
	if err != nil {
		cfg.Logger.Error("tracing disabled", "error", err)
		stopTracing = func(context.Context) error { return nil }
	}
	var once sync.Once
	closeImpl := func() {
		once.Do(func() {
			defer stopProfile()
			if err := impl.Close(); err != nil {
				cfg.Logger.Error("close", "error", err)
			}
			// go-plugin kills a plugin 2 s after it asked it to stop.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := stopTracing(ctx); err != nil { // exports the last spans
				cfg.Logger.Warn("tracing: the last spans were not all exported", "error", err)
			}
		})
	}
	go exitWithHost(cfg.Logger, closeImpl)
	plugin.Serve(cfg)
	closeImpl()
}

// NewServeConfig returns the go-plugin configuration Serve uses, for test
// harnesses that serve a plugin in-process (go-plugin's test mode). Plugins
// call Serve instead.
func NewServeConfig(opts ServeOpts) (*plugin.ServeConfig, Plugin, error) {
	impl, set, err := opts.impl()
	if err != nil {
		return nil, nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: os.Stderr, JSONFormat: true})
	}
	pluginLogger.Store(&logger)
	return &plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: set},
		GRPCServer: func(o []grpc.ServerOption) *grpc.Server {
			o = append(o, grpcServerOptions()...)
			return grpc.NewServer(append(o, telemetry.GRPCServerOptions()...)...)
		},
		Logger: logger,
	}, impl, nil
}

// exitWithHost ends the plugin when its host process dies (the plugin is
// re-parented), and drains it on SIGTERM, so that no plugin outlives its
// broker and a signal to the whole process group (as systemd and a
// terminal's Ctrl-\ send it) stops the node as a SIGTERM of the host alone
// does.
//
// On SIGTERM the plugin does not close at once: the host (signalled too,
// in a process group) stops the node in its order, draining the transport
// and answering what it accepted, and then stops its plugins. So the
// plugin keeps serving the host; a transport plugin begins its drain at
// once (as on the host's Drain frame: it takes no new requests and answers
// those in flight, see transportServer.Connect). The plugin closes and
// exits when the host stops it (go-plugin's shutdown ends Serve), when the
// host dies, or termGrace after the signal if neither came (only the
// plugin was signalled).
//
// The host names itself in EnvHostPID: a host killed while the plugin was
// still starting has already handed it to init, so the parent the plugin
// first sees is not its host.
func exitWithHost(log hclog.Logger, closeImpl func()) {
	parent := os.Getppid()
	if pid, err := strconv.Atoi(os.Getenv(EnvHostPID)); err == nil && pid > 0 {
		parent = pid
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var grace <-chan time.Time
	for {
		select {
		case <-term:
			if grace == nil {
				log.Info("SIGTERM: draining; closing when the host stops this plugin", "at_most_in", termGrace)
				terminateOnce.Do(func() { close(terminated) })
				grace = time.After(termGrace)
			}
		case <-grace:
			log.Warn("SIGTERM: the host did not stop this plugin; closing", "after", termGrace)
			closeImpl()
			os.Exit(0)
		case <-tick.C:
			if os.Getppid() != parent {
				log.Warn("host process died: closing", "host_pid", parent)
				closeImpl()
				os.Exit(0)
			}
		}
	}
}

// termGrace bounds how long a plugin that got SIGTERM waits for its host to
// stop it (exitWithHost): the host's drain (DefaultTransportDrain) and more.
const termGrace = DefaultTransportDrain + 30*time.Second

// terminated is closed when the plugin process gets SIGTERM.
var (
	terminated    = make(chan struct{})
	terminateOnce sync.Once
)

// EnvHostPID is set by the plugin host to its process id, so that a plugin
// knows its host even when the host died before the plugin looked.
const EnvHostPID = "FERRY_HOST_PID"

// EnvCPUProfile names an environment variable: when set, a plugin writes a
// CPU profile of its whole life to "$FERRY_PLUGIN_CPUPROFILE.<pid>", for
// finding where time goes on the plugin's side of the boundary.
const EnvCPUProfile = "FERRY_PLUGIN_CPUPROFILE"

// EnvMemProfile names an environment variable: when set, a plugin writes its
// heap profile (what it allocated over its life, and what is live) to
// "$FERRY_PLUGIN_MEMPROFILE.<pid>" when it stops.
const EnvMemProfile = "FERRY_PLUGIN_MEMPROFILE"

func startProfile(log hclog.Logger) func() {
	stopCPU := startCPUProfile(log)
	return func() {
		stopCPU()
		if path := os.Getenv(EnvMemProfile); path != "" {
			if err := writeHeapProfile(fmt.Sprintf("%s.%d", path, os.Getpid())); err != nil {
				log.Error("memory profile", "error", err)
			}
		}
	}
}

// writeHeapProfile writes the heap profile, after a GC, to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func startCPUProfile(log hclog.Logger) func() {
	path := os.Getenv(EnvCPUProfile)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err != nil {
		log.Error("cpu profile", "error", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Error("cpu profile", "error", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// PluginSets are the plugin sets a host offers go-plugin, by protocol version.
func PluginSets() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{ProtocolVersion: {
		KindStorage:     &grpcPlugin{kind: KindStorage},
		KindTransport:   &grpcPlugin{kind: KindTransport},
		KindReplication: &grpcPlugin{kind: KindReplication},
		KindStage:       &grpcPlugin{kind: KindStage},
	}}
}

// grpcPlugin is go-plugin's view of one plugin kind: it registers the gRPC
// services on the plugin side and builds the client on the host side.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	kind    string
	impl    Plugin // plugin side only
	ringFDs []int  // plugin side: ServeOpts.RingFDs
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	ps := &pluginServer{impl: p.impl, ringFDs: p.ringFDs}
	ferryv1.RegisterPluginServer(s, ps)
	switch p.kind {
	case KindStorage:
		ss := &storageServer{impl: p.impl.(Storage)}
		ps.dataPlane = func(c *ring.Conn) { go serveStorageRing(ss, c) }
		ferryv1.RegisterStorageServer(s, ss)
	case KindTransport:
		ts := &transportServer{impl: p.impl.(Transport)}
		ps.dataPlane = ts.useRing
		ferryv1.RegisterTransportServer(s, ts)
	case KindReplication:
		rs := &replicationServer{impl: p.impl.(Replication)}
		ps.dataPlane = rs.useRing
		ferryv1.RegisterReplicationServer(s, rs)
	case KindStage:
		ferryv1.RegisterStageServer(s, &stageServer{impl: p.impl.(Stage)})
	}
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	switch p.kind {
	case KindStorage:
		return NewStorageClient(cc), nil
	case KindTransport:
		return NewTransportClient(cc), nil
	case KindReplication:
		return NewReplicationClient(cc), nil
	case KindStage:
		return NewStageClient(cc), nil
	}
	return nil, fmt.Errorf("unknown plugin kind %q", p.kind)
}

// DefaultGOGC is the GC percent of Ferry's own processes (a node's core under
// `ferry run`, and its Go plugins) when GOGC is not set. Each of a node's
// processes has a small live heap (tens of MiB) and allocates at hundreds of
// MiB/s under load (frames copied out of the rings, decoded messages), so at
// Go's default of 100 it collects many times a second. Measured on 2 cores
// (`ferry run`, file store, async produce 256 in flight from a separate
// `ferry bench`, 2 interleaved pairs): CPU per message of the three
// processes 9.4-9.7 µs at 100, 7.7-7.9 µs at 200, +15% msgs/s; RSS core
// 41 -> 44 MiB, storage 71-76 -> 93-94 MiB, transport 33 -> 38 MiB.
const DefaultGOGC = 200

// SetGCDefault sets the process's GC percent to DefaultGOGC unless the
// GOGC environment variable chooses one.
func SetGCDefault() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGOGC)
	}
}

// setProcs gives a plugin process one P on a machine of two cores or fewer,
// unless GOMAXPROCS is set. A broker node is three Go processes (the core
// and two plugins) handing each request to one another; with every process
// sized to every core, idle threads spin and wake for work that comes from
// another process. Measured on 2 cores with ferry bench (CPU of all three
// processes per message): async produce -18%, 16 sync producers with fsync
// -15%, consume -7%, one sync producer -5%, rates equal or better. Larger
// machines keep Go's default (not measured).
func setProcs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.NumCPU() <= 2 {
		runtime.GOMAXPROCS(1)
	}
}

// SetCoreProcs gives a node's core one P on a machine of two cores or
// fewer, unless GOMAXPROCS is set, when the core only routes: its storage
// and transport run in their own processes and no producer or consumer of
// the pipeline runs in it (the caller decides that). Each request then
// hands its goroutines to one another on the same thread instead of waking
// a second one. Measured on 2 cores (scripts/boundary-cpu.sh, `ferry run`
// driven from a separate `ferry bench`, interleaved): the core's sleeps per
// message 5.6 -> 1.0 with one sync producer; its CPU per message -10 to
// -25% with one or 16 sync producers and with async produce, consume
// unchanged; rates equal or better. Returns whether it did.
func SetCoreProcs() bool {
	if os.Getenv("GOMAXPROCS") == "" && runtime.NumCPU() <= 2 {
		runtime.GOMAXPROCS(1)
		return true
	}
	return false
}
