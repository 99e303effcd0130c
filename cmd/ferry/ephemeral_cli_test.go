package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// `ferry consume --ephemeral` (with a group, and without one: a generated
// name) leaves nothing behind: once the consumers exited and the TTL
// passed, describe says not found. A durable group consumed alongside stays
// (the negative control).
func TestConsumeEphemeral(t *testing.T) {
	addr := ferrytest.FreeAddr(t)
	cfg, err := config.LoadBytes("node.yaml", fmt.Appendf(nil, `name: ephemeral-test
node: {ephemeral_group_ttl: 1s}
plugins:
  mode: inprocess
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: [{name: orders, queues: 2}]
`, addr))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.DataDir = t.TempDir()
	e, err := engine.Start(context.Background(), cfg, engine.Options{Registry: builtins()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	})
	c := dialNode(t, addr)
	sendKeyed(t, c, "orders", 20)
	ctx := context.Background()

	consume := func(args ...string) string {
		t.Helper()
		_, stderr, code := runFerry(t, nil, append([]string{"consume", "--broker", addr, "--topic", "orders", "--count", "20"}, args...)...)
		if code != 0 {
			t.Fatalf("ferry consume %v: exit %d: %s", args, code, stderr)
		}
		return stderr
	}
	consume("--group", "eph-cli", "--ephemeral")
	if d, err := c.DescribeGroup(ctx, "eph-cli"); err == nil && !d.Ephemeral {
		t.Fatal("group of ferry consume --ephemeral is not ephemeral")
	}
	consume("--group", "durable-cli")
	out := consume("--ephemeral")
	m := regexp.MustCompile(`ephemeral group (ephemeral-[0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ferry consume --ephemeral without --group names no group:\n%s", out)
	}
	for _, g := range []string{"eph-cli", m[1]} {
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err := c.DescribeGroup(ctx, g)
			if errors.Is(err, sdk.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ephemeral group %s still there 60s after its consumer exited: %v", g, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	d, err := c.DescribeGroup(ctx, "durable-cli")
	if err != nil {
		t.Fatalf("durable group after the ephemeral ones were deleted: %v", err)
	}
	var committed int64
	for _, q := range d.Queues {
		committed += q.Committed
	}
	if d.Ephemeral || committed != 20 {
		t.Fatalf("durable group: ephemeral=%v, committed %d of 20", d.Ephemeral, committed)
	}
	if _, stderr, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "orders", "--count", "1"); code != 2 || !regexp.MustCompile(`--group is required \(or --ephemeral`).MatchString(stderr) {
		t.Fatalf("ferry consume without --group: exit %d: %s", code, stderr)
	}
}

// `ferry group describe` says that a group is ephemeral and, once its last
// member is gone, when the broker deletes it (text and --json); a durable
// group says neither (the control).
func TestGroupDescribeShowsEphemeral(t *testing.T) {
	addr := ferrytest.FreeAddr(t)
	cfg, err := config.LoadBytes("node.yaml", fmt.Appendf(nil, `name: ephemeral-describe
node: {ephemeral_group_ttl: 1h}
plugins:
  mode: inprocess
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: [{name: orders, queues: 2}]
`, addr))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.DataDir = t.TempDir()
	e, err := engine.Start(context.Background(), cfg, engine.Options{Registry: builtins()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Close(ctx)
	})
	sendKeyed(t, dialNode(t, addr), "orders", 4)
	for _, args := range [][]string{{"--group", "eph-d", "--ephemeral"}, {"--group", "durable-d"}} {
		if _, stderr, code := runFerry(t, nil, append([]string{"consume", "--broker", addr, "--topic", "orders", "--count", "4"}, args...)...); code != 0 {
			t.Fatalf("ferry consume %v: exit %d: %s", args, code, stderr)
		}
	}
	before := time.Now()
	out, stderr, code := runFerry(t, nil, "group", "describe", "eph-d", "--broker", addr)
	if code != 0 {
		t.Fatalf("ferry group describe eph-d: exit %d: %s", code, stderr)
	}
	m := regexp.MustCompile(`(?m)^ephemeral: deleted at (\S+) \(in ([^)]+)\) unless a member joins first$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("describe of an ephemeral group without members does not say when it is deleted:\n%s", out)
	}
	at, err := time.Parse(time.RFC3339, m[1])
	if err != nil || at.Before(before.Add(50*time.Minute)) || at.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Fatalf("deletion time %q (%v): want about an hour from now (ttl 1h)", m[1], err)
	}
	out, _, code = runFerry(t, nil, "group", "describe", "eph-d", "--broker", addr, "--json")
	var j struct {
		Ephemeral bool       `json:"ephemeral"`
		DeleteAt  *time.Time `json:"delete_at"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || !j.Ephemeral || j.DeleteAt == nil || j.DeleteAt.Sub(at).Abs() > time.Second {
		t.Fatalf("describe --json of the ephemeral group: exit %d, %s", code, out)
	}
	out, _, code = runFerry(t, nil, "group", "describe", "durable-d", "--broker", addr)
	if code != 0 || strings.Contains(out, "ephemeral") {
		t.Fatalf("describe of a durable group: exit %d:\n%s", code, out)
	}
	out, _, code = runFerry(t, nil, "group", "describe", "durable-d", "--broker", addr, "--json")
	if code != 0 || !strings.Contains(out, `"ephemeral": false`) || strings.Contains(out, "delete_at") {
		t.Fatalf("describe --json of a durable group: exit %d, %s", code, out)
	}
}
