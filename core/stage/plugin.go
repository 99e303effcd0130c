package stage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
//	    config:
//	      plugin: redact           # runs ferry-stage-redact
//	      config: {fields: [card]} # the plugin's own section
//	      max_batch: 64            # deliveries per call (default 64)
//	      linger: 1ms              # how long a call waits for more (default 1ms)
//	      timeout: 30s             # deadline of each call (default 30s)
//
// and for each delivery the plugin answers pass (possibly transformed),
// retry after a delay, dead-letter with a reason, or drop.
//
// # Batches
//
// Deliveries handled at the same time (the consumer's concurrency) are
// gathered into one call: a call goes out when it holds max_batch
// deliveries or linger after its first one arrived, whichever comes first.
// Each delivery gets its own verdict and goes on through the rest of the
// chain on its own goroutine, as without batching.
//
// # Failures
//
// Whatever goes wrong with a call fails every delivery of it with a
// retryable error (delivered again after PluginRetryDelay, counted as an
// attempt by the flow's retry policy, never acked):
//   - the process crashed: the host restarts it;
//   - the plugin broke the contract (answered for a delivery it was not
//     given, twice, or not at all): logged; the plugin is not killed for it;
//   - the call missed its deadline (timeout): logged; the host then asks the
//     same process an empty batch, which carries no message, and restarts
//     the plugin only when that probe misses the deadline too.
//
// The rule: the host restarts a stage plugin for what the plugin does with
// no client data involved (its process died, or it stopped answering an
// empty probe), never because of a message. A message that is slow, or
// that makes the plugin misbehave, costs that message an attempt; after
// the flow's max_attempts it is dead-lettered like any failing message.

// PluginStarter starts and supervises a stage plugin; pluginhost.Host.Start
// is one.
type PluginStarter func(ctx context.Context, kind, typ string, configJSON []byte) (*pluginhost.Instance, error)

// PluginRetryDelay is how long a delivery waits before it is retried after
// its stage plugin crashed, broke the contract or missed its deadline.
var PluginRetryDelay = time.Second

// Defaults of a plugin stage's config.
const (
	DefaultPluginMaxBatch = 64
	DefaultPluginLinger   = time.Millisecond
	DefaultPluginTimeout  = 30 * time.Second
	maxPluginMaxBatch     = 10000
)

const pluginStageType = "plugin"

func init() {
	// Build builds this type with the node's plugin host (Options.Plugins);
	// New, which has none, only checks the config.
	Register(pluginStageType, func(cfg map[string]any) (Stage, error) { return newPluginStage(cfg, nil) })
}

// checkers check a stage type's config without building the stage, for
// types whose factory starts something (a plugin process).
var checkers = map[string]func(map[string]any) sdk.Problems{pluginStageType: checkPluginStage}

// PluginStageConfig is the plugin stage's config section.
type PluginStageConfig struct {
	Plugin   string         `json:"plugin"`
	Config   map[string]any `json:"config"`
	MaxBatch int            `json:"max_batch"`
	Linger   sdk.Duration   `json:"linger"`
	Timeout  sdk.Duration   `json:"timeout"`
}

// DecodePluginStage decodes and checks a plugin stage's config section,
// with the defaults for what it leaves out.
func DecodePluginStage(cfg map[string]any) (PluginStageConfig, sdk.Problems) {
	c := PluginStageConfig{MaxBatch: DefaultPluginMaxBatch, Linger: sdk.Duration(DefaultPluginLinger), Timeout: sdk.Duration(DefaultPluginTimeout)}
	if ps := Decode(cfg, &c); ps != nil {
		return c, hintUnknownKey(ps, "after", "after is the timeout stage's key (a `type: timeout` stage bounds each attempt of the rest of the chain); "+
			"a plugin stage's timeout bounds one call to its plugin")
	}
	var ps sdk.Problems
	switch {
	case c.Plugin == "":
		ps = append(ps, sdk.Problem{Path: "plugin", Message: "is required: the stage plugin's type (the executable ferry-stage-TYPE in plugins.dirs)"})
	case !pluginhost.ValidType(c.Plugin):
		ps = append(ps, sdk.Problem{Path: "plugin", Message: fmt.Sprintf("%q is not a type name (lowercase letters, digits and '_')", c.Plugin)})
	}
	if c.MaxBatch < 1 || c.MaxBatch > maxPluginMaxBatch {
		ps = append(ps, sdk.Problem{Path: "max_batch", Message: fmt.Sprintf("must be between 1 and %d, got %d", maxPluginMaxBatch, c.MaxBatch)})
	}
	if l := time.Duration(c.Linger); l < 0 || l > time.Second {
		ps = append(ps, sdk.Problem{Path: "linger", Message: fmt.Sprintf("must be between 0s and 1s, got %s", l)})
	}
	if t := time.Duration(c.Timeout); t < 10*time.Millisecond || t > time.Hour {
		ps = append(ps, sdk.Problem{Path: "timeout", Message: fmt.Sprintf("must be between 10ms and 1h, got %s (how long one call to the plugin may take; a `type: timeout` stage's after bounds each attempt)", t)})
	}
	return c, ps
}

