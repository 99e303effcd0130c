package httptransport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
	httptransport "github.com/ferrymq/ferry/plugins/transport/http"
)

func TestValidate(t *testing.T) {
	tr := httptransport.New()
	for _, tc := range []struct {
		config string
		paths  []string
	}{
		{``, nil},
		{`{"listen": "0.0.0.0:8080", "max_message_bytes": "1MiB", "max_request_bytes": "32MiB", "request_timeout": "5s", "max_wait": "10s", "shutdown_timeout": "1s"}`, nil},
		{`{"listen": "localhost"}`, []string{"listen"}},
		{`{"max_message_bytes": 0, "max_request_bytes": "1GiB"}`, []string{"max_message_bytes", "max_request_bytes"}},
		{`{"request_timeout": "0s", "max_wait": "-1s", "shutdown_timeout": "-1s"}`, []string{"max_wait", "request_timeout", "shutdown_timeout"}},
		{`{"port": 80}`, []string{"port"}},
		{`{"body_timeout": "2s", "max_connections": 10, "max_inflight_bytes": "16MiB"}`, nil},
		{`{"body_timeout": "0s", "max_connections": 0, "max_inflight_bytes": "1MiB"}`, []string{"body_timeout", "max_connections", "max_inflight_bytes"}},
		{`{"max_request_bytes": "1MiB", "max_inflight_bytes": "1MiB"}`, nil},
	} {
		var paths []string
		for _, p := range tr.Validate([]byte(tc.config)) {
			paths = append(paths, p.Path)
		}
		slices.Sort(paths)
		if !slices.Equal(paths, tc.paths) {
			t.Errorf("Validate(%s) problems at %v, want %v", tc.config, paths, tc.paths)
		}
	}
}

// node starts a broker node whose transport is the http plugin, in its own
// process, and returns the API's base URL.
func node(t *testing.T) string {
	t.Helper()
	base, _ := nodeEngine(t, "")
	return base
}

