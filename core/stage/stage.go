// Package stage is the consumer-side chain a flow's messages pass through on
// their way to its sink: acknowledgement, retry, dead-lettering and any
// custom step, each a Stage (middleware around the next handler), registered
// by name and configured per flow in YAML:
//
//	flows:
//	  - name: billing
//	    topic: orders
//	    stages:
//	      - type: ack
//	        config: {mode: after_process}
//	      - type: dlq
//	      - type: retry
//	        config: {max_attempts: 5, delays: [1s, 10s, 1m]}
//	      - type: timeout
//	        config: {after: 30s}
//	    sink: {type: webhook, url: "http://127.0.0.1:8080/orders"}
//
// # Order
//
// Stages run outside in, in list order: the first sees a delivery first and
// its outcome last; the sink is innermost. Outcomes travel back as errors: nil
// acknowledges, an error fails the attempt (client.Permanent and
// client.GiveUp errors are not retried; client.RetryAfter asks for a delay).
//
// The built-in ack, retry and dlq stages act on outcomes, not on their
// position, so their relative order does not change what happens to a
// message: retry schedules another attempt for a retryable error (through the
// group's retry topic, or in place in orderly mode) or gives up with a
// GiveUp error; dlq dead-letters a message that failed for good (a Permanent
// error, or retry gave up); ack before_process acknowledges before anything
// else runs. Whatever outcome leaves the chain unsettled is settled by the
// consumer itself, with its default policy (16 attempts, RocketMQ's delay
// levels, then the dead-letter queue), so no message is dropped because a
// chain lacks a stage. Custom stages see what the stages inside them
// return: a metrics stage placed before dlq sees nil for a dead-lettered
// message, placed after it the error.
//
// A flow without stages gets Default(): ack (after_process), dlq, retry
// (max_attempts 16).
//
// # Writing a stage
//
// A stage is a Factory registered under a lower_snake_case name, from an
// init function or before the pipeline is loaded:
//
//	func init() {
//		stage.Register("dedupe", func(cfg map[string]any) (stage.Stage, error) {
//			var c struct{ Window int `json:"window"` }
//			if ps := stage.Decode(cfg, &c); ps != nil {
//				return nil, ps
//			}
//			...
//			return func(next stage.Handler) stage.Handler {
//				return func(ctx context.Context, d *client.Delivery) error { ... return next(ctx, d) }
//			}, nil
//		})
//	}
//
// The factory checks its config and reports every problem with its key path
// (an sdk.Problems, as Decode returns); `ferry validate` shows them under the
// stage's config key. A registered stage needs no change to the broker: it
// runs in the consumer, and settles deliveries only through
// client.Delivery's methods.
package stage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
)

// Handler processes one delivery; see client.DeliveryHandler, which it
// converts to.
type Handler func(ctx context.Context, d *client.Delivery) error

// Stage wraps the next handler of a chain.
type Stage func(next Handler) Handler

// Factory builds a stage from its config section (nil when the YAML has
// none). It returns an sdk.Problems (paths relative to the section) or
// another error when the config is wrong. Factories are called from one
// goroutine at a time; the stages and handlers they return are called from
// many.
type Factory func(config map[string]any) (Stage, error)

var registry = struct {
	sync.RWMutex
	m map[string]Factory
}{m: map[string]Factory{}}