func checkPluginStage(cfg map[string]any) sdk.Problems {
	_, ps := DecodePluginStage(cfg)
	return ps
}

func newPluginStage(cfg map[string]any, start PluginStarter) (Stage, error) {
	c, ps := DecodePluginStage(cfg)
	if ps != nil {
		return nil, ps
	}
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
	return FromPlugin(inst, c), nil
}

// FromPlugin makes a stage of a running stage plugin, with the batching and
// deadline of c (zero fields take the defaults; Plugin and Config are not
// used). Its handlers are called from the consumer's goroutines, many at
// once; those that overlap share calls.
func FromPlugin(inst *pluginhost.Instance, c PluginStageConfig) Stage {
	b := &batcher{inst: inst, maxBatch: c.MaxBatch, linger: time.Duration(c.Linger), timeout: time.Duration(c.Timeout)}
	if b.maxBatch <= 0 {
		b.maxBatch = DefaultPluginMaxBatch
	}
	if b.timeout <= 0 {
		b.timeout = DefaultPluginTimeout
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, d *client.Delivery) error {
			v, err := b.verdict(ctx, d)
			if err != nil {
				return err
			}
			return applyVerdict(ctx, v, d, next)
		}
	}
}

// batcher gathers the deliveries of one plugin stage into calls.
type batcher struct {
	inst     *pluginhost.Instance
	maxBatch int
	linger   time.Duration
	timeout  time.Duration

	mu      sync.Mutex
	open    *batch          // gathering, nil when none is
	probing map[uint64]bool // generations being probed after a missed deadline
}

// batch is one call being gathered. The goroutine that opened it (its
// leader) sends it; the others wait for their verdicts.
type batch struct {
	items []*pending
	full  chan struct{} // closed when the batch reached maxBatch
}

type pending struct {
	d    *client.Delivery
	id   uint64
	v    *sdk.Verdict
	err  error
	done chan struct{}
}

// verdict has d judged by the plugin, in a batch with the deliveries that
// arrive with it. Called from many goroutines at once: the first of a batch
// (its leader) waits up to linger for the others, or until the batch is
// full, and makes the call; the rest wait for their verdicts.
func (b *batcher) verdict(ctx context.Context, d *client.Delivery) (*sdk.Verdict, error) {
	p := &pending{d: d, done: make(chan struct{})}
	b.mu.Lock()
	bt, leader := b.open, false
	if bt == nil {
		bt, leader = &batch{full: make(chan struct{})}, true
		b.open = bt
	}
	bt.items = append(bt.items, p)
	p.id = uint64(len(bt.items))
	if len(bt.items) >= b.maxBatch {
		b.open = nil
		close(bt.full)
	}
	b.mu.Unlock()
	if leader {
		if b.linger > 0 {
			t := time.NewTimer(b.linger)
			select {
			case <-bt.full:
			case <-t.C:
			}
			t.Stop()
		}
		b.mu.Lock()
		if b.open == bt {
			b.open = nil
		}
		b.mu.Unlock()
		// The call outlives no delivery of it but must not end with the
		// leader's context alone: it carries the others too.
		b.send(context.WithoutCancel(ctx), bt.items)
	}
	select {
	case <-p.done:
		return p.v, p.err
	case <-ctx.Done():
		// The consumer is stopping: the delivery is not settled here and
		// comes again; a late verdict is discarded.
		return nil, client.RetryAfter(PluginRetryDelay, fmt.Errorf("stage plugin %q: %w", b.inst.Type(), ctx.Err()))
	}
}

