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

// TestRetriedKeylessIDStoredOnce: a produce retried with the same id and
// neither key nor queue lands in the same queue each time, so the store's
// de-duplication by id answers the first offset and stores it once (it went
// round robin: 2 copies in 5 tries on a topic of 2 queues).
func TestRetriedKeylessIDStoredOnce(t *testing.T) {
	base := node(t)
	var first result
	for try := range 5 {
		var out struct{ Results []result }
		ct, body, header := "application/json", `{"messages":[{"id":"order-42","body":"pay 42"}]}`, map[string]string(nil)
		if try%2 == 1 { // the raw form, with Ferry-Id
			ct, body, header = "text/plain", "pay 42", map[string]string{"Ferry-Id": "order-42"}
		}
		if code := call(t, "POST", base+"/v1/topics/orders/messages", ct, body, header, &out); code != 200 || len(out.Results) != 1 {
			t.Fatalf("try %d: %d %+v", try, code, out)
		}
		r := out.Results[0]
		if try == 0 {
			first = r
		} else if r.Queue != first.Queue || r.Offset != first.Offset {
			t.Errorf("try %d stored at queue %d offset %d, the first at queue %d offset %d", try, r.Queue, r.Offset, first.Queue, first.Offset)
		}
	}
	// Other keyless ids spread over both queues.
	queues := map[int32]bool{}
	for i := range 20 {
		var out struct{ Results []result }
		call(t, "POST", base+"/v1/topics/orders/messages", "application/json", fmt.Sprintf(`{"messages":[{"id":"other-%d","body":"x"}]}`, i), nil, &out)
		queues[out.Results[0].Queue] = true
	}
	if len(queues) != 2 {
		t.Errorf("20 keyless ids all went to queues %v", queues)
	}
	var p pulled
	call(t, "GET", base+"/v1/topics/orders/messages?group=g&max=1000", "", "", nil, &p)
	n := 0
	for _, m := range p.Messages {
		if m.ID == "order-42" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("order-42 stored %d times in 5 tries, want once", n)
	}
}

// TestJSONProduceStrict: a JSON produce with trailing garbage, a null
// message, or bytes that are not UTF-8 (which encoding/json silently turns
// into U+FFFD) is refused with 400 naming the problem, and nothing of it is
// stored.
func TestJSONProduceStrict(t *testing.T) {
	base := node(t)
	for _, tc := range []struct{ name, body, text string }{
		{"trailing garbage", `{"messages":[{"body":"a"}]} garbage`, "more after its object"},
		{"second object", `{"messages":[{"body":"a"}]}{"messages":[{"body":"b"}]}`, "more after its object"},
		{"null message", `{"messages":[null]}`, "message 0 is null"},
		{"null among messages", `{"messages":[{"body":"a"},null]}`, "message 1 is null"},
		{"body not UTF-8", "{\"messages\":[{\"body\":\"caf\xe9\"}]}", "body_base64"},
		{"key not UTF-8", "{\"messages\":[{\"key\":\"\xff\",\"body\":\"x\"}]}", "not valid UTF-8 (at byte 21)"},
		{"header not UTF-8", "{\"messages\":[{\"headers\":{\"h\":\"\xc3\"},\"body\":\"x\"}]}", "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct {
				Error struct{ Code, Message string }
			}
			code := call(t, "POST", base+"/v1/topics/orders/messages", "application/json", tc.body, nil, &e)
			if code != 400 || e.Error.Code != "INVALID_ARGUMENT" || !strings.Contains(e.Error.Message, tc.text) {
				t.Errorf("%d %+v; want 400 INVALID_ARGUMENT mentioning %q", code, e.Error, tc.text)
			}
		})
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if code := call(t, "POST", base+"/v1/groups/g/offsets", "application/json", `{"offsets":[{"topic":"orders","queue":0,"offset":0}]} x`, nil, &e); code != 400 || !strings.Contains(e.Error.Message, "more after its object") {
		t.Errorf("commit with trailing garbage: %d %+v", code, e.Error)
	}
	// Negative control: valid JSON with trailing white space, and a body
	// that is not text sent as body_base64, are stored.
	var out struct{ Results []result }
	if code := call(t, "POST", base+"/v1/topics/orders/messages", "application/json", "{\"messages\":[{\"body_base64\":\"Y2Fm6Q==\"},{\"body\":\"caf\u00e9\"}]} \n", nil, &out); code != 200 || len(out.Results) != 2 {
		t.Fatalf("good produce: %d %+v", code, out)
	}
	var p pulled
	call(t, "GET", base+"/v1/topics/orders/messages?group=g&max=100", "", "", nil, &p)
	if len(p.Messages) != 2 {
		t.Fatalf("stored %d messages, want only the 2 good ones", len(p.Messages))
	}
}
