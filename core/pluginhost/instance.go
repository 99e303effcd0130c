package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferrymq/ferry/core/sdk"
)

// Instance is one supervised plugin. Its process may die and be replaced;
// each process is a generation. Current gives the live generation.
type Instance struct {
	host   *Host
	kind   string
	typ    string
	config []byte
	log    hclog.Logger

	mu       sync.Mutex
	impl     sdk.Plugin
	client   *plugin.Client // nil in-process
	gen      uint64
	pid      int
	changed  chan struct{} // closed when gen changes or the instance stops
	stopped  bool
	restarts int
	ringSize int    // bytes of each ring of the live generation's segment; 0 without one
	failing  uint64 // generation reported broken by a user, to be replaced
	kick     chan struct{}
}

// ErrStopped is returned by Wait when the instance was stopped.
var ErrStopped = errors.New("plugin stopped")

// Kind and Type name the plugin.
func (i *Instance) Kind() string { return i.kind }
func (i *Instance) Type() string { return i.typ }

// Current returns the live plugin, its generation and a channel closed when
// the generation changes (the process died and another replaces it) or the
// instance stops.
func (i *Instance) Current() (sdk.Plugin, uint64, <-chan struct{}) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.impl, i.gen, i.changed
}

// Pid is the live plugin process's id, 0 in-process.
func (i *Instance) Pid() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.pid
}

// Restarts counts how often the plugin was restarted.
func (i *Instance) Restarts() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.restarts
}

// Next waits until a generation newer than gen is live and returns it.
func (i *Instance) Next(ctx context.Context, gen uint64) (sdk.Plugin, uint64, error) {
	for {
		impl, g, changed := i.Current()
		i.mu.Lock()
		stopped := i.stopped
		i.mu.Unlock()
		if stopped {
			return nil, 0, ErrStopped
		}
		if g > gen && impl != nil {
			return impl, g, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("waiting for %s plugin %q to restart: %w", i.kind, i.typ, ctx.Err())
		}
	}
}

// Broken tells the supervisor that generation gen no longer works (a stream
// to it broke) although its process may still run: it is killed and replaced.
func (i *Instance) Broken(gen uint64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if gen == i.gen && i.client != nil && i.failing < gen {
		i.failing = gen
		select {
		case i.kick <- struct{}{}:
		default:
		}
	}
}

// launch starts and configures a new generation. A restart is counted as
// the new generation is published, so that whoever sees it also sees the
// count.
func (i *Instance) launch(ctx context.Context, restart bool) error {
	i.mu.Lock()
	gen := i.gen + 1
	i.mu.Unlock()
	impl, client, seg, err := i.host.open(ctx, i.kind, i.typ, gen)
	if err != nil {
		return err
	}
	if seg != nil {
		impl.(sdk.RingUser).UseRing(seg, func(err error) {
			i.log.Error("plugin broke the data plane protocol; replacing it", "generation", gen, "error", err)
			i.Broken(gen)
		})
	}
	cctx, cancel := context.WithTimeout(ctx, configureLimit)
	defer cancel()
	if err := impl.Configure(cctx, i.config, i.host.opts.Env); err != nil {
		if client != nil {
			client.Kill()
		}
		return fmt.Errorf("configure %s plugin %q: %w", i.kind, i.typ, err)
	}
	pid := 0
	if client != nil {
		if rc := client.ReattachConfig(); rc != nil {
			pid = rc.Pid
		}
	}
	if restart {
		// Counted before waiters on changed wake, so whoever sees the
		// new generation also sees the restart counted.
		if f := i.host.opts.Restarted; f != nil {
			f(i.kind, i.typ)
		}
	}
	i.mu.Lock()
	i.impl, i.client, i.gen, i.pid = impl, client, gen, pid
	i.ringSize = 0
	if seg != nil {
		i.ringSize = seg.RingSize()
	}
	if restart {
		i.restarts++
	}
	if i.kick == nil {
		i.kick = make(chan struct{}, 1)
	}
	close(i.changed)
	i.changed = make(chan struct{})
	i.mu.Unlock()
	if client != nil {
		dp := ""
		if d, ok := impl.(interface{ DataPlane() string }); ok {
			dp = d.DataPlane()
		}
		if dp == sdk.DataPlaneRing {
			i.log.Info("plugin started", "pid", pid, "generation", gen, "data_plane", dp, "ring_kib", i.ringSize>>10)
		} else {
			i.log.Info("plugin started", "pid", pid, "generation", gen, "data_plane", dp)
		}
	}
	return nil
}

