package httptransport_test

import (
	"fmt"
	"strings"
	"testing"
)

// badRequest is one request the transport must refuse with 400 and a reason.
type badRequest struct {
	name, method, path, ct, body string
	header                       map[string]string
	text                         string // in the error message
}

// invalidUTF8 are requests whose path, query, Ferry-* headers or JSON body
// carry bytes that are not UTF-8 (issue 13, items 7 and 10).
var invalidUTF8 = []badRequest{
	{name: "topic in path", method: "GET", path: "/v1/topics/%ff/messages?group=g", text: "path"},
	{name: "produce topic in path", method: "POST", path: "/v1/topics/or%c3ders/messages", ct: "text/plain", body: "x", text: "path"},
	{name: "group in query", method: "GET", path: "/v1/topics/orders/messages?group=%ff", text: "group"},
	{name: "key header", method: "POST", path: "/v1/topics/orders/messages", ct: "text/plain", body: "x", header: map[string]string{"Ferry-Key": "\xff"}, text: "Ferry-Key"},
	{name: "id header", method: "POST", path: "/v1/topics/orders/messages", ct: "text/plain", body: "x", header: map[string]string{"Ferry-Id": "a\xfe"}, text: "Ferry-Id"},
	{name: "message header", method: "POST", path: "/v1/topics/orders/messages", ct: "text/plain", body: "x", header: map[string]string{"Ferry-Header-Trace": "\xc3("}, text: "Ferry-Header-Trace"},
	{name: "group in commit path", method: "POST", path: "/v1/groups/%ff/offsets", ct: "application/json", body: `{"offsets":[{"topic":"orders","queue":0,"offset":0}]}`, text: "path"},
	{name: "topic in offsets query", method: "GET", path: "/v1/groups/g/offsets?topic=%ff", text: "topic"},
	{name: "topic in metadata query", method: "GET", path: "/v1/metadata?topic=%80", text: "topic"},
	{name: "control character in group", method: "GET", path: "/v1/topics/orders/messages?group=a%00b", text: "control character"},
}

// TestInvalidUTF8NeverRestartsTheTransport sends 30 requests with invalid
// UTF-8, each followed by a good produce, to the http transport running as
// its own process: every bad one gets 400 naming what is wrong, every good
// one succeeds, and the plugin process is the same one throughout (a string
// that cannot be marshalled used to break the plugin's link to the core, and
// the host restarted the transport, dropping every client's connection).
func TestInvalidUTF8NeverRestartsTheTransport(t *testing.T) {
	base, e := nodeEngine(t, "")
	pid := e.Transport().Pid()
	for i := range 30 {
		tc := invalidUTF8[i%len(invalidUTF8)]
		var er struct {
			Error struct{ Code, Message string }
		}
		code := call(t, tc.method, base+tc.path, tc.ct, tc.body, tc.header, &er)
		if code != 400 || er.Error.Code != "INVALID_ARGUMENT" || !strings.Contains(er.Error.Message, tc.text) {
			t.Errorf("bad request %d (%s): %d %+v; want 400 INVALID_ARGUMENT mentioning %q", i, tc.name, code, er.Error, tc.text)
		}
		var out struct{ Results []result }
		body := fmt.Sprintf(`{"messages":[{"id":"good-%d","body":"good %d"}]}`, i, i)
		if code := call(t, "POST", base+"/v1/topics/orders/messages", "application/json", body, nil, &out); code != 200 || len(out.Results) != 1 {
			t.Errorf("good request %d after %s: %d %+v", i, tc.name, code, out)
		}
	}
	if got := e.Transport().Pid(); got != pid || e.Transport().Restarts() != 0 {
		t.Fatalf("transport pid %d → %d, restarts %d: a client's request restarted the plugin", pid, got, e.Transport().Restarts())
	}
	// The 30 good messages are stored, nothing of the bad ones.
	seen := map[string]bool{}
	for range 10 {
		var p pulled
		call(t, "GET", base+"/v1/topics/orders/messages?group=check&max=1000", "", "", nil, &p)
		for _, m := range p.Messages {
			seen[m.ID] = true
		}
		if len(seen) >= 30 {
			break
		}
	}
	if len(seen) != 30 {
		t.Fatalf("stored %d messages, want the 30 good ones: %v", len(seen), seen)
	}
}
