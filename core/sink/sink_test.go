package sink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sink"
)

func delivery(body string) *client.Delivery {
	return &client.Delivery{
		Message: &ferryv1.Message{Id: "p1-7~r.t2.15", Topic: "%RETRY%g", Queue: 1, Offset: 3, Key: "k42", Body: []byte(body),
			Headers: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "region": "eu", "ferry-attempt": "2"}},
		ID: "p1-7", Topic: "orders", Queue: 2, Offset: 15, Attempt: 2, Group: "g",
	}
}

func newSink(t *testing.T, cfg config.Sink, out io.Writer) sink.Sink {
	t.Helper()
	s, err := sink.New(cfg, sink.Options{Flow: "f", Out: out})
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestWebhook(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	var bodies []string
	status := http.StatusOK
	retryAfter := ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, bodies = append(got, r), append(bodies, string(b))
		st, ra := status, retryAfter
		mu.Unlock()
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		if st == -1 {
			time.Sleep(500 * time.Millisecond)
		}
		w.WriteHeader(max(st, 200))
		io.WriteString(w, "answer body")
	}))
	defer srv.Close()
	s := newSink(t, config.Sink{Type: "webhook", URL: srv.URL + "/hook", Headers: map[string]string{"Authorization": "Bearer x"}, Timeout: 200 * time.Millisecond}, nil)
	ctx := context.Background()

	if err := s.Deliver(ctx, delivery("hello")); err != nil {
		t.Fatalf("200: %v", err)
	}
	r := got[0]
	for k, want := range map[string]string{
		"Ferry-Id": "p1-7", "Ferry-Topic": "orders", "Ferry-Queue": "2", "Ferry-Offset": "15", "Ferry-Attempt": "2", "Ferry-Key": "k42",
		"Ferry-Group": "g", "Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Ferry-Header-Region": "eu",
		"Authorization": "Bearer x", "Ferry-Header-Ferry-Attempt": "",
	} {
		if v := r.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	if r.Method != http.MethodPost || r.URL.Path != "/hook" || bodies[0] != "hello" {
		t.Errorf("request %s %s body %q", r.Method, r.URL.Path, bodies[0])
	}

	for _, tc := range []struct {
		status     int
		retryAfter string
		permanent  bool
		delay      time.Duration
	}{
		{500, "", false, 0},
		{503, "7", false, 7 * time.Second},
		{429, "", false, 0},
		{404, "", true, 0},
		{400, "", true, 0},
		{-1, "", false, 0}, // times out
	} {
		mu.Lock()
		status, retryAfter = tc.status, tc.retryAfter
		mu.Unlock()
		err := s.Deliver(ctx, delivery("x"))
		if err == nil {
			t.Errorf("status %d: no error", tc.status)
			continue
		}
		if client.IsPermanent(err) != tc.permanent {
			t.Errorf("status %d: %v; permanent = %v, want %v", tc.status, err, client.IsPermanent(err), tc.permanent)
		}
		if tc.delay > 0 && !strings.Contains(err.Error(), "retry after "+tc.delay.String()) {
			t.Errorf("status %d with Retry-After %s: %v", tc.status, tc.retryAfter, err)
		}
		if tc.status > 0 && !strings.Contains(err.Error(), "answer body") {
			t.Errorf("status %d: the error does not quote the answer: %v", tc.status, err)
		}
	}
}

func TestExec(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	s := newSink(t, config.Sink{Type: "exec", Command: "sh", Args: []string{"-c", `cat > "$0.body"; env | grep ^FERRY_ | sort > "$0.env"; test "$FERRY_KEY" != fail || { echo "no good" >&2; exit 3; }`, out}}, nil)
	if err := s.Deliver(context.Background(), delivery("payload")); err != nil {
		t.Fatalf("exit 0: %v", err)
	}
	if b, _ := os.ReadFile(out + ".body"); string(b) != "payload" {
		t.Errorf("stdin was %q", b)
	}
	env, _ := os.ReadFile(out + ".env")
	for _, kv := range []string{"FERRY_ATTEMPT=2", "FERRY_FLOW=f", "FERRY_GROUP=g", "FERRY_ID=p1-7", "FERRY_KEY=k42", "FERRY_OFFSET=15", "FERRY_QUEUE=2", "FERRY_TOPIC=orders"} {
		if !strings.Contains(string(env), kv+"\n") {
			t.Errorf("environment lacks %s:\n%s", kv, env)
		}
	}
	d := delivery("x")
	d.Message.Key = "fail"
	err := s.Deliver(context.Background(), d)
	if err == nil || client.IsPermanent(err) || !strings.Contains(err.Error(), "exit status 3: no good") {
		t.Errorf("exit 3: %v; want a retryable error with the status and stderr", err)
	}

	slow := newSink(t, config.Sink{Type: "exec", Command: "sh", Args: []string{"-c", "sleep 10"}, Timeout: 200 * time.Millisecond}, nil)
	start := time.Now()
	err = slow.Deliver(context.Background(), delivery("x"))
	if err == nil || !strings.Contains(err.Error(), "timed out after 200ms") || time.Since(start) > 3*time.Second {
		t.Errorf("slow command: %v after %v", err, time.Since(start))
	}

	if _, err := sink.New(config.Sink{Type: "exec", Command: "no-such-command-ferry"}, sink.Options{}); err == nil {
		t.Error("exec sink with a missing command: no error")
	}
}

func TestFileAndStdout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "out.jsonl")
	f := newSink(t, config.Sink{Type: "file", Path: path}, nil)
	bin := delivery("")
	bin.Message.Body = []byte{0xff, 0x00}
	for _, d := range []*client.Delivery{delivery("one"), bin} {
		if err := f.Deliver(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	lines := strings.Split(strings.TrimSpace(readFile(t, path)), "\n")
	if len(lines) != 2 {
		t.Fatalf("file has %d lines", len(lines))
	}
	var r0, r1 sink.Record
	if err := errors.Join(json.Unmarshal([]byte(lines[0]), &r0), json.Unmarshal([]byte(lines[1]), &r1)); err != nil {
		t.Fatal(err)
	}
	if r0.ID != "p1-7" || r0.Topic != "orders" || r0.Queue != 2 || r0.Offset != 15 || r0.Attempt != 2 || r0.Key != "k42" || r0.Body != "one" || r0.Headers["region"] != "eu" {
		t.Errorf("record %+v", r0)
	}
	if r1.Body != "" || r1.BodyBase64 != "/wA=" {
		t.Errorf("binary body record %+v", r1)
	}

	var buf bytes.Buffer
	st := newSink(t, config.Sink{Type: "stdout"}, &buf)
	st.Deliver(context.Background(), delivery("hello"))
	if got := buf.String(); got != "f orders/2@15 p1-7 attempt=2 5B\n" {
		t.Errorf("stdout line %q", got)
	}
	buf.Reset()
	body := newSink(t, config.Sink{Type: "stdout", Format: "body"}, &buf)
	body.Deliver(context.Background(), delivery("hello"))
	if buf.String() != "hello\n" {
		t.Errorf("body format %q", buf.String())
	}

	buf.Reset()
	c := newSink(t, config.Sink{Type: "count", Every: 2}, &buf)
	for range 5 {
		c.Deliver(context.Background(), delivery("x"))
	}
	if buf.String() != "f: 2 messages\nf: 4 messages\n" {
		t.Errorf("count output %q", buf.String())
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
