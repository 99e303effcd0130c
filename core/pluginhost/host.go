package pluginhost

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/sdk"
)

// Modes of running built-in plugins.
const (
	ModeSubprocess = "subprocess"
	ModeInProcess  = "inprocess"
)

// Restart backoff: the first restart is quick so that a killed plugin serves
// again well within a second; repeated crashes back off.
const (
	restartMin     = 50 * time.Millisecond
	restartMax     = 5 * time.Second
	healthyAfter   = 10 * time.Second // a process alive this long resets the backoff
	exitPoll       = 20 * time.Millisecond
	startTimeout   = 30 * time.Second
	configureLimit = 30 * time.Second
)

// Options configure a Host.
type Options struct {
	// Mode is ModeSubprocess (default) or ModeInProcess.
	Mode string
	// Dirs are searched for external plugins.
	Dirs []string
	// Exe is the ferry binary re-executed for built-in plugins; default
	// os.Executable().
	Exe string
	// Env is passed to every plugin's Configure.
	Env *sdk.Environment
	// Logger receives the host's and the plugins' log lines.
	Logger hclog.Logger
	// PluginEnv, when set, adds environment entries ("KEY=value") to the
	// process of plugin kind/typ: tracing settings, say.
	PluginEnv func(kind, typ string) []string
	// DialOptions are added to the host's gRPC dial options to each plugin
	// (stats handlers, say).
	DialOptions []grpc.DialOption
	// Restarted, when set, is called once a restarted plugin process is
	// configured, before Next and Current show its new generation.
	Restarted func(kind, typ string)
	// DataPlane is DataPlaneRing (default: storage, transport and replication plugins
	// in their own processes are offered shared-memory rings for their hot
	// calls) or DataPlaneGRPC (everything over gRPC).
	DataPlane string
	// RingSize is the size of each ring of a data plane segment; default
	// ring.DefaultRingSize.
	RingSize int
}

// EnvRingSize, when set, is Options.RingSize's default (bytes, a power of
// two); for tests and measurements.
const EnvRingSize = "FERRY_RING_SIZE"

// Data planes between the host and its plugin processes.
const (
	DataPlaneRing = "ring"
	DataPlaneGRPC = "grpc"
)

// Host launches plugins and keeps them running.
type Host struct {
	reg     *Registry
	opts    Options
	log     hclog.Logger
	sockDir string // per-host directory for plugins' unix sockets

	mu        sync.Mutex
	instances []*Instance
}

// New returns a host. It removes socket directories left by earlier hosts that
// died without cleaning up.
func New(reg *Registry, opts Options) (*Host, error) {
	if opts.Mode == "" {
		opts.Mode = ModeSubprocess
	}
	if opts.Mode != ModeSubprocess && opts.Mode != ModeInProcess {
		return nil, fmt.Errorf("plugin mode %q: must be %s or %s", opts.Mode, ModeSubprocess, ModeInProcess)
	}
	if opts.DataPlane == "" {
		opts.DataPlane = DataPlaneRing
	}
	if opts.DataPlane != DataPlaneRing && opts.DataPlane != DataPlaneGRPC {
		return nil, fmt.Errorf("plugin data plane %q: must be %s or %s", opts.DataPlane, DataPlaneRing, DataPlaneGRPC)
	}
	if opts.RingSize == 0 {
		opts.RingSize = ring.DefaultRingSize
		if n, err := strconv.Atoi(os.Getenv(EnvRingSize)); err == nil {
			opts.RingSize = n
		}
	}
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "ferry", Output: os.Stderr})
	}
	if opts.Env == nil {
		opts.Env = &sdk.Environment{}
	}
	if opts.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the ferry binary to run built-in plugins: %w", err)
		}
		opts.Exe = exe
	}
	h := &Host{reg: reg, opts: opts, log: opts.Logger}
	if opts.Mode == ModeSubprocess {
		removeStaleSocketDirs(h.log)
		dir := filepath.Join(os.TempDir(), "ferry-"+strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("plugin socket directory: %w", err)
		}
		h.sockDir = dir
	}
	return h, nil
}

