// Package jaegertest lets tests export spans to a real Jaeger and read the
// traces back through Jaeger's query API (/api/traces/{id}), the one the
// Jaeger UI uses.
//
// CI starts Jaeger from .ci/run (scripts/jaeger.sh) and exports its
// addresses; a developer runs `eval "$(scripts/jaeger.sh start)"` first.
// Without them a test that needs Jaeger is skipped, except under CI=true,
// where it fails: a missing Jaeger must not turn a CI run green.
package jaegertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// Environment variables naming a running Jaeger.
const (
	// EnvQuery is the base URL of Jaeger's query API, e.g.
	// http://127.0.0.1:16686.
	EnvQuery = "FERRY_JAEGER_QUERY"
	// EnvOTLP is Jaeger's OTLP/gRPC receiver, host:port (127.0.0.1:4317).
	EnvOTLP = "FERRY_OTLP_ENDPOINT"
	// EnvOTLPHTTP is Jaeger's OTLP/HTTP receiver as a URL
	// (http://127.0.0.1:4318).
	EnvOTLPHTTP = "FERRY_OTLP_HTTP_ENDPOINT"
)

// Jaeger is a running Jaeger.
type Jaeger struct {
	Query    string // base URL of the query API
	OTLP     string // OTLP/gRPC endpoint, host:port
	OTLPHTTP string // OTLP/HTTP endpoint URL; "" when not given
}

// Require returns the Jaeger named by the environment. It skips the test
// when none is named, unless CI is set, where it fails the test.
func Require(t testing.TB) Jaeger {
	t.Helper()
	j := Jaeger{Query: strings.TrimRight(os.Getenv(EnvQuery), "/"), OTLP: os.Getenv(EnvOTLP), OTLPHTTP: os.Getenv(EnvOTLPHTTP)}
	if j.Query == "" || j.OTLP == "" {
		msg := fmt.Sprintf("no Jaeger: %s and %s are not set (run `eval \"$(scripts/jaeger.sh start)\"`)", EnvQuery, EnvOTLP)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI must start Jaeger (.ci/run)")
		}
		t.Skip(msg)
	}
	return j
}

// Trace is one trace as Jaeger's /api/traces/{id} returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is one span of a Trace. Times are microseconds.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID"`
}

// Reference types of a Span: its parent is CHILD_OF; OpenTelemetry span
// links show as FOLLOWS_FROM.
const (
	RefChildOf     = "CHILD_OF"
	RefFollowsFrom = "FOLLOWS_FROM"
)

// Reference points from a span to another.
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// KeyValue is a tag; Value is a string, bool, json.Number or nested value.
type KeyValue struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Log is a span event; its name is the field "event".
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Process is the process that reported spans (the OpenTelemetry resource).
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

// Named returns the spans named name, in the order Jaeger gave them.
func (t *Trace) Named(name string) []*Span {
	var out []*Span
	for i := range t.Spans {
		if t.Spans[i].OperationName == name {
			out = append(out, &t.Spans[i])
		}
	}
	return out
}

// Span returns the span with id spanID, nil if the trace has none.
func (t *Trace) Span(spanID string) *Span {
	for i := range t.Spans {
		if t.Spans[i].SpanID == spanID {
			return &t.Spans[i]
		}
	}
	return nil
}

// Parent returns s's parent span (its CHILD_OF reference), nil for a root
// or a parent that has not arrived.
func (t *Trace) Parent(s *Span) *Span {
	for _, r := range s.References {
		if r.RefType == RefChildOf {
			return t.Span(r.SpanID)
		}
	}
	return nil
}

// Process returns the process that reported s.
func (t *Trace) Process(s *Span) Process { return t.Processes[s.ProcessID] }

// ParentID is the span id of s's parent, "" for a root.
func (s *Span) ParentID() string {
	for _, r := range s.References {
		if r.RefType == RefChildOf {
			return r.SpanID
		}
	}
	return ""
}

// Links are the span ids s links to (FOLLOWS_FROM references).
func (s *Span) Links() []string {
	var ids []string
	for _, r := range s.References {
		if r.RefType == RefFollowsFrom {
			ids = append(ids, r.SpanID)
		}
	}
	return ids
}

// Tag returns the value of s's tag key as text ("" and false when absent).
func (s *Span) Tag(key string) (string, bool) { return tag(s.Tags, key) }

// Tag returns the value of the process tag key as text.
func (p Process) Tag(key string) (string, bool) { return tag(p.Tags, key) }