var nameRule = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Register makes a stage type available to flows under name. It panics on a
// name that is not lower_snake_case, a nil factory or a name registered
// already: these are programming errors.
func Register(name string, f Factory) {
	if !nameRule.MatchString(name) || f == nil {
		panic(fmt.Sprintf("stage.Register(%q): the name must be lower_snake_case and the factory non-nil", name))
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.m[name]; dup {
		panic(fmt.Sprintf("stage.Register(%q): registered twice", name))
	}
	registry.m[name] = f
}

// Types lists the registered stage types, sorted.
func Types() []string {
	registry.RLock()
	defer registry.RUnlock()
	names := make([]string, 0, len(registry.m))
	for n := range registry.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Known reports whether a stage type is registered.
func Known(name string) bool {
	registry.RLock()
	defer registry.RUnlock()
	_, ok := registry.m[name]
	return ok
}

// ErrUnknown is returned by New for a type nobody registered.
var ErrUnknown = errors.New("unknown stage type")

// New builds one stage of type name from its config section.
func New(name string, config map[string]any) (Stage, error) {
	registry.RLock()
	f := registry.m[name]
	registry.RUnlock()
	if f == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknown, name)
	}
	s, err := f(config)
	if err == nil && s == nil {
		err = fmt.Errorf("stage %q: the factory returned no stage", name)
	}
	return s, err
}

// Check builds a stage to check its config and returns its problems, with
// paths relative to the config section (an error that is not an
// sdk.Problems becomes one problem about the whole section).
func Check(name string, config map[string]any) sdk.Problems {
	if ck := checkers[name]; ck != nil {
		return ck(config)
	}
	_, err := New(name, config)
	if err == nil {
		return nil
	}
	var ps sdk.Problems
	if errors.As(err, &ps) {
		return ps
	}
	return sdk.Problems{{Message: err.Error()}}
}

// Spec names a stage and its config, as a flow's YAML does.
type Spec struct {
	Type   string
	Config map[string]any
}

// Default is the chain of a flow that names none: ack after processing,
// dead-lettering, and RocketMQ's retry schedule with 16 attempts.
func Default() []Spec {
	return []Spec{
		{Type: "ack", Config: map[string]any{"mode": AckAfterProcess}},
		{Type: "dlq"},
		{Type: "retry", Config: map[string]any{"max_attempts": client.DefaultMaxAttempts}},
	}
}

// Options are what a chain's stages may need from the node that runs them.
type Options struct {
	// Plugins starts and supervises the chain's stage plugins (type
	// "plugin"); pluginhost.Host.Start is one. Without it a chain naming a
	// stage plugin is an error.
	Plugins PluginStarter
}

// Build builds the chain of specs (Default() when empty) as one stage, the
// first spec outermost. Errors name the spec by index ("stages[1]: …").
func Build(specs []Spec, opts Options) (Stage, error) {
	if len(specs) == 0 {
		specs = Default()
	}
	stages := make([]Stage, len(specs))
	var errs []error
	for i, sp := range specs {
		var s Stage
		var err error
		if sp.Type == pluginStageType {
			s, err = newPluginStage(sp.Config, opts.Plugins)
		} else {
			s, err = New(sp.Type, sp.Config)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stages[%d] (%s): %w", i, sp.Type, err))
			continue
		}
		stages[i] = s
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return Compose(stages...), nil
}

// Compose chains stages, the first outermost.
func Compose(stages ...Stage) Stage {
	return func(next Handler) Handler {
		for i := len(stages) - 1; i >= 0; i-- {
			next = stages[i](next)
		}
		return next
	}
}

// Decode decodes a stage's config section into dst (a pointer to a struct
// with json tags, holding the defaults) strictly, like plugin sections:
// every unknown key and wrong value is a problem with its key path. Use
// sdk.Duration for durations.
func Decode(config map[string]any, dst any) sdk.Problems {
	if len(config) == 0 {
		return nil
	}
	b, err := json.Marshal(config)
	if err != nil {
		return sdk.Problems{{Message: "cannot be read: " + err.Error()}}
	}
	return sdk.DecodeConfig(b, dst)
}

// hintUnknownKey adds hint to the problem "unknown key" at key among ps, for
// a key that belongs to another stage type.
func hintUnknownKey(ps sdk.Problems, key, hint string) sdk.Problems {
	for i, p := range ps {
		if p.Path == key && strings.HasPrefix(p.Message, "unknown key") {
			ps[i].Message += ": " + hint
		}
	}
	return ps
}
