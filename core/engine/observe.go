package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrymq/ferry/core/admin"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
)

// lagInterval is how often the engine measures its flows' consumer lag and
// dead-letter depth for /metrics.
var lagInterval = 5 * time.Second

// observability is the node's tracing, metrics and admin listener.
type observability struct {
	metrics     *admin.Metrics
	stopTracing func(context.Context) error
	log         hclog.Logger
	admin       *admin.Server
	stopLag     context.CancelFunc
	lagDone     chan struct{}
}

// startTracing installs the node's tracer provider before anything traces.
func startTracing(ctx context.Context, cfg *config.Pipeline, log hclog.Logger) (*observability, error) {
	stop, err := telemetry.Setup(ctx, telemetry.Tracing(cfg.Tracing), telemetry.AttrPipeline.String(cfg.Name))
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	m := admin.NewMetrics(prometheus.Labels{"pipeline": cfg.Name, "node": cfg.Node.ID})
	for _, f := range cfg.Flows {
		m.AdmitGroups(f.Group) // before any client's groups take the label values
	}
	return &observability{metrics: m, stopTracing: stop, log: log}, nil
}

// pluginEnv passes the node's tracing settings to a plugin process.
func pluginEnv(cfg *config.Pipeline) func(kind, typ string) []string {
	return func(kind, typ string) []string {
		return telemetry.EnvFor(telemetry.Tracing(cfg.Tracing), kind+"/"+typ)
	}
}

// startAdmin serves /metrics, /healthz, /readyz and pprof when the pipeline
// names an admin listener, and starts measuring the flows' lag.
func (e *Engine) startAdmin(ctx context.Context) error {
	o := e.obs
	if addr := e.cfg.Admin.Listen; addr != "" {
		opts := admin.Options{Metrics: o.metrics, Ready: e.ready, Pprof: e.cfg.Admin.Pprof}
		if e.auth != nil {
			auth := e.auth
			opts.Authorize = func(r *http.Request, ep admin.Endpoint) error {
				return auth.AuthorizeAdmin(r, string(ep), ep == admin.EndpointPprof)
			}
			opts.Users = auth.UsersHandler()
			for _, ep := range e.cfg.Admin.Open {
				opts.Open = append(opts.Open, admin.Endpoint(ep))
			}
		}
		if e.cfg.Admin.TLS.Enabled() {
			conf, err := e.cfg.Admin.TLS.ServerConfig(e.log.With("listener", "admin"))
			if err != nil {
				return fmt.Errorf("admin listener: %w", err)
			}
			opts.TLS = conf
		}
		srv, err := admin.Serve(ctx, addr, opts)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		o.admin = srv
	}
	if len(e.cfg.Flows) > 0 {
		lctx, cancel := context.WithCancel(context.Background())
		o.stopLag, o.lagDone = cancel, make(chan struct{})
		go e.measureLag(lctx)
	}
	return nil
}

// ready is the node's readiness: every plugin process is up, and the
// storage takes appends (it is not full).
func (e *Engine) ready(context.Context) error {
	for _, inst := range []interface {
		Current() (sdk.Plugin, uint64, <-chan struct{})
	}{e.storage, e.transport} {
		if p, _, _ := inst.Current(); p == nil {
			return errors.New("a plugin is restarting")
		}
	}
	return e.broker.StorageFull()
}

// measureLag exports each flow group's consumer lag and dead-letter depth.
func (e *Engine) measureLag(ctx context.Context) {
	defer close(e.obs.lagDone)
	tick := time.NewTicker(lagInterval)
	defer tick.Stop()
	for {
		for _, f := range e.cfg.Flows {
			e.exportLag(ctx, f)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (e *Engine) exportLag(ctx context.Context, f config.Flow) {
	var queues []*ferryv1.QueueRef
	for _, t := range e.cfg.Topics {
		if t.Name == f.Topic {
			for q := 0; q < t.Queues; q++ {
				queues = append(queues, &ferryv1.QueueRef{Topic: t.Name, Queue: int32(q)})
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if resp, err := e.broker.GetOffsets(cctx, &sdk.GetOffsetsRequest{Group: f.Group, Queues: queues}); err == nil {
		var lag int64
		for _, o := range resp.Offsets {
			lag += o.End - max(o.Committed, o.Start)
		}
		e.obs.metrics.SetConsumerLag(f.Topic, f.Group, lag)
	}
	dlq := sdk.DLQTopic(f.Group)
	if resp, err := e.broker.GetOffsets(cctx, &sdk.GetOffsetsRequest{Group: dlq, Queues: []*ferryv1.QueueRef{{Topic: dlq}}}); err == nil && len(resp.Offsets) == 1 {
		o := resp.Offsets[0]
		e.obs.metrics.SetDLQDepth(f.Group, o.End-max(o.Committed, o.Start))
	}
}

// stop ends the lag measurements and the admin listener, and exports the
// last spans. Called after the plugins stopped.
func (o *observability) stop(ctx context.Context) {
	if o.stopLag != nil {
		o.stopLag()
		<-o.lagDone
	}
	if o.admin != nil {
		_ = o.admin.Close()
	}
	if err := o.stopTracing(ctx); err != nil {
		o.log.Warn("tracing: the last spans were not all exported", "error", err)
	}
}