// Events returns the names of s's events (logs), in order.
func (s *Span) Events() []string {
	var names []string
	for _, l := range s.Logs {
		if v, ok := tag(l.Fields, "event"); ok {
			names = append(names, v)
		}
	}
	return names
}

// Event returns the fields of s's first event named name, as text.
func (s *Span) Event(name string) (map[string]string, bool) {
	for _, l := range s.Logs {
		if v, _ := tag(l.Fields, "event"); v == name {
			fields := map[string]string{}
			for _, f := range l.Fields {
				fields[f.Key] = fmt.Sprint(f.Value)
			}
			return fields, true
		}
	}
	return nil, false
}

func tag(kvs []KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return fmt.Sprint(kv.Value), true
		}
	}
	return "", false
}

// GetTrace fetches a trace once. It returns nil and no error when Jaeger
// does not have the trace (yet).
func (j Jaeger) GetTrace(ctx context.Context, traceID string) (*Trace, error) {
	traces, err := getTraces(ctx, j.Query+"/api/traces/"+traceID)
	if err != nil || len(traces) == 0 {
		return nil, err
	}
	return &traces[0], nil
}

// WaitTrace polls Jaeger until the trace traceID (32 hex digits) satisfies
// done, and returns it; spans arrive some hundreds of milliseconds after
// they are exported, and those of other processes later still. It fails
// the test after timeout, showing the spans that did arrive.
func (j Jaeger) WaitTrace(t testing.TB, traceID string, timeout time.Duration, done func(*Trace) bool) *Trace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *Trace
	var lastErr error
	for {
		tr, err := j.GetTrace(ctx, traceID)
		if err == nil && tr != nil {
			last = tr
			if done(tr) {
				return tr
			}
		} else if err != nil && ctx.Err() == nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("trace %s not complete in Jaeger after %v (last error: %v); it has:\n%s", traceID, timeout, lastErr, Describe(last))
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Describe lists a trace's spans, one a line, as a tree, for failure
// messages.
func Describe(t *Trace) string {
	if t == nil {
		return "  (no trace)\n"
	}
	var b strings.Builder
	children := map[string][]*Span{}
	var roots []*Span
	for i := range t.Spans {
		s := &t.Spans[i]
		if p := s.ParentID(); p != "" && t.Span(p) != nil {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var walk func(s *Span, depth int)
	walk = func(s *Span, depth int) {
		fmt.Fprintf(&b, "  %s%s [%s] span=%s parent=%s", strings.Repeat("  ", depth), s.OperationName, t.Process(s).ServiceName, s.SpanID, s.ParentID())
		for _, kv := range s.Tags {
			if !strings.HasPrefix(kv.Key, "otel.") && !strings.HasPrefix(kv.Key, "span.") && !strings.HasPrefix(kv.Key, "rpc.") {
				fmt.Fprintf(&b, " %s=%v", kv.Key, kv.Value)
			}
		}
		if ev := s.Events(); len(ev) > 0 {
			fmt.Fprintf(&b, " events=%v", ev)
		}
		if l := s.Links(); len(l) > 0 {
			fmt.Fprintf(&b, " links=%v", l)
		}
		b.WriteByte('\n')
		for _, c := range children[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// Operations returns the operation (span) names Jaeger knows for service,
// as the UI's operation list shows them (/api/services/{service}/operations).
func (j Jaeger) Operations(ctx context.Context, service string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.Query+"/api/services/"+service+"/operations", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/services/%s/operations: %s: %s", service, resp.Status, body)
	}
	var out struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("GET /api/services/%s/operations: decode: %w", service, err)
	}
	return out.Data, nil
}

// FindTraces returns the traces of service, from the last hour, that hold
// a span with every tag of tags (Jaeger's search, /api/traces), at most
// limit of them.
func (j Jaeger) FindTraces(ctx context.Context, service string, tags map[string]string, limit int) ([]Trace, error) {
	tj, err := json.Marshal(tags)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	v := url.Values{
		"service": {service},
		"tags":    {string(tj)},
		"start":   {fmt.Sprint(now.Add(-time.Hour).UnixMicro())},
		"end":     {fmt.Sprint(now.Add(time.Minute).UnixMicro())},
		"limit":   {fmt.Sprint(limit)},
	}
	return getTraces(ctx, j.Query+"/api/traces?"+v.Encode())
}

// getTraces GETs u from Jaeger's query API and decodes the traces it
// answers; none and no error when Jaeger answers 404 (not there yet).
func getTraces(ctx context.Context, u string) ([]Trace, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", u, resp.Status, body)
	}
	var out struct {
		Data []Trace `json:"data"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("GET %s: decode: %w", u, err)
	}
	return out.Data, nil
}