// removeStaleSocketDirs deletes $TMPDIR/ferry-<pid> directories of hosts that
// are no longer running (killed with SIGKILL, say).
func removeStaleSocketDirs(log hclog.Logger) {
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		pidStr, ok := strings.CutPrefix(e.Name(), "ferry-")
		if !ok || !e.IsDir() {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		if os.RemoveAll(filepath.Join(os.TempDir(), e.Name())) == nil {
			log.Debug("removed stale plugin socket directory", "dir", e.Name())
		}
	}
}

// Start launches kind/typ, configures it with configJSON and supervises it.
func (h *Host) Start(ctx context.Context, kind, typ string, configJSON []byte) (*Instance, error) {
	inst := &Instance{host: h, kind: kind, typ: typ, config: configJSON, changed: make(chan struct{}),
		log: h.log.Named("plugin").Named(kind + "/" + typ)}
	if err := inst.launch(ctx, false); err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.instances = append(h.instances, inst)
	h.mu.Unlock()
	if inst.client != nil {
		go inst.supervise()
	}
	return inst, nil
}

// Validate asks kind/typ to check configJSON, starting the plugin when it
// runs in its own process. Problem paths are relative to the section.
func (h *Host) Validate(ctx context.Context, kind, typ string, configJSON []byte) (sdk.Problems, error) {
	p, client, _, err := h.open(ctx, kind, typ, 0)
	if err != nil {
		return nil, err
	}
	if client != nil {
		defer h.kill(client)
	} else {
		defer p.Close()
	}
	return p.Validate(configJSON), nil
}

// Close stops every plugin, newest first (the transport before the storage
// it feeds), and removes the socket directory.
func (h *Host) Close() {
	h.mu.Lock()
	insts := h.instances
	h.instances = nil
	h.mu.Unlock()
	for i := len(insts) - 1; i >= 0; i-- {
		insts[i].Stop()
	}
	if h.sockDir != "" {
		_ = os.RemoveAll(h.sockDir)
	}
}

