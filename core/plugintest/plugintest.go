// Package plugintest runs the conformance cases of core/sdk/sdktest against a
// plugin executable, in any language, started and configured by the real
// plugin host (core/pluginhost) exactly as `ferry run` starts it: `ferry
// plugin test` calls Storage, Transport and Replication.
package plugintest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/internal/freeport"
)

// Target names the plugin under test.
type Target struct {
	// Registry has the built-in plugins; Exe is the ferry binary that
	// serves them (default: this process's executable).
	Registry *pluginhost.Registry
	Exe      string
	// Type is a built-in type or an external one found in Dirs.
	Type string
	Dirs []string
	// Logger receives the host's and the plugin's log lines.
	Logger hclog.Logger
}

// ForExecutable returns the plugin directory and type under which the host
// finds the executable at path as a kind plugin: a new directory under tmp
// holding a link ferry-<kind>-test to it.
func ForExecutable(kind, path, tmp string) (dir, typ string, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", "", fmt.Errorf("plugin executable: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return "", "", fmt.Errorf("plugin executable %s: not an executable file", path)
	}
	dir, err = os.MkdirTemp(tmp, "ferry-plugin-test")
	if err != nil {
		return "", "", err
	}
	typ = "test"
	if err := os.Symlink(abs, filepath.Join(dir, pluginhost.ExecutableName(kind, typ))); err != nil {
		return "", "", err
	}
	return dir, typ, nil
}

// Storage runs the storage cases selected by filter (sdktest.Selected)
// against t with features f, calling report after each case, and returns
// the results. Every case gets a new data directory under tmp and a new
// plugin host; a store the case opens is a plugin process configured by it.
func Storage(ctx context.Context, t Target, f sdktest.StorageFeatures, filter, tmp string, report func(sdktest.Result)) []sdktest.Result {
	var out []sdktest.Result
	for _, c := range sdktest.StorageCases() {
		if !sdktest.Selected(c.Name, filter) {
			continue
		}
		h := &hostHarness{ctx: ctx, t: t, f: f, tmp: tmp}
		err := h.init()
		if err == nil {
			err = sdktest.RunStorageCase(c, h)
		}
		h.close()
		r := sdktest.Result{Name: c.Name, Err: err}
		out = append(out, r)
		if report != nil {
			report(r)
		}
	}
	return out
}

// hostHarness is a sdktest.StorageHarness whose stores are plugin processes
// of one plugin host.
type hostHarness struct {
	ctx   context.Context
	t     Target
	f     sdktest.StorageFeatures
	tmp   string
	dir   string
	hosts []*pluginhost.Host
	host  *pluginhost.Host
}

func (h *hostHarness) init() error {
	dir, err := os.MkdirTemp(h.tmp, "case")
	if err != nil {
		return err
	}
	h.dir = dir
	host, err := pluginhost.New(h.t.Registry, pluginhost.Options{
		Dirs:   h.t.Dirs,
		Exe:    h.t.Exe,
		Env:    &sdk.Environment{Pipeline: "plugintest", Node: "plugintest", DataDir: dir},
		Logger: h.t.Logger,
	})
	if err != nil {
		return err
	}
	h.host = host
	h.hosts = append(h.hosts, host)
	return nil
}

// close stops every plugin of the case, newest host first.
func (h *hostHarness) close() {
	for i := len(h.hosts) - 1; i >= 0; i-- {
		h.hosts[i].Close()
	}
}

func (h *hostHarness) Features() sdktest.StorageFeatures { return h.f }
func (h *hostHarness) Dir() string                       { return h.dir }

func (h *hostHarness) Fresh() (sdktest.StorageHarness, error) {
	n := &hostHarness{ctx: h.ctx, t: h.t, f: h.f, tmp: h.tmp}
	if err := n.init(); err != nil {
		return nil, err
	}
	// The case's harness closes the fresh one's host with its own.
	h.hosts = append(h.hosts, n.host)
	return n, nil
}

func (h *hostHarness) Open(config []byte) (*sdktest.Store, error) {
	inst, err := h.host.Start(h.ctx, sdk.KindStorage, h.t.Type, config)
	if err != nil {
		return nil, err
	}
	impl, _, _ := inst.Current()
	s, ok := impl.(sdk.Storage)
	if !ok {
		inst.Stop()
		return nil, fmt.Errorf("storage plugin %q: the host's client is %T, not a storage", h.t.Type, impl)
	}
	return sdktest.NewStore(s, func() error { inst.Stop(); return nil }), nil
}