// send makes one call with items and settles each with its verdict or the
// call's error.
func (b *batcher) send(ctx context.Context, items []*pending) {
	fail := func(err error) {
		err = client.RetryAfter(PluginRetryDelay, fmt.Errorf("stage plugin %q: %w", b.inst.Type(), err))
		for _, p := range items {
			p.err = err
			close(p.done)
		}
	}
	impl, gen, _ := b.inst.Current()
	st, ok := impl.(sdk.Stage)
	if !ok {
		fail(errors.New("not running"))
		return
	}
	req := &sdk.ProcessRequest{Deliveries: make([]*sdk.StageDelivery, len(items))}
	for i, p := range items {
		req.Deliveries[i] = &sdk.StageDelivery{Id: p.id, Message: p.d.Message, Attempt: int32(p.d.Attempt), Group: p.d.Group}
	}
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	resp, err := st.Process(cctx, req)
	// The plugin's side may end the stream at the deadline a moment
	// before this side's timer fires (RST_STREAM CANCEL): ctx itself is
	// never cancelled, so a Canceled call missed the deadline too.
	// A Canceled call counts only at its deadline: a closing connection
	// (the plugin being stopped) cancels calls too.
	dl, _ := cctx.Deadline()
	missed := err != nil && (cctx.Err() == context.DeadlineExceeded || timedOut(err) && time.Until(dl) < 100*time.Millisecond)
	cancel()
	if err != nil {
		if missed {
			slog.Warn("stage plugin missed its call deadline (the plugin stage's config.timeout); the deliveries will come again", "plugin", b.inst.Type(), "timeout", b.timeout, "deliveries", len(items), "messages", messageIDs(items))
			go b.probe(st, gen)
			fail(fmt.Errorf("no answer within its call timeout %s (the plugin stage's config.timeout): %w", b.timeout, err))
			return
		}
		// The process may have died: the host restarts it, and the
		// messages come again; they are not acked.
		fail(err)
		return
	}
	verdicts, err := sdk.CheckVerdicts(req, resp)
	if err != nil {
		slog.Warn("stage plugin broke its contract; the deliveries will come again", "plugin", b.inst.Type(), "messages", messageIDs(items), "error", err)
		fail(err)
		return
	}
	for _, p := range items {
		p.v = verdicts[p.id]
		close(p.done)
	}
}

// probe asks generation gen of the plugin an empty batch after a call to it
// missed its deadline, and has the host restart it when the probe misses
// the deadline too. One probe per generation runs at a time.
func (b *batcher) probe(st sdk.Stage, gen uint64) {
	b.mu.Lock()
	if b.probing[gen] {
		b.mu.Unlock()
		return
	}
	if b.probing == nil {
		b.probing = map[uint64]bool{}
	}
	b.probing[gen] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.probing, gen)
		b.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	resp, err := st.Process(ctx, &sdk.ProcessRequest{})
	if err == nil && len(resp.GetVerdicts()) == 0 {
		slog.Info("stage plugin answers an empty batch: only the call's messages were slow; it keeps running", "plugin", b.inst.Type())
		return
	}
	if _, g, _ := b.inst.Current(); g != gen {
		return // replaced already
	}
	if err == nil {
		err = fmt.Errorf("answered %d verdicts for an empty batch", len(resp.GetVerdicts()))
	}
	if dl, _ := ctx.Deadline(); ctx.Err() == context.DeadlineExceeded || timedOut(err) && time.Until(dl) < 100*time.Millisecond {
		slog.Error("stage plugin does not answer an empty batch either; restarting it", "plugin", b.inst.Type(), "timeout", b.timeout, "error", err)
		b.inst.Broken(gen)
		return
	}
	// Another failure (the process is dying, or it answered wrong): not a
	// hang. The host restarts a dead process by itself.
	slog.Warn("stage plugin's empty-batch probe failed", "plugin", b.inst.Type(), "error", err)
}

// timedOut reports whether a call's error is its deadline, as either side
// saw it: DeadlineExceeded here, or Canceled when the plugin's side reset
// the stream at the deadline first (the call's own context is never
// cancelled otherwise). Both arrive as the SDK's mapping of the gRPC
// status, or as the raw status.
func timedOut(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	c := status.Code(err)
	return c == codes.DeadlineExceeded || c == codes.Canceled
}

func messageIDs(items []*pending) []string {
	ids := make([]string, len(items))
	for i, p := range items {
		ids[i] = p.d.ID
	}
	return ids
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
