package httptransport_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// slowPost starts a raw produce with a Content-Length of n and sends only
// part of its body, then waits; it returns the connection to finish or
// abandon it.
func slowPost(t *testing.T, base string, n int, part string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/topics/orders/messages HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", n, part)
	return conn
}

// answer reads the HTTP answer on conn, waiting up to a minute.
func answer(t *testing.T, conn net.Conn) (*http.Response, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// metric returns the value of one sample of the transport's /metrics.
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics:\n%s", sample, b)
	return 0
}

// TestSlowBodyIs408: a body that does not arrive within body_timeout is
// answered 408 and its connection closed (it held the connection for as
// long as the client liked); other clients are served meanwhile.
func TestSlowBodyIs408(t *testing.T) {
	base, _ := nodeEngine(t, ", body_timeout: 1s")
	conn := slowPost(t, base, 100, "only ten b")
	// Others are served while the slow body is pending.
	if code := call(t, "POST", base+"/v1/topics/orders/messages", "text/plain", "quick", nil, nil); code != 200 {
		t.Fatalf("a quick produce beside the slow one: %d", code)
	}
	resp, body := answer(t, conn)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(body, "body_timeout = 1s") || !strings.Contains(body, "got 10 bytes") {
		t.Fatalf("slow body: %d %s; want 408 naming body_timeout", resp.StatusCode, body)
	}
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection stays open after the 408 (read %d bytes, %v)", n, err)
	}
	if v := metric(t, base, `ferry_http_refused_total{reason="body_timeout"}`); v != 1 {
		t.Errorf("refused body_timeout = %g, want 1", v)
	}
	var p pulled
	call(t, "GET", base+"/v1/topics/orders/messages?group=g", "", "", nil, &p)
	if len(p.Messages) != 1 {
		t.Errorf("stored %d messages, want only the quick one", len(p.Messages))
	}
}

// TestConnectionLimit: past max_connections a request is answered 503 with
// its connection closed; once connections close, requests are served again.
func TestConnectionLimit(t *testing.T) {
	base, _ := nodeEngine(t, ", max_connections: 3")
	// Three clients, each keeping its connection open after a request.
	var clients []*http.Client
	for i := range 3 {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		clients = append(clients, c)
		resp, err := c.Get(base + "/v1/metadata")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("client %d: %d", i, resp.StatusCode)
		}
	}
	fourth := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := fourth.Post(base+"/v1/topics/orders/messages", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "max_connections = 3") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a fourth connection: %d %s %v; want 503 naming max_connections", resp.StatusCode, b, resp.Header)
	}
	clients[0].CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := fourth.Get(base + "/v1/metadata")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d a minute after a connection closed", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := metric(t, base, `ferry_http_refused_total{reason="max_connections"}`); v < 1 {
		t.Errorf("refused max_connections = %g", v)
	}
}

// TestInflightBytesLimit: while a request's body is held, another that would
// pass max_inflight_bytes is answered 429 with nothing stored; once the
// first completes, the second fits.
func TestInflightBytesLimit(t *testing.T) {
	base, _ := nodeEngine(t, ", body_timeout: 5m, max_inflight_bytes: 64KiB")
	const n = 40 << 10 // of the node's max_request_bytes 64KiB
	first := slowPost(t, base, n, "abc")
	deadline := time.Now().Add(60 * time.Second)
	for metric(t, base, "ferry_http_inflight_bytes") < n {
		if time.Now().After(deadline) {
			t.Fatal("the first request's bytes are never in flight")
		}
		time.Sleep(20 * time.Millisecond)
	}
	second := strings.Repeat("y", n)
	var e struct {
		Error struct{ Code, Message string }
	}
	if code := call(t, "POST", base+"/v1/topics/orders/messages", "text/plain", second, nil, &e); code != http.StatusTooManyRequests || !strings.Contains(e.Error.Message, "max_inflight_bytes = 65536") {
		t.Fatalf("second request: %d %+v; want 429 naming max_inflight_bytes", code, e.Error)
	}
	// A small one still fits beside the first.
	if code := call(t, "POST", base+"/v1/topics/orders/messages", "text/plain", "small", nil, nil); code != 200 {
		t.Fatalf("a small request beside the first: %d", code)
	}
	// The first completes (the message limit is 1KiB: 413, after reading).
	if _, err := first.Write([]byte(strings.Repeat("z", n-3))); err != nil {
		t.Fatal(err)
	}
	if resp, body := answer(t, first); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("first request: %d %s", resp.StatusCode, body)
	}
	for metric(t, base, "ferry_http_inflight_bytes") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first request's bytes stay in flight after its answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := call(t, "POST", base+"/v1/topics/orders/messages", "text/plain", second, nil, nil); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("second request alone: %d, want past the in-flight check (413 for its 1KiB message limit)", code)
	}
	if v := metric(t, base, `ferry_http_refused_total{reason="max_inflight_bytes"}`); v != 1 {
		t.Errorf("refused max_inflight_bytes = %g, want 1", v)
	}
}