func (h *hostHarness) Raw() (*sdktest.Store, error) {
	return nil, sdktest.Skip("the plugin host configures every plugin it starts (this case runs from Go tests, sdktest.TestStorage)")
}

func (h *hostHarness) Validate(config []byte) (sdk.Problems, error) {
	return h.host.Validate(h.ctx, sdk.KindStorage, h.t.Type, config)
}

// DataPlanes are the data planes the transport and replication suites run
// every case on, as `ferry run` would use them: the shared-memory rings (a
// plugin that ignores the offer stays on gRPC) and gRPC only.
var DataPlanes = []string{pluginhost.DataPlaneRing, pluginhost.DataPlaneGRPC}

// Transport runs the transport cases selected by filter against t with
// features f, once on each of DataPlanes; a result's name is
// "<data plane>/<case>". Every case gets a new plugin host and a new plugin
// process, configured by the host and serving the suite's test core through
// the host's client, as the broker's core would be served.
func Transport(ctx context.Context, t Target, f sdktest.TransportFeatures, filter, tmp string, report func(sdktest.Result)) []sdktest.Result {
	var out []sdktest.Result
	for _, dp := range DataPlanes {
		for _, c := range sdktest.TransportCases() {
			if !sdktest.Selected(c.Name, filter) && !sdktest.Selected(dp+"/"+c.Name, filter) {
				continue
			}
			h := &transportHarness{hostHarness: hostHarness{ctx: ctx, t: t, tmp: tmp}, f: f, dataPlane: dp}
			err := h.init()
			if err == nil {
				err = sdktest.RunTransportCase(c, h)
			}
			h.close()
			r := sdktest.Result{Name: dp + "/" + c.Name, Err: err}
			out = append(out, r)
			if report != nil {
				report(r)
			}
		}
	}
	return out
}

// transportHarness is a sdktest.TransportHarness whose transports are plugin
// processes of one plugin host.
type transportHarness struct {
	hostHarness
	f         sdktest.TransportFeatures
	dataPlane string
}

func (h *transportHarness) init() error {
	dir, err := os.MkdirTemp(h.tmp, "case")
	if err != nil {
		return err
	}
	h.dir = dir
	host, err := pluginhost.New(h.t.Registry, pluginhost.Options{
		Dirs:      h.t.Dirs,
		Exe:       h.t.Exe,
		Env:       &sdk.Environment{Pipeline: "plugintest", Node: "plugintest", DataDir: dir},
		Logger:    h.t.Logger,
		DataPlane: h.dataPlane,
	})
	if err != nil {
		return err
	}
	h.host = host
	h.hosts = append(h.hosts, host)
	return nil
}

func (h *transportHarness) Features() sdktest.TransportFeatures { return h.f }

func (h *transportHarness) Validate(config []byte) (sdk.Problems, error) {
	return h.host.Validate(h.ctx, sdk.KindTransport, h.t.Type, config)
}

func (h *transportHarness) Start(config []byte, core sdk.Core) (*sdktest.ServedTransport, error) {
	inst, err := h.host.Start(h.ctx, sdk.KindTransport, h.t.Type, config)
	if err != nil {
		return nil, err
	}
	impl, _, _ := inst.Current()
	tr, ok := impl.(sdk.Transport)
	if !ok {
		inst.Stop()
		return nil, fmt.Errorf("transport plugin %q: the host's client is %T, not a transport", h.t.Type, impl)
	}
	if c, ok := tr.(*sdk.TransportClient); ok {
		// The suite bounds the drain itself; the host's cut comes after.
		c.DrainTimeout = 4 * max(h.f.Bound, sdktest.DefaultBound)
	}
	return sdktest.NewServedTransport(tr, core, inst.Stop), nil
}

// Replication runs the replication cases selected by filter against t with
// features f, once on each of DataPlanes ("<data plane>/<case>"). Each node
// of a case is a plugin process of a plugin host of its own, on a data
// directory of its own (kept when the node is started again), serving its
// test core through the host's client as the broker's core would be served.
func Replication(ctx context.Context, t Target, f sdktest.ReplicationFeatures, filter, tmp string, report func(sdktest.Result)) []sdktest.Result {
	var out []sdktest.Result
	for _, dp := range DataPlanes {
		for _, c := range sdktest.ReplicationCases() {
			if !sdktest.Selected(c.Name, filter) && !sdktest.Selected(dp+"/"+c.Name, filter) {
				continue
			}
			h := &replicationHarness{ctx: ctx, t: t, f: f}
			err := h.init(tmp, dp, c.NodeCount())
			if err == nil {
				err = sdktest.RunReplicationCase(c, h)
			}
			h.close()
			r := sdktest.Result{Name: dp + "/" + c.Name, Err: err}
			out = append(out, r)
			if report != nil {
				report(r)
			}
		}
	}
	return out
}

