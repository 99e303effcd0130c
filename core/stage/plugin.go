package stage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
)

// A stage plugin is an external stage (any language) that runs as its own
// process under the plugin host: ferry-stage-TYPE in a plugin directory.
// A flow names it as
//
//	stages:
//	  - type: plugin
//	    config: {plugin: redact, config: {fields: [card]}}
//
// and for each delivery the plugin answers pass (possibly transformed),
// retry after a delay, dead-letter with a reason, or drop. A crashed plugin
// is restarted by the host; the messages it held fail with a retryable
// error, so they are delivered again and never acked. A plugin that answers
// for a delivery it was not given, twice, or not at all fails the delivery
// the same way and is logged; it is not killed for it.

// PluginStarter starts and supervises a stage plugin; pluginhost.Host.Start
// is one.
type PluginStarter func(ctx context.Context, kind, typ string, configJSON []byte) (*pluginhost.Instance, error)

var pluginHost struct {
	sync.RWMutex
	start PluginStarter
}

// SetPluginStarter gives the "plugin" stage type its plugin host (the
// node's, under ferry run). Without one a flow naming a stage plugin is a
// config error.
func SetPluginStarter(s PluginStarter) {
	pluginHost.Lock()
	pluginHost.start = s
	pluginHost.Unlock()
}

// PluginRetryDelay is how long a delivery waits before it is retried after
// its stage plugin crashed or broke the contract.
var PluginRetryDelay = time.Second

func init() { Register("plugin", newPluginStage) }

// checkers check a stage type's config without building the stage, for
// types whose factory starts something (a plugin process).
var checkers = map[string]func(map[string]any) sdk.Problems{"plugin": checkPluginStage}

type pluginStageConfig struct {
	Plugin string         `json:"plugin"`
	Config map[string]any `json:"config"`
}

func decodePluginStage(cfg map[string]any) (pluginStageConfig, sdk.Problems) {
	var c pluginStageConfig
	if ps := Decode(cfg, &c); ps != nil {
		return c, ps
	}
	if c.Plugin == "" {
		return c, sdk.Problems{{Path: "plugin", Message: "is required: the stage plugin's type (the executable ferry-stage-TYPE in plugins.dirs)"}}
	}
	if !pluginhost.ValidType(c.Plugin) {
		return c, sdk.Problems{{Path: "plugin", Message: fmt.Sprintf("%q is not a type name (lowercase letters, digits and '_')", c.Plugin)}}
	}
	return c, nil
}

func checkPluginStage(cfg map[string]any) sdk.Problems {
	_, ps := decodePluginStage(cfg)
	return ps
}

func newPluginStage(cfg map[string]any) (Stage, error) {
	c, ps := decodePluginStage(cfg)
	if ps != nil {
		return nil, ps
	}
	pluginHost.RLock()
	start := pluginHost.start
	pluginHost.RUnlock()
	if start == nil {
		return nil, fmt.Errorf("stage plugin %q: no plugin host to run it (stage plugins run under ferry run)", c.Plugin)
	}
	conf, err := json.Marshal(c.Config)
	if err != nil {
		return nil, sdk.Problems{{Path: "config", Message: err.Error()}}
	}
	inst, err := start(context.Background(), sdk.KindStage, c.Plugin, conf)
	if err != nil {
		return nil, err
	}
	return FromPlugin(inst), nil
}

// FromPlugin makes a stage of a running stage plugin. Each delivery is sent
// as a batch of one.
func FromPlugin(inst *pluginhost.Instance) Stage {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *client.Delivery) error {
			return processByPlugin(ctx, inst, d, next)
		}
	}
}

func processByPlugin(ctx context.Context, inst *pluginhost.Instance, d *client.Delivery, next Handler) error {
	impl, _, _ := inst.Current()
	st, ok := impl.(sdk.Stage)
	if !ok {
		return client.RetryAfter(PluginRetryDelay, fmt.Errorf("stage plugin %q is not running", inst.Type()))
	}
	req := &sdk.ProcessRequest{Deliveries: []*sdk.StageDelivery{{Id: 1, Message: d.Message, Attempt: int32(d.Attempt), Group: d.Group}}}
	resp, err := st.Process(ctx, req)
	if err != nil {
		// The process may have died: the host restarts it, and the message
		// comes again; it is not acked.
		return client.RetryAfter(PluginRetryDelay, fmt.Errorf("stage plugin %q: %w", inst.Type(), err))
	}
	verdicts, err := sdk.CheckVerdicts(req, resp)
	if err != nil {
		slog.Warn("stage plugin broke its contract; the delivery will come again", "plugin", inst.Type(), "message", d.ID, "error", err)
		return client.RetryAfter(PluginRetryDelay, fmt.Errorf("stage plugin %q: %w", inst.Type(), err))
	}
	return applyVerdict(ctx, verdicts[1], d, next)
}

func applyVerdict(ctx context.Context, v *sdk.Verdict, d *client.Delivery, next Handler) error {
	switch {
	case v.GetPass() != nil:
		if m := v.GetPass().GetMessage(); m != nil {
			// In place: the consumer reads d.Message (its offset) from
			// other goroutines, so the pointer must stay. A retry or dead
			// letter of this attempt carries the transformed content.
			d.Message.Key, d.Message.Headers, d.Message.Body = m.Key, m.Headers, m.Body
		}
		return next(ctx, d)
	case v.GetRetry() != nil:
		r := v.GetRetry()
		cause := errors.New("stage plugin asked for a retry: " + r.GetReason())
		if r.GetDelayMs() > 0 {
			return client.RetryAfter(time.Duration(r.GetDelayMs())*time.Millisecond, cause)
		}
		return cause
	case v.GetDeadLetter() != nil:
		return client.GiveUp(v.GetDeadLetter().GetReason(), errors.New("stage plugin dead-lettered the message"))
	case v.GetDrop() != nil:
		return nil
	}
	return client.RetryAfter(PluginRetryDelay, errors.New("stage plugin: verdict without action"))
}
