package main

import (
	"context"
	"encoding/base64"
	"runtime"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// ferry consume --body prints each body after the metadata (Go-quoted text,
// or base64 when it is not UTF-8); --json carries headers and the body
// (body or body_base64), as the HTTP API does.
func TestConsumeBody(t *testing.T) {
	addr := startNode(t, "[{name: b, queues: 1}]")
	c := dialNode(t, addr)
	p := c.NewProducer(client.ProducerOptions{})
	binary := []byte{0xff, 0x00, 0xfe, 'x'}
	if _, err := p.SendBatchSync(context.Background(), []client.Message{
		{Topic: "b", Key: "k1", Headers: map[string]string{"source": "web"}, Body: []byte("hello \"world\"\nline two")},
		{Topic: "b", Key: "k2", Body: binary},
	}); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runFerry(t, nil, "consume", "--broker", addr, "--topic", "b", "--group", "text", "--body", "--count", "2")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("--body: exit %d, %d lines\n%s%s", code, len(lines), out, errOut)
	}
	if want := ` key="k1" 22B body="hello \"world\"\nline two"`; !strings.HasSuffix(lines[0], want) {
		t.Errorf("text body line %q, want it to end with %q", lines[0], want)
	}
	if want := ` key="k2" 4B body_base64=` + base64.StdEncoding.EncodeToString(binary); !strings.HasSuffix(lines[1], want) {
		t.Errorf("binary body line %q, want it to end with %q", lines[1], want)
	}
	// Without --body the line is the metadata alone.
	out, _, _ = runFerry(t, nil, "consume", "--broker", addr, "--topic", "b", "--group", "plain", "--count", "1")
	if strings.Contains(out, "body") || !strings.HasSuffix(out, " 22B\n") {
		t.Errorf("line without --body %q", out)
	}

	out, errOut, code = runFerry(t, nil, "consume", "--broker", addr, "--topic", "b", "--group", "json", "--json", "--count", "2")
	ls := parseLines(t, []byte(out))
	if code != 0 || len(ls) != 2 {
		t.Fatalf("--json: exit %d\n%s%s", code, out, errOut)
	}
	if ls[0].Body != "hello \"world\"\nline two" || ls[0].BodyBase64 != "" || ls[0].Headers["source"] != "web" {
		t.Errorf("text message as JSON: %+v", ls[0])
	}
	if ls[1].Body != "" || ls[1].BodyBase64 != base64.StdEncoding.EncodeToString(binary) {
		t.Errorf("binary message as JSON: %+v", ls[1])
	}
}

// Every command that talks to a broker takes its address from --broker, else
// from FERRY_BROKER, else 127.0.0.1:7070 — produce included (it used to
// require --broker while consume defaulted).
func TestBrokerAddressDefault(t *testing.T) {
	addr := startNode(t, "[{name: e, queues: 2}]")
	env := []string{EnvBroker + "=" + addr}
	if out, errOut, code := runFerry(t, env, "produce", "--topic", "e", "--count", "3", "--size", "8"); code != 0 {
		t.Fatalf("produce with %s: exit %d\n%s%s", EnvBroker, code, out, errOut)
	}
	if out, errOut, code := runFerry(t, env, "consume", "--topic", "e", "--group", "g", "--count", "3"); code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("consume with %s: exit %d\n%s%s", EnvBroker, code, out, errOut)
	}
	if out, errOut, code := runFerry(t, env, "dlq", "list", "--group", "g"); code != 0 || !strings.Contains(out, "group g has no dead letters") {
		t.Fatalf("dlq list with %s: exit %d\n%s%s", EnvBroker, code, out, errOut)
	}
	if out, errOut, code := runFerry(t, env, "bench", "produce", "--topic", "e", "--count", "20", "--progress", "never"); code != 0 {
		t.Fatalf("bench produce with %s: exit %d\n%s%s", EnvBroker, code, out, errOut)
	}

	// --broker wins over the environment.
	dead := ferrytest.FreeAddr(t)
	if out, errOut, code := runFerry(t, []string{EnvBroker + "=" + dead}, "produce", "--broker", addr, "--topic", "e", "--count", "1"); code != 0 {
		t.Fatalf("--broker over a dead %s: exit %d\n%s%s", EnvBroker, code, out, errOut)
	}
	// The environment is used (a dead address there is the one reported).
	if _, errOut, code := runFerry(t, []string{EnvBroker + "=" + dead}, "produce", "--topic", "e", "--count", "1", "--timeout", "500ms"); code != 1 || !strings.Contains(errOut, "cannot reach "+dead) {
		t.Errorf("produce with a dead %s: exit %d, %s", EnvBroker, code, errOut)
	}
	// A list where one broker is expected, and an empty one.
	if _, errOut, code := runFerry(t, []string{EnvBroker + "=" + addr + "," + dead}, "consume", "--topic", "e", "--group", "g"); code != 2 || !strings.Contains(errOut, "ferry consume talks to one broker, got 2 addresses") {
		t.Errorf("consume with two addresses: exit %d, %s", code, errOut)
	}
	if _, errOut, code := runFerry(t, []string{EnvBroker + "= , "}, "produce", "--topic", "e"); code != 2 || !strings.Contains(errOut, "$FERRY_BROKER names no broker address") {
		t.Errorf("empty %s: exit %d, %s", EnvBroker, code, errOut)
	}
	// Neither: the default, named in every --broker flag's help.
	for _, args := range [][]string{{"produce"}, {"consume"}, {"dlq", "list"}, {"dlq", "redrive"}, {"bench"}} {
		out, _, code := runFerry(t, nil, append(args, "--help")...)
		if code != 0 || !strings.Contains(out, "$FERRY_BROKER, else 127.0.0.1:7070") {
			t.Errorf("ferry %v --help: exit %d, no default broker in\n%s", args, code, out)
		}
	}
}