// replicationHarness is a sdktest.ReplicationHarness whose nodes are plugin
// processes, one plugin host per node.
type replicationHarness struct {
	ctx   context.Context
	t     Target
	f     sdktest.ReplicationFeatures
	addrs []string
	hosts []*pluginhost.Host
}

func (h *replicationHarness) init(tmp, dataPlane string, nodes int) error {
	for i := range nodes {
		dir, err := os.MkdirTemp(tmp, fmt.Sprintf("node%d-", i))
		if err != nil {
			return err
		}
		host, err := pluginhost.New(h.t.Registry, pluginhost.Options{
			Dirs:      h.t.Dirs,
			Exe:       h.t.Exe,
			Env:       &sdk.Environment{Pipeline: "plugintest", Node: fmt.Sprint("node-", i), DataDir: dir},
			Logger:    h.t.Logger,
			DataPlane: dataPlane,
		})
		if err != nil {
			return err
		}
		h.hosts = append(h.hosts, host)
	}
	var err error
	h.addrs, err = freeport.Addrs(nodes)
	return err
}

func (h *replicationHarness) close() {
	for i := len(h.hosts) - 1; i >= 0; i-- {
		h.hosts[i].Close()
	}
}

func (h *replicationHarness) Features() sdktest.ReplicationFeatures { return h.f }
func (h *replicationHarness) Addrs() []string                       { return h.addrs }

func (h *replicationHarness) Validate(config []byte) (sdk.Problems, error) {
	return h.hosts[0].Validate(h.ctx, sdk.KindReplication, h.t.Type, config)
}

func (h *replicationHarness) Start(i int, config []byte, core sdk.ReplicaCore) (*sdktest.ServedReplication, error) {
	inst, err := h.hosts[i].Start(h.ctx, sdk.KindReplication, h.t.Type, config)
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", i, err)
	}
	impl, _, _ := inst.Current()
	r, ok := impl.(sdk.Replication)
	if !ok {
		inst.Stop()
		return nil, fmt.Errorf("replication plugin %q: the host's client is %T, not a replication", h.t.Type, impl)
	}
	return sdktest.NewServedReplication(r, core, inst.Stop), nil
}

// Stage runs the stage cases selected by filter against t with features f.
// Every case gets a new plugin host; each stage it opens is a plugin process
// configured by the host, called through the host's client.
func Stage(ctx context.Context, t Target, f sdktest.StageFeatures, filter, tmp string, report func(sdktest.Result)) []sdktest.Result {
	var out []sdktest.Result
	for _, c := range sdktest.StageCases() {
		if !sdktest.Selected(c.Name, filter) {
			continue
		}
		h := &stageHarness{hostHarness: hostHarness{ctx: ctx, t: t, tmp: tmp}, f: f}
		err := h.init()
		if err == nil {
			err = sdktest.RunStageCase(c, h)
		}
		h.close()
		r := sdktest.Result{Name: c.Name, Err: err}
		out = append(out, r)
		if report != nil {
			report(r)
		}
	}
	return out
}

// stageHarness is a sdktest.StageHarness whose stages are plugin processes
// of one plugin host.
type stageHarness struct {
	hostHarness
	f sdktest.StageFeatures
}

func (h *stageHarness) Features() sdktest.StageFeatures { return h.f }

func (h *stageHarness) Open(config []byte) (sdk.Stage, func(), error) {
	inst, err := h.host.Start(h.ctx, sdk.KindStage, h.t.Type, config)
	if err != nil {
		return nil, nil, err
	}
	impl, _, _ := inst.Current()
	st, ok := impl.(sdk.Stage)
	if !ok {
		inst.Stop()
		return nil, nil, fmt.Errorf("stage plugin %q: the host's client is %T, not a stage", h.t.Type, impl)
	}
	return st, inst.Stop, nil
}

func (h *stageHarness) Validate(config []byte) (sdk.Problems, error) {
	return h.host.Validate(h.ctx, sdk.KindStage, h.t.Type, config)
}
