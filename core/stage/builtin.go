package stage

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
)

func init() {
	Register("ack", newAck)
	Register("retry", newRetry)
	Register("dlq", newDLQ)
	Register("timeout", newTimeout)
}

// Ack modes (config key mode of the ack stage).
const (
	// AckAfterProcess acknowledges a message once the stages inside and the
	// sink succeeded: at-least-once. Default.
	AckAfterProcess = "after_process"
	// AckBeforeProcess acknowledges a message before anything inside runs:
	// at-most-once. A message whose processing then fails, or whose
	// consumer dies while processing it, is lost: no retry, no dead letter.
	AckBeforeProcess = "before_process"
)

// AckConfig is the ack stage's config.
type AckConfig struct {
	Mode string `json:"mode"`
}

func newAck(cfg map[string]any) (Stage, error) {
	c := AckConfig{Mode: AckAfterProcess}
	if ps := Decode(cfg, &c); ps != nil {
		return nil, ps
	}
	switch c.Mode {
	case AckAfterProcess:
		return func(next Handler) Handler { return next }, nil
	case AckBeforeProcess:
		return func(next Handler) Handler {
			return func(ctx context.Context, d *client.Delivery) error {
				d.Ack()
				_ = next(ctx, d) // at-most-once: a failure is dropped
				return nil
			}
		}, nil
	}
	return nil, sdk.Problems{{Path: "mode", Message: fmt.Sprintf("must be %s or %s, got %q", AckAfterProcess, AckBeforeProcess, c.Mode)}}
}

// RetryConfig is the retry stage's config. At most one of delays, levels
// and backoff may be given; none means RocketMQ's levels.
type RetryConfig struct {
	// MaxAttempts counts deliveries, the first included (1..1000; 16).
	MaxAttempts int `json:"max_attempts"`
	// Delays: the n-th retry waits delays[n-1]; the last repeats.
	Delays []sdk.Duration `json:"delays"`
	// Levels is Delays in RocketMQ's messageDelayLevel form:
	// "1s 5s 10s 30s 1m 2m" (units s, m, h, d).
	Levels string `json:"levels"`
	// Backoff: the n-th retry waits initial × multiplier^(n-1), at most max.
	Backoff BackoffConfig `json:"backoff"`
}

// BackoffConfig is an exponential schedule.
type BackoffConfig struct {
	Initial    sdk.Duration `json:"initial"`
	Multiplier float64      `json:"multiplier"`
	Max        sdk.Duration `json:"max"`
}

// Limits of the retry stage's config.
const (
	maxRetryAttempts = 1000
	maxRetryDelay    = 24 * time.Hour
)

func newRetry(cfg map[string]any) (Stage, error) {
	c := RetryConfig{MaxAttempts: client.DefaultMaxAttempts}
	if ps := Decode(cfg, &c); ps != nil {
		return nil, ps
	}
	policy, ps := c.policy(cfg)
	if len(ps) > 0 {
		return nil, ps
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, d *client.Delivery) error {
			err := next(ctx, d)
			if err == nil || d.Settled() || ctx.Err() != nil {
				return err
			}
			return d.Retry(ctx, err, policy)
		}
	}, nil
}