// ferry version, ferry --version and ferry --help say which build this is.
func TestVersion(t *testing.T) {
	out, errOut, code := runFerry(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "ferry ") || !strings.Contains(out, runtime.Version()) || strings.Count(out, "\n") != 1 {
		t.Fatalf("ferry version: exit %d\n%s%s", code, out, errOut)
	}
	v := strings.TrimSpace(strings.TrimPrefix(out, "ferry "))
	if help, _, code := runFerry(t, nil, "--help"); code != 0 || !strings.HasPrefix(help, "Ferry "+v+"\n") {
		t.Errorf("ferry --help does not begin with the version %q:\n%s", v, help)
	}
	if got, _, code := runFerry(t, nil, "--version"); code != 0 || !strings.Contains(got, v) {
		t.Errorf("ferry --version: exit %d, %q", code, got)
	}
}

// An unknown subcommand or a stray argument is an error everywhere: a
// non-zero exit and one line on stderr that names it (cobra alone printed
// the group's help and exited 0 for `ferry plugin tset storage memory`).
func TestUnknownCommandsAndStrayArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		text string
	}{
		{[]string{"plugin", "tset", "storage", "memory"}, `unknown command "tset" for "ferry plugin" (did you mean test?)`},
		{[]string{"dlq", "lsit"}, `unknown command "lsit" for "ferry dlq" (did you mean list?)`},
		{[]string{"cluster", "stats"}, `unknown command "stats" for "ferry cluster" (did you mean status?)`},
		{[]string{"vaildate", "x.yaml"}, `unknown command "vaildate" for "ferry" (did you mean validate?)`},
		{[]string{"version", "now"}, `unknown command "now" for "ferry version"`},
		{[]string{"consume", "--topic", "t", "--group", "g", "orders"}, `unknown command "orders" for "ferry consume"`},
		{[]string{"produce", "--topic", "t", "hello"}, `unknown command "hello" for "ferry produce"`},
		{[]string{"dlq", "list", "--group", "g", "extra"}, `unknown command "extra" for "ferry dlq list"`},
		{[]string{"bench", "produce", "e2e"}, "accepts 1 arg(s), received 2"},
		{[]string{"run", "a.yaml", "b.yaml"}, "accepts 1 arg(s), received 2"},
		{[]string{"consume", "--nope"}, "unknown flag: --nope"},
		{[]string{"help", "dlq", "nosuch"}, `unknown command "nosuch" for "ferry dlq"`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for "ferry completion"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := runFerry(t, nil, tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.text) || strings.Count(errOut, "\n") != 1 || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want a non-zero exit and one line on stderr with %q", code, out, errOut, tc.text)
			}
		})
	}
	if out, _, code := runFerry(t, nil, "help", "dlq", "list"); code != 0 || !strings.Contains(out, "--group") {
		t.Errorf("ferry help dlq list: exit %d\n%s", code, out)
	}
	// A group alone still prints its help.
	if out, _, code := runFerry(t, nil, "plugin"); code != 0 || !strings.Contains(out, "serve") {
		t.Errorf("ferry plugin: exit %d\n%s", code, out)
	}
}