// nodeEngine is node with extra keys for the transport's config section
// (", key: value" pairs) that also returns the engine.
func nodeEngine(t *testing.T, extra string) (string, *engine.Engine) {
	t.Helper()
	listen := ferrytest.FreeAddr(t)
	dir := t.TempDir()
	cfg, err := config.LoadBytes("http-test.yaml", []byte(fmt.Sprintf(`name: http-test
node: {data_dir: %q}
plugins:
  mode: subprocess
  storage: {type: memory}
  transport: {type: http, config: {listen: %q, max_message_bytes: 1KiB, max_request_bytes: 64KiB, shutdown_timeout: 500ms%s}}
topics: [{name: orders, queues: 2}, {name: logs, queues: 1}]
`, dir, listen, extra)))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Plugins.Mode != pluginhost.ModeSubprocess {
		t.Fatalf("mode %s", cfg.Plugins.Mode)
	}
	e, err := engine.Start(context.Background(), cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: io.Discard}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if pid := e.Transport().Pid(); pid == 0 {
		t.Fatal("the http transport is not a process of its own")
	}
	base := "http://" + e.Address()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/metadata")
		if err == nil {
			resp.Body.Close()
			return base, e
		}
		if time.Now().After(deadline) {
			t.Fatalf("http transport not serving: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call does one request and decodes the JSON answer into out (if not nil).
func call(t *testing.T, method, url, contentType, body string, header map[string]string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json; body %s", method, url, ct, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type result struct {
	ID     string `json:"id"`
	Topic  string `json:"topic"`
	Queue  int32  `json:"queue"`
	Offset int64  `json:"offset"`
	Status string `json:"status"`
}

type pulled struct {
	Messages []struct {
		ID         string            `json:"id"`
		Queue      int32             `json:"queue"`
		Offset     int64             `json:"offset"`
		Key        string            `json:"key"`
		Headers    map[string]string `json:"headers"`
		Body       *string           `json:"body"`
		BodyBase64 *string           `json:"body_base64"`
	} `json:"messages"`
	Next []struct {
		Queue  int32 `json:"queue"`
		Offset int64 `json:"offset"`
	} `json:"next"`
}

func TestProducePullCommit(t *testing.T) {
	base := node(t)

	var md struct {
		Topics []struct {
			Name   string `json:"name"`
			Queues int32  `json:"queues"`
		} `json:"topics"`
		Brokers []struct{ Address string } `json:"brokers"`
	}
	if code := call(t, "GET", base+"/v1/metadata", "", "", nil, &md); code != 200 || len(md.Topics) != 2 || len(md.Brokers) != 1 {
		t.Fatalf("metadata: %d %+v", code, md)
	}

	// JSON produce: text body, base64 body, explicit id and queue.
	var out struct{ Results []result }
	code := call(t, "POST", base+"/v1/topics/orders/messages", "application/json",
		`{"messages":[{"key":"k1","headers":{"h":"v"},"body":"hello"},{"body_base64":"AAEC/w=="},{"id":"client-1","queue":1,"body":"mine"}]}`, nil, &out)
	if code != 200 || len(out.Results) != 3 {
		t.Fatalf("produce: %d %+v", code, out)
	}
	for _, r := range out.Results {
		if r.Status != "OK" || r.Topic != "orders" || r.ID == "" || r.Offset < 0 {
			t.Fatalf("result %+v", r)
		}
	}
	if r := out.Results[2]; r.ID != "client-1" || r.Queue != 1 {
		t.Fatalf("explicit id and queue: %+v", r)
	}
	// The same id again is de-duplicated: same offset, nothing new stored.
	var again struct{ Results []result }
	call(t, "POST", base+"/v1/topics/orders/messages", "application/json", `{"messages":[{"id":"client-1","queue":1,"body":"mine"}]}`, nil, &again)
	if again.Results[0].Offset != out.Results[2].Offset {
		t.Fatalf("retry with the same id got offset %d, first %d", again.Results[0].Offset, out.Results[2].Offset)
	}
	// Raw produce with headers.
	var raw struct{ Results []result }
	code = call(t, "POST", base+"/v1/topics/orders/messages", "text/plain", "raw line", map[string]string{"Ferry-Key": "k1", "Ferry-Header-Trace-Id": "abc"}, &raw)
	if code != 200 || len(raw.Results) != 1 || raw.Results[0].Queue != out.Results[0].Queue {
		t.Fatalf("raw produce: %d %+v (same key as the first message must go to its queue %d)", code, raw, out.Results[0].Queue)
	}

	// Pull from the group's (absent) committed offsets: everything.
	var p pulled
	if code := call(t, "GET", base+"/v1/topics/orders/messages?group=g&max=100", "", "", nil, &p); code != 200 || len(p.Messages) != 4 {
		t.Fatalf("pull: %d %+v", code, p)
	}
	byID := map[string]int{}
	for i, m := range p.Messages {
		byID[m.ID] = i
	}
	first := p.Messages[byID[out.Results[0].ID]]
	if first.Body == nil || *first.Body != "hello" || first.Key != "k1" || first.Headers["h"] != "v" {
		t.Errorf("first message pulled as %+v", first)
	}
	bin := p.Messages[byID[out.Results[1].ID]]
	if bin.Body != nil || bin.BodyBase64 == nil || *bin.BodyBase64 != "AAEC/w==" {
		t.Errorf("binary message pulled as %+v, want body_base64", bin)
	}
	rawm := p.Messages[byID[raw.Results[0].ID]]
	if rawm.Body == nil || *rawm.Body != "raw line" || rawm.Headers["trace-id"] != "abc" || rawm.Key != "k1" {
		t.Errorf("raw message pulled as %+v", rawm)
	}

	// Commit the next offsets, then a pull sees nothing new...
	var commit []string
	for _, n := range p.Next {
		commit = append(commit, fmt.Sprintf(`{"topic":"orders","queue":%d,"offset":%d}`, n.Queue, n.Offset))
	}
	if code := call(t, "POST", base+"/v1/groups/g/offsets", "application/json", `{"offsets":[`+strings.Join(commit, ",")+`]}`, nil, nil); code != 200 {
		t.Fatalf("commit: %d", code)
	}
	var empty pulled
	if call(t, "GET", base+"/v1/topics/orders/messages?group=g&wait=50ms", "", "", nil, &empty); len(empty.Messages) != 0 {
		t.Fatalf("pull after commit: %+v", empty)
	}
	var offs struct {
		Offsets []struct {
			Queue          int32
			End, Committed int64
		}
	}
	call(t, "GET", base+"/v1/groups/g/offsets?topic=orders", "", "", nil, &offs)
	for _, o := range offs.Offsets {
		if o.Committed != o.End {
			t.Errorf("queue %d: committed %d, end %d", o.Queue, o.Committed, o.End)
		}
	}

	// ...and a long poll returns as soon as a message arrives.
	got := make(chan pulled, 1)
	start := time.Now()
	go func() {
		var lp pulled
		call(t, "GET", base+"/v1/topics/orders/messages?group=g&wait=5s", "", "", nil, &lp)
		got <- lp
	}()
	time.Sleep(100 * time.Millisecond)
	call(t, "POST", base+"/v1/topics/orders/messages", "application/json", `{"messages":[{"body":"late"}]}`, nil, nil)
	lp := <-got
	if len(lp.Messages) != 1 || *lp.Messages[0].Body != "late" || time.Since(start) > 3*time.Second {
		t.Fatalf("long poll got %+v after %v", lp, time.Since(start))
	}
	// A pull from an explicit queue and offset.
	var at pulled
	q := lp.Messages[0].Queue
	call(t, "GET", fmt.Sprintf("%s/v1/topics/orders/messages?queue=%d&offset=%d&encoding=base64", base, q, lp.Messages[0].Offset), "", "", nil, &at)
	if len(at.Messages) != 1 || at.Messages[0].BodyBase64 == nil || at.Messages[0].Body != nil {
		t.Fatalf("pull at an offset with encoding=base64: %+v", at)
	}
}

func TestErrors(t *testing.T) {
	base := node(t)
	big := strings.Repeat("x", 2000)
	for _, tc := range []struct {
		name, method, path, ct, body string
		status                       int
		code                         string
		text                         string
	}{
		{"unknown topic", "POST", "/v1/topics/nope/messages", "application/json", `{"messages":[{"body":"x"}]}`, 404, "NOT_FOUND", `"nope"`},
		{"not json", "POST", "/v1/topics/orders/messages", "application/json", `{"messages":`, 400, "INVALID_ARGUMENT", "produce request"},
		{"unknown field", "POST", "/v1/topics/orders/messages", "application/json", `{"messages":[{"bdy":"x"}]}`, 400, "INVALID_ARGUMENT", "bdy"},
		{"no messages", "POST", "/v1/topics/orders/messages", "application/json", `{"messages":[]}`, 400, "INVALID_ARGUMENT", "no messages"},
		{"two bodies", "POST", "/v1/topics/orders/messages", "application/json", `{"messages":[{"body":"a","body_base64":"YQ=="}]}`, 400, "INVALID_ARGUMENT", "both"},
		{"bad base64", "POST", "/v1/topics/orders/messages", "application/json", `{"messages":[{"body_base64":"%%"}]}`, 400, "INVALID_ARGUMENT", "base64"},
		{"bad queue", "POST", "/v1/topics/orders/messages", "application/json", `{"messages":[{"queue":5,"body":"x"}]}`, 400, "INVALID_ARGUMENT", "queues 0..1"},
		{"message too large", "POST", "/v1/topics/orders/messages", "text/plain", big, 413, "PAYLOAD_TOO_LARGE", "max_message_bytes = 1024"},
		{"request too large", "POST", "/v1/topics/orders/messages", "text/plain", strings.Repeat("x", 70<<10), 413, "PAYLOAD_TOO_LARGE", "max_request_bytes"},
		{"pull without group", "GET", "/v1/topics/orders/messages", "", "", 400, "INVALID_ARGUMENT", "group="},
		{"offset without one queue", "GET", "/v1/topics/orders/messages?offset=3", "", "", 400, "INVALID_ARGUMENT", "exactly one queue"},
		{"pull unknown topic", "GET", "/v1/topics/nope/messages?group=g", "", "", 404, "NOT_FOUND", "nope"},
		{"bad wait", "GET", "/v1/topics/orders/messages?group=g&wait=soon", "", "", 400, "INVALID_ARGUMENT", "wait"},
		{"commit unknown topic", "POST", "/v1/groups/g/offsets", "application/json", `{"offsets":[{"topic":"nope","queue":0,"offset":1}]}`, 404, "NOT_FOUND", "nope"},
		{"commit negative", "POST", "/v1/groups/g/offsets", "application/json", `{"offsets":[{"topic":"orders","queue":0,"offset":-1}]}`, 400, "INVALID_ARGUMENT", "negative"},
		{"wrong method", "DELETE", "/v1/topics/orders/messages", "", "", 405, "METHOD_NOT_ALLOWED", "GET, POST"},
		{"no endpoint", "GET", "/v2/whatever", "", "", 404, "NOT_FOUND", "no endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct {
				Error struct{ Code, Message string }
			}
			code := call(t, tc.method, base+tc.path, tc.ct, tc.body, nil, &e)
			if code != tc.status || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.text) {
				t.Errorf("%d %+v; want %d %s mentioning %q", code, e.Error, tc.status, tc.code, tc.text)
			}
		})
	}
	// Nothing of the refused requests was stored.
	var p pulled
	call(t, "GET", base+"/v1/topics/orders/messages?group=g", "", "", nil, &p)
	if len(p.Messages) != 0 {
		t.Errorf("refused requests stored %d messages", len(p.Messages))
	}
}