// policy checks c and returns its schedule; cfg tells which keys were given.
func (c RetryConfig) policy(cfg map[string]any) (client.RetryPolicy, sdk.Problems) {
	var ps sdk.Problems
	add := func(path, format string, args ...any) {
		ps = append(ps, sdk.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > maxRetryAttempts {
		add("max_attempts", "must be between 1 and %d, got %d", maxRetryAttempts, c.MaxAttempts)
	}
	var given []string
	for _, k := range []string{"delays", "levels", "backoff"} {
		if v, ok := cfg[k]; ok && v != nil {
			given = append(given, k)
		}
	}
	if len(given) > 1 {
		add(given[1], "give only one of delays, levels and backoff (%s is given too)", given[0])
		return client.RetryPolicy{}, ps
	}
	var delays []time.Duration
	checkDelay := func(path string, d time.Duration) {
		if d < 0 || d > maxRetryDelay {
			add(path, "must be between 0s and %s, got %s", maxRetryDelay, d)
		}
	}
	switch {
	case len(given) == 0:
		delays = sdk.DelayLevels
	case given[0] == "delays":
		if len(c.Delays) == 0 {
			add("delays", "must list at least one delay")
		}
		for i, d := range c.Delays {
			checkDelay(fmt.Sprintf("delays[%d]", i), time.Duration(d))
			delays = append(delays, time.Duration(d))
		}
	case given[0] == "levels":
		var err error
		if delays, err = ParseLevels(c.Levels); err != nil {
			add("levels", "%v", err)
		}
		for _, d := range delays {
			checkDelay("levels", d)
		}
	default:
		b := c.Backoff
		if b.Initial <= 0 {
			add("backoff.initial", "is required and must be greater than 0")
		}
		if b.Multiplier == 0 {
			b.Multiplier = 2
		}
		if b.Multiplier < 1 || b.Multiplier > 100 {
			add("backoff.multiplier", "must be between 1 and 100, got %g", b.Multiplier)
		}
		if b.Max == 0 {
			b.Max = sdk.Duration(time.Hour)
		}
		if b.Max < b.Initial {
			add("backoff.max", "must be at least backoff.initial (%s), got %s", time.Duration(b.Initial), time.Duration(b.Max))
		}
		checkDelay("backoff.max", time.Duration(b.Max))
		if len(ps) == 0 {
			d := float64(b.Initial)
			for range max(c.MaxAttempts-1, 1) {
				delays = append(delays, time.Duration(min(d, float64(b.Max))))
				d *= b.Multiplier
			}
		}
	}
	return client.RetryPolicy{MaxAttempts: c.MaxAttempts, Delays: delays}, ps
}

// ParseLevels reads RocketMQ's messageDelayLevel form: delays separated by
// spaces, each a number and a unit s, m, h or d ("1s 5s 10s 30s 1m 2h").
// Go durations ("1m30s", "500ms") are accepted too.
func ParseLevels(s string) ([]time.Duration, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, fmt.Errorf("must list at least one delay, such as \"1s 5s 10s 30s 1m\"")
	}
	out := make([]time.Duration, 0, len(fields))
	for _, f := range fields {
		if n, ok := strings.CutSuffix(f, "d"); ok {
			days, err := strconv.Atoi(n)
			if err != nil || days < 0 {
				return nil, fmt.Errorf("cannot read %q: want a delay such as 1s, 5m, 2h or 1d", f)
			}
			out = append(out, time.Duration(days)*24*time.Hour)
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("cannot read %q: want a delay such as 1s, 5m, 2h or 1d", f)
		}
		out = append(out, d)
	}
	return out, nil
}

// The dlq stage takes no config.
func newDLQ(cfg map[string]any) (Stage, error) {
	var ps sdk.Problems
	for k := range cfg {
		ps = append(ps, sdk.Problem{Path: k, Message: "unknown key: the dlq stage takes no config"})
	}
	if len(ps) > 0 {
		slices.SortFunc(ps, func(a, b sdk.Problem) int { return strings.Compare(a.Path, b.Path) })
		return nil, ps
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, d *client.Delivery) error {
			err := next(ctx, d)
			if err == nil || d.Settled() || ctx.Err() != nil || !client.IsPermanent(err) {
				return err
			}
			return d.DeadLetter(ctx, err)
		}
	}, nil
}

// TimeoutConfig is the timeout stage's config.
type TimeoutConfig struct {
	// After bounds each attempt of the stages inside (required, > 0).
	After sdk.Duration `json:"after"`
}

// newTimeout bounds each attempt: the stages inside get a context that ends
// after the timeout, and when they return after it did, the attempt fails
// with a retryable "timed out" error. The stages inside must honour ctx (the
// exec and webhook sinks do: the command is killed, the request cancelled);
// the timeout stage waits for them to return, so that no attempt outlives
// its turn.
func newTimeout(cfg map[string]any) (Stage, error) {
	var c TimeoutConfig
	if ps := Decode(cfg, &c); ps != nil {
		return nil, hintUnknownKey(ps, "timeout", "the timeout stage's key is after (how long each attempt of the rest of the chain may take); "+
			"timeout is a plugin stage's key (how long one call to its plugin may take)")
	}
	if c.After <= 0 {
		msg := "is required: how long an attempt may take, such as \"30s\""
		if _, given := cfg["after"]; given {
			msg = fmt.Sprintf("must be greater than 0, got %s", time.Duration(c.After))
		}
		return nil, sdk.Problems{{Path: "after", Message: msg}}
	}
	after := time.Duration(c.After)
	return func(next Handler) Handler {
		return func(ctx context.Context, d *client.Delivery) error {
			tctx, cancel := context.WithTimeout(ctx, after)
			defer cancel()
			err := next(tctx, d)
			if err != nil && ctx.Err() == nil && tctx.Err() == context.DeadlineExceeded {
				return &timeoutError{after: after, err: err}
			}
			return err
		}
	}, nil
}

type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string { return fmt.Sprintf("timed out after %s", e.after) }
func (e *timeoutError) Unwrap() error { return e.err }
