package httptransport_test

import (
	"slices"
	"strings"
	"testing"
)

type apiErr struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// The admin endpoints on a node whose transport is the http plugin: topics
// are created, grown, listed, described and deleted; groups listed,
// described, reset (a pull of the group then starts at the reset offset) and
// deleted; each refusal is one JSON error with its status.
func TestAdminEndpoints(t *testing.T) {
	base := node(t)
	type topic struct {
		Name    string   `json:"name"`
		Queues  int32    `json:"queues"`
		Groups  []string `json:"groups"`
		Offsets []struct {
			Queue int32  `json:"queue"`
			Start int64  `json:"start"`
			End   int64  `json:"end"`
			Bytes *int64 `json:"bytes"`
		} `json:"queue_offsets"`
		Bytes        *int64 `json:"bytes"`
		BytesUnknown bool   `json:"bytes_unknown"`
	}
	refused := func(method, path, body string, status int, code, want string) {
		t.Helper()
		var e apiErr
		if got := call(t, method, base+path, "application/json", body, nil, &e); got != status || e.Error.Code != code || !strings.Contains(e.Error.Message, want) {
			t.Errorf("%s %s %s: %d %+v, want %d %s with %q", method, path, body, got, e, status, code, want)
		}
	}

	var tp topic
	if code := call(t, "POST", base+"/v1/topics", "application/json", `{"name":"clicks","queues":2}`, nil, &tp); code != 201 || tp.Name != "clicks" || tp.Queues != 2 {
		t.Fatalf("create: %d %+v", code, tp)
	}
	refused("POST", "/v1/topics", `{"name":"clicks","queues":2}`, 400, "INVALID_ARGUMENT", `topic "clicks" already exists (with 2 queues)`)
	refused("POST", "/v1/topics", `{"name":"bad name","queues":1}`, 400, "INVALID_ARGUMENT", `character ' ' at position 4`)
	refused("POST", "/v1/topics", `{"name":"x","queues":1,"retention":"1h"}`, 400, "INVALID_ARGUMENT", `unknown field "retention"`)
	if code := call(t, "PATCH", base+"/v1/topics/clicks", "application/json", `{"queues":3}`, nil, &tp); code != 200 || tp.Queues != 3 {
		t.Fatalf("alter: %d %+v", code, tp)
	}
	refused("PATCH", "/v1/topics/clicks", `{"queues":1}`, 400, "INVALID_ARGUMENT", `has 3 queues; it cannot shrink to 1`)
	refused("PATCH", "/v1/topics/nope", `{"queues":4}`, 404, "NOT_FOUND", `unknown topic "nope"`)
	refused("PUT", "/v1/topics", ``, 405, "METHOD_NOT_ALLOWED", `allowed: GET, POST`)
	var list struct{ Topics []topic }
	if code := call(t, "GET", base+"/v1/topics", "", "", nil, &list); code != 200 || len(list.Topics) != 3 || list.Topics[0].Name != "clicks" || list.Topics[0].Queues != 3 {
		t.Errorf("list: %d %+v", code, list)
	}

	// Five messages on queue 0; group billing commits all of them.
	var prod struct{ Results []result }
	if code := call(t, "POST", base+"/v1/topics/clicks/messages", "application/json",
		`{"messages":[{"queue":0,"body":"a"},{"queue":0,"body":"b"},{"queue":0,"body":"c"},{"queue":0,"body":"d"},{"queue":0,"body":"e"}]}`, nil, &prod); code != 200 || len(prod.Results) != 5 {
		t.Fatalf("produce: %d %+v", code, prod)
	}
	if code := call(t, "POST", base+"/v1/groups/billing/offsets", "application/json", `{"offsets":[{"topic":"clicks","queue":0,"offset":5}]}`, nil, nil); code != 200 {
		t.Fatalf("commit: %d", code)
	}
	if code := call(t, "GET", base+"/v1/topics/clicks", "", "", nil, &tp); code != 200 || len(tp.Offsets) != 3 || tp.Offsets[0].End != 5 || !slices.Equal(tp.Groups, []string{"billing"}) {
		t.Errorf("describe topic: %d %+v", code, tp)
	}
	// Bytes per queue: the five bodies on queue 0 take room, the empty queues
	// none, and the topic's bytes are their sum.
	if len(tp.Offsets) == 3 {
		b0, b1 := tp.Offsets[0].Bytes, tp.Offsets[1].Bytes
		if b0 == nil || *b0 < 5 || b1 == nil || *b1 != 0 || tp.Bytes == nil || *tp.Bytes != *b0 || tp.BytesUnknown {
			t.Errorf("describe topic bytes: queue 0 %v, queue 1 %v, topic %v (unknown %v); want queue 0 >= 5, queue 1 0, topic = queue 0", b0, b1, tp.Bytes, tp.BytesUnknown)
		}
	}
	refused("GET", "/v1/topics/nope", ``, 404, "NOT_FOUND", `unknown topic "nope"`)

	var groups struct {
		Groups []struct {
			Name    string   `json:"name"`
			Members int32    `json:"members"`
			Topics  []string `json:"topics"`
			Lag     int64    `json:"lag"`
		} `json:"groups"`
	}
	if code := call(t, "GET", base+"/v1/groups", "", "", nil, &groups); code != 200 || len(groups.Groups) != 1 || groups.Groups[0].Name != "billing" ||
		!slices.Equal(groups.Groups[0].Topics, []string{"clicks"}) || groups.Groups[0].Lag != 0 {
		t.Errorf("list groups: %d %+v", code, groups)
	}
	type group struct {
		Group  string `json:"group"`
		Queues []struct {
			Topic     string `json:"topic"`
			Queue     int32  `json:"queue"`
			End       int64  `json:"end"`
			Committed int64  `json:"committed"`
			Lag       int64  `json:"lag"`
		} `json:"queues"`
		Internal []struct {
			Topic    string `json:"topic"`
			Messages int64  `json:"messages"`
		} `json:"internal_topics"`
	}
	var g group
	if code := call(t, "GET", base+"/v1/groups/billing", "", "", nil, &g); code != 200 || len(g.Queues) != 3 || g.Queues[0].Committed != 5 || g.Queues[1].Committed != -1 || len(g.Internal) != 2 {
		t.Errorf("describe group: %d %+v", code, g)
	}
	refused("GET", "/v1/groups/nobody", ``, 404, "NOT_FOUND", `unknown group "nobody"`)

	// Reset queue 0 to offset 2: a pull of the group starts there.
	var reset struct {
		Queues []struct {
			Queue               int32
			Previous, Committed int64
		} `json:"queues"`
	}
	if code := call(t, "POST", base+"/v1/groups/billing/reset", "application/json", `{"topic":"clicks","to":"offset","offset":2,"queues":[0]}`, nil, &reset); code != 200 ||
		len(reset.Queues) != 1 || reset.Queues[0].Previous != 5 || reset.Queues[0].Committed != 2 {
		t.Fatalf("reset: %d %+v", code, reset)
	}
	var p pulled
	if code := call(t, "GET", base+"/v1/topics/clicks/messages?group=billing&max=10&wait=1s", "", "", nil, &p); code != 200 || len(p.Messages) != 3 || p.Messages[0].Offset != 2 || p.Messages[0].Queue != 0 {
		t.Errorf("pull after the reset: %d %+v; want offsets 2, 3, 4 of queue 0", code, p)
	}
	refused("POST", "/v1/groups/billing/reset", `{"topic":"clicks","to":"offset","offset":9}`, 400, "INVALID_ARGUMENT", `offset 9 is outside queue clicks/0, which holds offsets 0 to 4`)
	// By time (a dry run): before everything, queue 0's start.
	if code := call(t, "POST", base+"/v1/groups/billing/reset", "application/json", `{"topic":"clicks","to":"time","time":"2001-01-01T00:00:00Z","queues":[0],"dry_run":true}`, nil, &reset); code != 200 ||
		len(reset.Queues) != 1 || reset.Queues[0].Previous != 2 || reset.Queues[0].Committed != 0 {
		t.Errorf("reset by time (dry run): %d %+v", code, reset)
	}
	refused("POST", "/v1/groups/billing/reset", `{"topic":"clicks","to":"sideways"}`, 400, "INVALID_ARGUMENT", `"to" is "sideways"`)
	refused("POST", "/v1/groups/billing/reset", `{"topic":"%RETRY%billing","to":"latest"}`, 400, "INVALID_ARGUMENT", `internal topic`)
	refused("POST", "/v1/groups/nobody/reset", `{"topic":"clicks","to":"latest"}`, 404, "NOT_FOUND", `unknown group "nobody"`)
	if code := call(t, "POST", base+"/v1/groups/billing/reset", "application/json", `{"topic":"clicks","to":"latest","dry_run":true}`, nil, &reset); code != 200 || len(reset.Queues) != 3 {
		t.Errorf("dry run: %d %+v", code, reset)
	}
	if call(t, "GET", base+"/v1/groups/billing", "", "", nil, &g); g.Queues[0].Committed != 2 {
		t.Errorf("a dry run moved the group to %d", g.Queues[0].Committed)
	}

	// Topic delete: refused while billing consumes it, then forced.
	refused("DELETE", "/v1/topics/clicks", ``, 400, "INVALID_ARGUMENT", `topic "clicks" is consumed by group(s) billing`)
	refused("DELETE", "/v1/topics/orders?force=true", ``, 400, "INVALID_ARGUMENT", `declared in the pipeline's topics`)
	refused("DELETE", "/v1/topics/%25DLQ%25billing?force=true", ``, 400, "INVALID_ARGUMENT", `internal topic`)
	refused("DELETE", "/v1/topics/clicks?force=maybe", ``, 400, "INVALID_ARGUMENT", `force="maybe"`)
	var del struct {
		Deleted bool     `json:"deleted"`
		Groups  []string `json:"groups"`
	}
	if code := call(t, "DELETE", base+"/v1/topics/clicks?force=true", "", "", nil, &del); code != 200 || !del.Deleted || !slices.Equal(del.Groups, []string{"billing"}) {
		t.Fatalf("delete topic: %d %+v", code, del)
	}
	refused("POST", "/v1/topics/clicks/messages", `{"messages":[{"body":"late"}]}`, 404, "NOT_FOUND", `unknown topic "clicks"`)
	if call(t, "GET", base+"/v1/topics", "", "", nil, &list); len(list.Topics) != 2 {
		t.Errorf("list after the delete: %+v", list)
	}

	// Group delete.
	if code := call(t, "DELETE", base+"/v1/groups/billing", "", "", nil, nil); code != 200 {
		t.Fatalf("delete group: %d", code)
	}
	refused("GET", "/v1/groups/billing", ``, 404, "NOT_FOUND", `unknown group "billing"`)
	refused("DELETE", "/v1/groups/billing", ``, 404, "NOT_FOUND", `unknown group "billing"`)
}

