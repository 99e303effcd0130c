package stage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/stage"
)

func TestBuiltinsRegistered(t *testing.T) {
	for _, name := range []string{"ack", "dlq", "plugin", "retry", "timeout"} {
		if !stage.Known(name) {
			t.Errorf("stage %q is not registered", name)
		}
	}
	if got := strings.Join(stage.Types(), ","); !strings.Contains(got, "ack,dlq,plugin,retry,timeout") {
		t.Errorf("Types() = %s", got)
	}
	if _, err := stage.Build(nil, stage.Options{}); err != nil {
		t.Errorf("the default chain does not build: %v", err)
	}
}

// Every config mistake is reported with its key path, relative to the
// stage's config section.
func TestConfigProblems(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		cfg  map[string]any
		want string // problems, "path: message" joined by "; "
	}{
		{"ack", nil, ""},
		{"ack", map[string]any{"mode": "before_process"}, ""},
		{"ack", map[string]any{"mode": "sometimes"}, `mode: must be after_process or before_process, got "sometimes"`},
		{"ack", map[string]any{"commit": true}, "commit: unknown key (valid keys: mode)"},
		{"retry", nil, ""},
		{"retry", map[string]any{"max_attempts": 3, "delays": []any{"1s", "10s"}}, ""},
		{"retry", map[string]any{"levels": "1s 5s 10s 30s 1m 2h 1d"}, ""},
		{"retry", map[string]any{"backoff": map[string]any{"initial": "100ms", "multiplier": 3, "max": "10s"}}, ""},
		{"retry", map[string]any{"max_attempts": 0}, "max_attempts: must be between 1 and 1000, got 0"},
		{"retry", map[string]any{"max_attempts": "many"}, `max_attempts: must be an integer, got "many"`},
		{"retry", map[string]any{"delays": []any{"1s", "soon"}}, `delays: must be a duration such as "250ms" or "2s", got "soon"`},
		{"retry", map[string]any{"delays": []any{"1s", "-2s"}}, "delays[1]: must be between 0s and 24h0m0s, got -2s"},
		{"retry", map[string]any{"delays": []any{}}, "delays: must list at least one delay"},
		{"retry", map[string]any{"levels": "1s fast"}, `levels: cannot read "fast": want a delay such as 1s, 5m, 2h or 1d`},
		{"retry", map[string]any{"delays": []any{"1s"}, "levels": "1s"}, "levels: give only one of delays, levels and backoff (delays is given too)"},
		{"retry", map[string]any{"backoff": map[string]any{"multiplier": 0.5, "max": "1s", "jitter": true}}, "backoff.jitter: unknown key (valid keys: initial, max, multiplier)"},
		{"retry", map[string]any{"backoff": map[string]any{"multiplier": 0.5}}, "backoff.initial: is required and must be greater than 0; backoff.multiplier: must be between 1 and 100, got 0.5"},
		{"dlq", nil, ""},
		{"dlq", map[string]any{"topic": "x"}, "topic: unknown key: the dlq stage takes no config"},
		{"timeout", nil, `after: is required: how long an attempt may take, such as "30s"`},
		{"timeout", map[string]any{"after": "0s"}, "after: must be greater than 0, got 0s"},
		{"timeout", map[string]any{"after": "2s"}, ""},
		// The timeout stage's after and a plugin stage's timeout, each
		// given to the other type: the message names the right one.
		{"timeout", map[string]any{"timeout": "2s"}, "timeout: unknown key (valid keys: after): the timeout stage's key is after (how long each attempt of the rest of the chain may take); " +
			"timeout is a plugin stage's key (how long one call to its plugin may take)"},
		{"plugin", map[string]any{"plugin": "x", "after": "2s"}, "after: unknown key (valid keys: config, linger, max_batch, plugin, timeout): after is the timeout stage's key " +
			"(a `type: timeout` stage bounds each attempt of the rest of the chain); a plugin stage's timeout bounds one call to its plugin"},
		{"plugin", map[string]any{"plugin": "x", "timeout": "1ms"}, "timeout: must be between 10ms and 1h, got 1ms (how long one call to the plugin may take; a `type: timeout` stage's after bounds each attempt)"},
	} {
		var got []string
		for _, p := range stage.Check(tc.typ, tc.cfg) {
			got = append(got, p.Path+": "+p.Message)
		}
		if g := strings.Join(got, "; "); g != tc.want {
			t.Errorf("%s %v:\n got  %s\n want %s", tc.typ, tc.cfg, g, tc.want)
		}
	}
	if _, err := stage.New("throttle", nil); err == nil || !strings.Contains(err.Error(), `unknown stage type "throttle"`) {
		t.Errorf("New(throttle) = %v", err)
	}
	_, err := stage.Build([]stage.Spec{{Type: "retry"}, {Type: "timeout"}}, stage.Options{})
	if err == nil || !strings.Contains(err.Error(), "stages[1] (timeout): after: is required") {
		t.Errorf("Build with a bad stage: %v", err)
	}
}

func TestParseLevels(t *testing.T) {
	got, err := stage.ParseLevels("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h")
	if err != nil || len(got) != 18 || got[4] != time.Minute || got[17] != 2*time.Hour {
		t.Fatalf("RocketMQ's levels parsed as %v, %v", got, err)
	}
	if got, _ := stage.ParseLevels("1d 1m30s"); fmt.Sprint(got) != "[24h0m0s 1m30s]" {
		t.Errorf("days and Go durations: %v", got)
	}
}

func TestRegisterRejects(t *testing.T) {
	mustPanic := func(name string, f stage.Factory) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("Register(%q) did not panic", name)
			}
		}()
		stage.Register(name, f)
	}
	ok := func(map[string]any) (stage.Stage, error) { return nil, nil }
	mustPanic("ack", ok)    // taken
	mustPanic("Dedupe", ok) // not lower_snake_case
	mustPanic("x", nil)
}

// Stages compose outside in: the first sees a delivery first and its
// outcome last.
func TestComposeOrder(t *testing.T) {
	var trace []string
	mk := func(name string) stage.Stage {
		return func(next stage.Handler) stage.Handler {
			return func(ctx context.Context, d *client.Delivery) error {
				trace = append(trace, name+">")
				err := next(ctx, d)
				trace = append(trace, "<"+name)
				return err
			}
		}
	}
	h := stage.Compose(mk("a"), mk("b"), mk("c"))(func(context.Context, *client.Delivery) error {
		trace = append(trace, "sink")
		return nil
	})
	if err := h(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(trace, " "); got != "a> b> c> sink <c <b <a" {
		t.Errorf("trace %s", got)
	}
}