// supervise restarts the plugin whenever its process exits or a user reports
// it broken, until Stop.
func (i *Instance) supervise() {
	backoff := restartMin
	tick := time.NewTicker(exitPoll)
	defer tick.Stop()
	for {
		i.mu.Lock()
		client, gen, pid, started := i.client, i.gen, i.pid, time.Now()
		i.mu.Unlock()
		broken := false
	watch:
		for {
			select {
			case <-tick.C:
				if client.Exited() {
					break watch
				}
			case <-i.kick:
				// A report about an earlier generation (calls that failed
				// as it died) is stale: this one is not broken.
				i.mu.Lock()
				stale := i.failing != gen
				i.mu.Unlock()
				if stale {
					continue
				}
				broken = true
				break watch
			}
			i.mu.Lock()
			stopped := i.stopped
			i.mu.Unlock()
			if stopped {
				return
			}
		}
		i.mu.Lock()
		if i.stopped {
			i.mu.Unlock()
			return
		}
		// Make the dead generation unusable at once.
		dead := i.impl
		i.impl = nil
		close(i.changed)
		i.changed = make(chan struct{})
		i.mu.Unlock()
		if broken && !client.Exited() {
			i.log.Error("plugin stopped answering; killing it", "pid", pid, "generation", gen)
		} else {
			i.log.Error("plugin process died", "pid", pid, "generation", gen)
		}
		client.Kill()
		if dead != nil {
			// Calls still waiting on it fail (outcome unknown) and its data
			// plane is released.
			_ = dead.Close()
		}
		_ = os.RemoveAll(filepath.Join(i.host.sockDir, fmt.Sprintf("%s-%s-%d", i.kind, i.typ, gen)))
		if time.Since(started) > healthyAfter {
			backoff = restartMin
		}
		for {
			time.Sleep(backoff)
			i.mu.Lock()
			stopped := i.stopped
			i.mu.Unlock()
			if stopped {
				return
			}
			err := i.launch(context.Background(), true)
			if err == nil {
				i.mu.Lock()
				n := i.restarts
				i.mu.Unlock()
				i.log.Warn("plugin restarted", "pid", i.Pid(), "restarts", n)
				break
			}
			i.log.Error("plugin restart failed", "error", err, "retry_in", backoff)
			backoff = min(backoff*2, restartMax)
		}
		backoff = min(backoff*2, restartMax)
	}
}

// Stop stops the plugin: in-process it is closed; a subprocess is asked to
// shut down (it closes itself) and killed if it does not.
func (i *Instance) Stop() {
	i.mu.Lock()
	if i.stopped {
		i.mu.Unlock()
		return
	}
	i.stopped = true
	impl, client, gen := i.impl, i.client, i.gen
	close(i.changed)
	i.changed = make(chan struct{})
	i.mu.Unlock()
	if impl != nil {
		_ = impl.Close() // host side: ends the streams
	}
	if client != nil {
		client.Kill()
		_ = os.RemoveAll(filepath.Join(i.host.sockDir, fmt.Sprintf("%s-%s-%d", i.kind, i.typ, gen)))
	}
}

// RingSize is the size in bytes of each ring the live generation was given
// (0 when it was given none); whether it took them, DataPlane tells.
func (i *Instance) RingSize() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.ringSize
}

// DataPlane names the data plane the live generation's hot calls use:
// sdk.DataPlaneRing, "grpc", or "" in-process (direct calls) and while the
// plugin is being replaced.
func (i *Instance) DataPlane() string {
	impl, _, _ := i.Current()
	if d, ok := impl.(interface{ DataPlane() string }); ok && i.Pid() != 0 {
		return d.DataPlane()
	}
	return ""
}