// A topic's own settings over the http transport (docs/http.md): create and
// alter take them and answer them, describe shows them; a produce above the
// topic's max_message_bytes is 400 INVALID_ARGUMENT naming the topic and the
// limit, and is taken once an alter raises it; this node's memory store has
// no retention per topic, so a create asking for one is refused, naming
// what the store lacks, and creates nothing.
func TestAdminTopicSettings(t *testing.T) {
	base := node(t)
	type topic struct {
		Name     string `json:"name"`
		Queues   int32  `json:"queues"`
		Settings *struct {
			RetentionBytes  int64  `json:"retention_bytes"`
			RetentionAge    string `json:"retention_age"`
			MaxMessageBytes int64  `json:"max_message_bytes"`
		} `json:"settings"`
	}
	var tp topic
	if code := call(t, "POST", base+"/v1/topics", "application/json", `{"name":"small","queues":1,"settings":{"max_message_bytes":100}}`, nil, &tp); code != 201 || tp.Settings == nil || tp.Settings.MaxMessageBytes != 100 {
		t.Fatalf("create with max_message_bytes: %d %+v", code, tp)
	}
	body := `{"messages":[{"body":"` + strings.Repeat("x", 150) + `"}]}`
	var e apiErr
	if code := call(t, "POST", base+"/v1/topics/small/messages", "application/json", body, nil, &e); code != 400 || e.Error.Code != "INVALID_ARGUMENT" ||
		!strings.Contains(e.Error.Message, `topic "small"'s max_message_bytes of 100`) {
		t.Errorf("a 150-byte produce to small (max 100): %d %+v", code, e)
	}
	if code := call(t, "POST", base+"/v1/topics/orders/messages", "application/json", body, nil, nil); code != 200 {
		t.Errorf("control: the same produce to orders (no setting): %d", code)
	}
	if code := call(t, "PATCH", base+"/v1/topics/small", "application/json", `{"settings":{"max_message_bytes":200}}`, nil, &tp); code != 200 || tp.Queues != 1 || (tp.Settings == nil || tp.Settings.MaxMessageBytes != 200) {
		t.Fatalf("alter max_message_bytes: %d %+v", code, tp)
	}
	if code := call(t, "POST", base+"/v1/topics/small/messages", "application/json", body, nil, nil); code != 200 {
		t.Errorf("the 150-byte produce after raising max_message_bytes to 200: %d", code)
	}
	tp = topic{}
	if code := call(t, "GET", base+"/v1/topics/small", "", "", nil, &tp); code != 200 || (tp.Settings == nil || tp.Settings.MaxMessageBytes != 200) {
		t.Errorf("describe: %d %+v", code, tp)
	}
	e = apiErr{}
	if code := call(t, "POST", base+"/v1/topics", "application/json", `{"name":"kept","queues":1,"settings":{"retention_bytes":4096}}`, nil, &e); code != 501 || e.Error.Code != "UNSUPPORTED" ||
		!strings.Contains(e.Error.Message, "no retention per topic (sdk.TopicRetainer)") || !strings.Contains(e.Error.Message, `topic "kept"`) {
		t.Errorf("create with retention_bytes on a memory store: %d %+v", code, e)
	}
	if code := call(t, "GET", base+"/v1/topics/kept", "", "", nil, nil); code != 404 {
		t.Errorf("the refused topic exists: %d", code)
	}
	e = apiErr{}
	if code := call(t, "PATCH", base+"/v1/topics/small", "application/json", `{"settings":{"retention_age":"soon"}}`, nil, &e); code != 400 || !strings.Contains(e.Error.Message, "settings.retention_age") {
		t.Errorf("alter with a bad retention_age: %d %+v", code, e)
	}
}