// open starts one process (or in-process instance) of kind/typ, unconfigured.
// A process of a generation (gen > 0) whose kind has a data plane inherits a
// fresh ring segment; it is returned for the client to offer at Configure.
func (h *Host) open(ctx context.Context, kind, typ string, gen uint64) (sdk.Plugin, *plugin.Client, *ring.Segment, error) {
	builtin := h.reg.Builtin(kind, typ)
	if builtin != nil && h.opts.Mode == ModeInProcess {
		return builtin(), nil, nil, nil
	}
	var cmd *exec.Cmd
	switch {
	case builtin != nil:
		cmd = exec.Command(h.opts.Exe, "plugin", "serve", kind+"/"+typ)
	default:
		path := External(kind, typ, h.opts.Dirs)
		if !ValidType(typ) {
			return nil, nil, nil, fmt.Errorf("%s plugin type %q is not a type name (lowercase letters, digits and '_'): refused", kind, typ)
		}
		if path == "" {
			return nil, nil, nil, fmt.Errorf("no %s plugin of type %q: not built in (built in: %s) and no executable %s in the plugin directories %v",
				kind, typ, strings.Join(h.reg.Types(kind, nil), ", "), ExecutableName(kind, typ), h.opts.Dirs)
		}
		cmd = exec.Command(path)
	}
	cmd.Env = append(os.Environ(), sdk.EnvHostPID+"="+strconv.Itoa(os.Getpid()))
	if g, ok := quietSysmon(os.Getenv("GODEBUG")); ok {
		cmd.Env = append(cmd.Env, "GODEBUG="+g)
	}
	name := kind + "/" + typ
	log := h.log.Named("plugin").Named(name)
	sock := ""
	if h.sockDir != "" {
		sock = filepath.Join(h.sockDir, fmt.Sprintf("%s-%s-%d", kind, typ, gen))
		if err := os.MkdirAll(sock, 0o700); err != nil {
			return nil, nil, nil, fmt.Errorf("plugin socket directory: %w", err)
		}
		cmd.Env = append(cmd.Env, plugin.EnvUnixSocketDir+"="+sock)
	}
	var seg *ring.Segment
	if gen > 0 && h.opts.DataPlane == DataPlaneRing && (kind == sdk.KindStorage || kind == sdk.KindTransport || kind == sdk.KindReplication) {
		var err error
		if seg, err = ring.Create(h.opts.RingSize); err != nil {
			h.log.Warn("plugin data plane: staying on gRPC", "plugin", kind+"/"+typ, "error", err)
		} else {
			cmd.ExtraFiles = seg.Files() // fds 3, 4, 5 in the plugin
			cmd.Env = append(cmd.Env, sdk.EnvRingFD+"=3,4,5")
		}
	}
	fail := func(err error) (sdk.Plugin, *plugin.Client, *ring.Segment, error) {
		if seg != nil {
			_ = seg.Close()
		}
		return nil, nil, nil, err
	}
	if h.opts.PluginEnv != nil {
		cmd.Env = append(cmd.Env, h.opts.PluginEnv(kind, typ)...)
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.PluginSets(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		GRPCDialOptions:  append(sdk.GRPCDialOptions(), h.opts.DialOptions...),
		Logger:           log,
		SyncStdout:       lineLogger(log, "stdout"),
		SyncStderr:       lineLogger(log, "stderr"),
		StartTimeout:     startTimeout,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		_ = os.RemoveAll(sock)
		return fail(fmt.Errorf("start %s plugin %q: %w", kind, typ, err))
	}
	raw, err := rpc.Dispense(kind)
	if err != nil {
		client.Kill()
		_ = os.RemoveAll(sock)
		return fail(fmt.Errorf("%s plugin %q does not serve kind %s: %w", kind, typ, kind, err))
	}
	p, ok := raw.(sdk.Plugin)
	if !ok {
		client.Kill()
		return fail(fmt.Errorf("%s plugin %q: unexpected client %T", kind, typ, raw))
	}
	if _, ok := p.(sdk.RingUser); seg != nil && !ok {
		_ = seg.Close()
		seg = nil
	}
	return p, client, seg, nil
}

func (h *Host) kill(c *plugin.Client) {
	c.Kill()
}

// lineLogger turns a plugin's stdout or stderr into log lines tagged with the
// plugin's name.
func lineLogger(log hclog.Logger, stream string) io.Writer {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			log.Info(sc.Text(), "stream", stream)
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	return w
}

// quietSysmon returns the GODEBUG a Go plugin process starts with, given the
// host's, and whether to set it: the host's plus schedtrace at its largest
// period (24.8 days), unless the host's names schedtrace itself.
//
// A plugin process goes idle between the frames of a request/answer chain
// (one sync producer: every few hundred microseconds). Each time all its Ps
// are idle, Go's sysmon thread parks in a deep sleep, and the next system
// call wakes it again (entersyscall), after which it polls every 20 µs until
// the process is idle once more: two to four extra thread wake-ups per
// process per message, on a machine where a wake-up costs tens of µs. With
// schedtrace set, sysmon never takes the deep sleep (proc.go: "sysmon should
// not enter deep sleep if schedtrace is enabled"); with nothing to do it
// backs off to one wake-up every 10 ms instead. The period is so long that
// the trace it enables prints nothing on a machine up less than 24.8 days,
// and one line at start then one per 24.8 days on one up longer (to the
// plugin's stderr, which the host logs at debug level).
// Measured in docs/performance.md ("sysmon").
func quietSysmon(godebug string) (string, bool) {
	for _, kv := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "schedtrace=") {
			return "", false
		}
	}
	if godebug == "" {
		return "schedtrace=2147483647", true
	}
	return godebug + ",schedtrace=2147483647", true
}
