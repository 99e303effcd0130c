package httptransport

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
)

// HTTP headers of a raw produce (a body that is not JSON).
const (
	headerKey    = "Ferry-Key"
	headerID     = "Ferry-Id"
	headerQueue  = "Ferry-Queue"
	headerPrefix = "Ferry-Header-"
)

// api serves the HTTP endpoints; net/http calls its handlers from one
// goroutine per request.
type api struct {
	core     sdk.Core
	cfg      Config
	lim      *limits
	draining context.Context // ends when Serve stops: long polls return
	prefix   string          // of generated message ids
	seq      atomic.Uint64
	rr       atomic.Uint64 // round robin over queues for keyless messages

	mu     sync.Mutex
	topics map[string]topicInfo
}

type topicInfo struct {
	queues int32
	at     time.Time
}

func newAPI(core sdk.Core, cfg Config, draining context.Context) *api {
	return &api{core: core, cfg: cfg, lim: newLimits(cfg), draining: draining, prefix: idPrefix(), topics: map[string]topicInfo{}}
}

// methods dispatches on the HTTP method and answers others with 405.
type methods map[string]http.HandlerFunc

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	var allow []string
	for k := range m {
		allow = append(allow, k)
	}
	slices.Sort(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/topics/{topic}/messages", methods{http.MethodPost: a.produce, http.MethodGet: a.pull})
	mux.Handle("/v1/groups/{group}/offsets", methods{http.MethodPost: a.commit, http.MethodGet: a.offsets})
	mux.Handle("/v1/metadata", methods{http.MethodGet: a.metadata})
	mux.Handle("/metrics", methods{http.MethodGet: a.metrics})
	a.adminRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no endpoint %s; see /v1/metadata, /v1/topics, /v1/topics/{topic}, /v1/topics/{topic}/messages, /v1/groups, /v1/groups/{group}, /v1/groups/{group}/offsets, /v1/groups/{group}/reset", r.URL.Path))
	})
	return a.guard(mux)
}

// JSON shapes of the API.
type (
	messageIn struct {
		ID         string            `json:"id,omitempty"`
		Key        string            `json:"key,omitempty"`
		Queue      *int32            `json:"queue,omitempty"`
		Headers    map[string]string `json:"headers,omitempty"`
		Body       *string           `json:"body,omitempty"`
		BodyBase64 *string           `json:"body_base64,omitempty"`
		raw        []byte            // the body of a raw (not JSON) produce
	}
	produceIn struct {
		Messages []*messageIn `json:"messages"` // pointers: a null is refused
	}
	resultOut struct {
		ID     string `json:"id"`
		Topic  string `json:"topic"`
		Queue  int32  `json:"queue"`
		Offset int64  `json:"offset"`
		Status string `json:"status"`
	}
	produceOut struct {
		Results []resultOut `json:"results"`
	}
	messageOut struct {
		ID             string            `json:"id"`
		Topic          string            `json:"topic"`
		Queue          int32             `json:"queue"`
		Offset         int64             `json:"offset"`
		Key            string            `json:"key,omitempty"`
		Headers        map[string]string `json:"headers,omitempty"`
		Body           *string           `json:"body,omitempty"`
		BodyBase64     *string           `json:"body_base64,omitempty"`
		BornUnixNano   int64             `json:"born_unix_nano"`
		StoredUnixNano int64             `json:"stored_unix_nano"`
	}
	positionOut struct {
		Queue  int32 `json:"queue"`
		Offset int64 `json:"offset"`
	}
	pullOut struct {
		Messages []messageOut `json:"messages"`
		// Next is, per queue, the offset after the last message returned:
		// commit it once they are processed.
		Next []positionOut `json:"next"`
		// Generation is the group's generation, for a pull from its
		// committed offsets: carry it on the commit of these messages.
		Generation uint64 `json:"generation,omitempty"`
	}
	offsetIn struct {
		Topic  string `json:"topic"`
		Queue  int32  `json:"queue"`
		Offset int64  `json:"offset"`
	}
	commitIn struct {
		Offsets []offsetIn `json:"offsets"`
		// Generation, when set, is the group's generation the caller read
		// (a pull's or GET offsets' "generation"): a commit of an older one
		// than the group's (deleted since) is refused, 409
		// STALE_GENERATION. Absent or 0: not checked.
		Generation uint64 `json:"generation"`
	}
	queueOffsetsOut struct {
		Topic     string `json:"topic"`
		Queue     int32  `json:"queue"`
		Start     int64  `json:"start"`
		End       int64  `json:"end"`
		Committed int64  `json:"committed"`
	}
	offsetsOut struct {
		Offsets []queueOffsetsOut `json:"offsets"`
		// Generation is the group's generation (groups.go of the broker).
		Generation uint64 `json:"generation"`
	}
	errorOut struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
)

// apiError is an error answered with an HTTP status and a code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf(format, args...)}
}

func tooLarge(format string, args ...any) error {
	return &apiError{http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf(format, args...)}
}

// statusOf maps the SDK's sentinel names to HTTP statuses.
var statusOf = map[string]int{
	"INVALID_ARGUMENT":      http.StatusBadRequest,
	"CONFIG":                http.StatusBadRequest,
	"NOT_FOUND":             http.StatusNotFound,
	"UNAVAILABLE":           http.StatusServiceUnavailable,
	"CLOSED":                http.StatusServiceUnavailable,
	"NOT_CONFIGURED":        http.StatusServiceUnavailable,
	"REPLICA_NOT_AVAILABLE": http.StatusServiceUnavailable,
	"FULL":                  http.StatusInsufficientStorage,
	"DEADLINE_EXCEEDED":     http.StatusGatewayTimeout,
	"FLUSH_TIMEOUT":         http.StatusGatewayTimeout,
	"REPLICA_TIMEOUT":       http.StatusGatewayTimeout,
	"CANCELED":              http.StatusServiceUnavailable,
	"CORRUPT":               http.StatusInternalServerError,
	"NOT_LEADER":            http.StatusConflict,
	"UNSUPPORTED":           http.StatusNotImplemented,
	"UNAUTHENTICATED":       http.StatusUnauthorized,
	"PERMISSION_DENIED":     http.StatusForbidden,
	"STALE_GENERATION":      http.StatusConflict,
}

func fail(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae.status, ae.code, ae.msg)
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("request body over the limit max_request_bytes = %d", mbe.Limit))
		return
	}
	e := sdk.ErrorToProto(err)
	status, ok := statusOf[e.Code]
	if !ok {
		status, e.Code = http.StatusInternalServerError, "INTERNAL"
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="ferry", charset="UTF-8"`)
	}
	writeError(w, status, e.Code, e.Message)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var out errorOut
	out.Error.Code, out.Error.Message = code, msg
	writeJSON(w, status, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"INTERNAL","message":"cannot encode the answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// queueCount returns the number of queues of topic (cached for a few
// seconds); sdk.ErrNotFound for an unknown topic. autoCreate is set for a
// produce: a node that auto-creates topics creates it.
func (a *api) queueCount(ctx context.Context, topic string, autoCreate bool) (int32, error) {
	a.mu.Lock()
	ti, ok := a.topics[topic]
	a.mu.Unlock()
	if ok && time.Since(ti.at) < topicCacheTTL {
		return ti.queues, nil
	}
	resp, err := a.core.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{topic}, AutoCreate: autoCreate})
	if err != nil {
		return 0, err
	}
	for _, t := range resp.Topics {
		if t.Name == topic && t.Queues > 0 {
			a.mu.Lock()
			a.topics[topic] = topicInfo{queues: t.Queues, at: time.Now()}
			a.mu.Unlock()
			return t.Queues, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown topic %q", sdk.ErrNotFound, topic)
}

func (a *api) timeout(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), time.Duration(a.cfg.RequestTimeout))
}

// produce stores the request's messages: a JSON {"messages":[...]} when the
// Content-Type is application/json, else the raw body as one message.
func (a *api) produce(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	if err := checkName("topic", topic); err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fail(w, badRequest("timeout must be a positive duration such as 3s, got %q", v))
			return
		}
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	ins, release, err := a.readMessages(w, r)
	defer release()
	if err != nil {
		fail(w, err)
		return
	}
	queues, err := a.queueCount(ctx, topic, true)
	if err != nil {
		fail(w, err)
		return
	}
	now := time.Now().UnixNano()
	msgs := make([]*sdk.Message, len(ins))
	for i, in := range ins {
		m, err := a.message(topic, queues, i, in, now)
		if err != nil {
			fail(w, err)
			return
		}
		msgs[i] = m
	}
	req := &sdk.ProduceRequest{Messages: msgs}
	if telemetry.Enabled() {
		// The first traced hop, as the grpc transport's: a
		// transport.receive span in each sampled message's trace (a
		// message whose traceparent header is sampled), whose ids go on
		// to the core with the request.
		hop := telemetry.StartHop(ctx, tracer, telemetry.SpanTransportReceive, msgs, telemetry.Sampled(msgs),
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(telemetry.AttrTopic.String(topic)))
		defer hop.End()
		ctx = hop.Ctx
		tr := hop.Traced()
		req.TracedIndex, req.TracedSpan = tr.Index, tr.Span
	}
	resp, err := a.core.Produce(ctx, req)
	if err != nil {
		fail(w, err)
		return
	}
	if len(resp.Offsets) != len(msgs) {
		fail(w, fmt.Errorf("broker answered %d offsets for %d messages", len(resp.Offsets), len(msgs)))
		return
	}
	out := produceOut{Results: make([]resultOut, len(msgs))}
	status := strings.TrimPrefix(resp.Status.String(), "STATUS_")
	for i, m := range msgs {
		out.Results[i] = resultOut{ID: m.Id, Topic: topic, Queue: m.Queue, Offset: resp.Offsets[i], Status: status}
	}
	writeJSON(w, http.StatusOK, out)
}

var tracer = telemetry.Tracer(telemetry.ComponentTransport)

// readMessages decodes a produce request's body.
// Its bytes count against max_inflight_bytes until the caller calls release
// (also after an error).
func (a *api) readMessages(w http.ResponseWriter, r *http.Request) (_ []messageIn, release func(), _ error) {
	body, release, err := a.lim.readBody(w, r)
	if err != nil {
		return nil, release, err
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		ins, err := decodeProduce(body)
		return ins, release, err
	}
	in := messageIn{ID: r.Header.Get(headerID), Key: r.Header.Get(headerKey), raw: body}
	if v := r.Header.Get(headerQueue); v != "" {
		q, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return nil, release, badRequest("header %s must be a queue number, got %q", headerQueue, v)
		}
		q32 := int32(q)
		in.Queue = &q32
	}
	for k, vs := range r.Header {
		if name, ok := strings.CutPrefix(k, headerPrefix); ok && name != "" && len(vs) > 0 {
			if in.Headers == nil {
				in.Headers = map[string]string{}
			}
			in.Headers[strings.ToLower(name)] = vs[0]
		}
	}
	return []messageIn{in}, release, nil
}

// decodeProduce decodes a JSON produce request: exactly one object
// {"messages":[...]} of known fields, at least one message, none null, and
// the whole body valid UTF-8 (encoding/json would silently turn bad bytes
// into U+FFFD; a body that is not text travels as body_base64).
func decodeProduce(body []byte) ([]messageIn, error) {
	if !utf8.Valid(body) {
		at := 0
		for at < len(body) {
			r, n := utf8.DecodeRune(body[at:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			at += n
		}
		return nil, badRequest("the JSON body is not valid UTF-8 (at byte %d); send a body that is not text as body_base64", at)
	}
	var in produceIn
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, badRequest("body is not a produce request {\"messages\":[{\"key\",\"headers\",\"body\" or \"body_base64\"}]}: %v", err)
	}
	if off := dec.InputOffset(); len(bytes.TrimSpace(body[off:])) > 0 {
		return nil, badRequest("the JSON body has more after its object (at byte %d): send one {\"messages\":[...]} object", off)
	}
	if len(in.Messages) == 0 {
		return nil, badRequest("no messages: want {\"messages\":[...]} with at least one")
	}
	out := make([]messageIn, len(in.Messages))
	for i, m := range in.Messages {
		if m == nil {
			return nil, badRequest("message %d is null: each message is an object such as {\"body\":\"...\"}", i)
		}
		out[i] = *m
	}
	return out, nil
}

// message turns the i-th message of a request into a broker message with its
// id and queue.
func (a *api) message(topic string, queues int32, i int, in messageIn, born int64) (*sdk.Message, error) {
	if err := checkText(fmt.Sprintf("message %d: id", i), in.ID); err != nil {
		return nil, err
	}
	if err := checkText(fmt.Sprintf("message %d: key", i), in.Key); err != nil {
		return nil, err
	}
	for k, v := range in.Headers {
		if err := checkText(fmt.Sprintf("message %d: header name", i), k); err != nil {
			return nil, err
		}
		if err := checkText(fmt.Sprintf("message %d: header %s", i, k), v); err != nil {
			return nil, err
		}
	}
	body := in.raw
	switch {
	case in.Body != nil && in.BodyBase64 != nil:
		return nil, badRequest("message %d has both body and body_base64", i)
	case in.Body != nil:
		body = []byte(*in.Body)
	case in.BodyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*in.BodyBase64)
		if err != nil {
			return nil, badRequest("message %d: body_base64 is not base64: %v", i, err)
		}
		body = b
	}
	n := len(body)
	for k, v := range in.Headers {
		n += len(k) + len(v)
	}
	if n > int(a.cfg.MaxMessageBytes) {
		return nil, tooLarge("message %d has %d bytes of body and headers, over the limit max_message_bytes = %d", i, n, a.cfg.MaxMessageBytes)
	}
	var q int32
	switch {
	case in.Queue != nil:
		q = *in.Queue
		if q < 0 || q >= queues {
			return nil, badRequest("message %d: topic %q has queues 0..%d, got queue %d", i, topic, queues-1, q)
		}
	case in.Key != "":
		q = hashQueue(in.Key, queues)
	case in.ID != "":
		// A retry of a keyless message with its id lands in the same
		// queue, where the store's de-duplication by id finds it.
		q = hashQueue(in.ID, queues)
	default:
		q = int32((a.rr.Add(1) - 1) % uint64(queues))
	}
	id := in.ID
	if id == "" {
		id = a.prefix + "-" + strconv.FormatUint(a.seq.Add(1), 10)
	}
	return &sdk.Message{Id: id, Topic: topic, Queue: q, Key: in.Key, Headers: in.Headers, Body: body, BornUnixNano: born}, nil
}

// hashQueue picks the queue of a message by its key (or, keyless, its id).
func hashQueue(s string, queues int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return int32(h.Sum32() % uint32(queues))
}

// pull answers GET /v1/topics/{topic}/messages.
func (a *api) pull(w http.ResponseWriter, r *http.Request) {
	topic := r.PathValue("topic")
	qv := r.URL.Query()
	group := qv.Get("group")
	if err := checkName("topic", topic); err != nil {
		fail(w, err)
		return
	}
	if group != "" {
		if err := checkName("group", group); err != nil {
			fail(w, err)
			return
		}
	}
	maxMsgs := defaultPullMessages
	if v := qv.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPullMessages {
			fail(w, badRequest("max must be a number from 1 to %d, got %q", maxPullMessages, v))
			return
		}
		maxMsgs = n
	}
	var wait time.Duration
	if v := qv.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			fail(w, badRequest("wait must be a duration such as 1s, got %q", v))
			return
		}
		wait = min(d, time.Duration(a.cfg.MaxWait))
	}
	encoding := qv.Get("encoding")
	if encoding != "" && encoding != "base64" && encoding != "text" {
		fail(w, badRequest("encoding must be text or base64, got %q", encoding))
		return
	}
	mctx, cancel := a.timeout(r)
	defer cancel()
	queues, err := a.queueCount(mctx, topic, false)
	if err != nil {
		fail(w, err)
		return
	}
	var qs []int32
	for _, v := range qv["queue"] {
		for _, s := range strings.Split(v, ",") {
			q, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
			if err != nil || q < 0 || int32(q) >= queues {
				fail(w, badRequest("queue must be a queue of topic %q (0..%d), got %q", topic, queues-1, s))
				return
			}
			if !slices.Contains(qs, int32(q)) {
				qs = append(qs, int32(q))
			}
		}
	}
	if len(qs) == 0 {
		for q := range queues {
			qs = append(qs, q)
		}
	}
	positions := make([]*ferryv1.FetchPosition, len(qs))
	var generation uint64
	if v := qv.Get("offset"); v != "" {
		off, err := strconv.ParseInt(v, 10, 64)
		if err != nil || off < 0 {
			fail(w, badRequest("offset must be a non-negative number, got %q", v))
			return
		}
		if len(qs) != 1 {
			fail(w, badRequest("offset needs exactly one queue= (the topic has %d queues)", queues))
			return
		}
		positions[0] = &ferryv1.FetchPosition{Queue: qs[0], Offset: off}
	} else {
		if group == "" {
			fail(w, badRequest("a pull needs group= (to start from the group's committed offsets) or queue= and offset="))
			return
		}
		refs := make([]*sdk.QueueRef, len(qs))
		for i, q := range qs {
			refs[i] = &sdk.QueueRef{Topic: topic, Queue: q}
		}
		offs, err := a.core.GetOffsets(mctx, &sdk.GetOffsetsRequest{Group: group, Queues: refs})
		if err != nil {
			fail(w, err)
			return
		}
		generation = offs.Generation
		for i, q := range qs {
			pos := &ferryv1.FetchPosition{Queue: q}
			if i < len(offs.Offsets) {
				o := offs.Offsets[i]
				pos.Offset = o.Start
				if o.Committed >= 0 {
					pos.Offset = max(o.Committed, o.Start)
				}
			}
			positions[i] = pos
		}
	}

	// The poll ends early, empty, when the transport stops.
	pctx, pcancel := context.WithTimeout(r.Context(), wait+time.Duration(a.cfg.RequestTimeout))
	defer pcancel()
	stop := context.AfterFunc(a.draining, pcancel)
	defer stop()
	resp, err := a.core.Fetch(pctx, &sdk.FetchRequest{Topic: topic, Positions: positions, MaxMessages: int32(maxMsgs), MaxBytes: pullBytes, MaxWaitNanos: int64(wait), Group: group})
	if err != nil {
		if a.draining.Err() != nil {
			resp, err = &sdk.FetchResponse{}, nil
		} else {
			fail(w, err)
			return
		}
	}
	if len(resp.TracedIndex) > 0 {
		// A transport.deliver span in each sampled message's trace, under
		// its broker.deliver.
		hop := telemetry.StartHop(r.Context(), tracer, telemetry.SpanTransportDeliver, resp.Messages,
			telemetry.Traced{Index: resp.TracedIndex, Span: resp.TracedSpan},
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(telemetry.AttrTopic.String(topic), telemetry.AttrGroup.String(group)))
		resp.TracedIndex, resp.TracedSpan = nil, nil
		hop.End()
	}
	if len(resp.Messages) == 0 && len(resp.Errors) > 0 {
		// A damaged stored record at the position (CORRUPT).
		fail(w, sdk.ErrorFromProto(resp.Errors[0].Error))
		return
	}
	next := map[int32]int64{}
	for _, p := range positions {
		next[p.Queue] = p.Offset
	}
	for _, o := range resp.Offsets {
		if next[o.Queue] < o.Start {
			next[o.Queue] = o.Start // retention removed what the group had not read
		}
	}
	out := pullOut{Messages: make([]messageOut, 0, len(resp.Messages)), Generation: generation}
	for _, m := range resp.Messages {
		mo := messageOut{ID: m.Id, Topic: m.Topic, Queue: m.Queue, Offset: m.Offset, Key: m.Key, Headers: m.Headers,
			BornUnixNano: m.BornUnixNano, StoredUnixNano: m.StoredUnixNano}
		if encoding != "base64" && utf8.Valid(m.Body) {
			s := string(m.Body)
			mo.Body = &s
		} else {
			s := base64.StdEncoding.EncodeToString(m.Body)
			mo.BodyBase64 = &s
		}
		out.Messages = append(out.Messages, mo)
		next[m.Queue] = max(next[m.Queue], m.Offset+1)
	}
	for _, q := range qs {
		out.Next = append(out.Next, positionOut{Queue: q, Offset: next[q]})
	}
	writeJSON(w, http.StatusOK, out)
}

// commit answers POST /v1/groups/{group}/offsets: each offset is the next one
// the group will consume on its queue (the last processed offset + 1).
func (a *api) commit(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if err := checkName("group", group); err != nil {
		fail(w, err)
		return
	}
	body, release, err := a.lim.readBody(w, r)
	defer release()
	if err != nil {
		fail(w, err)
		return
	}
	var in commitIn
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		fail(w, badRequest("body is not a commit {\"offsets\":[{\"topic\",\"queue\",\"offset\"}],\"generation\":N}: %v", err))
		return
	}
	if off := dec.InputOffset(); len(bytes.TrimSpace(body[off:])) > 0 {
		fail(w, badRequest("the JSON body has more after its object (at byte %d): send one {\"offsets\":[...]} object", off))
		return
	}
	if len(in.Offsets) == 0 {
		fail(w, badRequest("no offsets to commit"))
		return
	}
	req := &sdk.CommitOffsetsRequest{Group: group, Generation: in.Generation}
	for _, o := range in.Offsets {
		if err := checkName("topic", o.Topic); err != nil {
			fail(w, err)
			return
		}
		req.Offsets = append(req.Offsets, &sdk.GroupOffset{Topic: o.Topic, Queue: o.Queue, Offset: o.Offset})
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	if err := a.core.CommitOffsets(ctx, req); err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"committed": len(req.Offsets)})
}

// offsets answers GET /v1/groups/{group}/offsets?topic=T.
func (a *api) offsets(w http.ResponseWriter, r *http.Request) {
	group, topic := r.PathValue("group"), r.URL.Query().Get("topic")
	if topic == "" {
		fail(w, badRequest("topic= is required"))
		return
	}
	for _, n := range []struct{ what, v string }{{"group", group}, {"topic", topic}} {
		if err := checkName(n.what, n.v); err != nil {
			fail(w, err)
			return
		}
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	queues, err := a.queueCount(ctx, topic, false)
	if err != nil {
		fail(w, err)
		return
	}
	refs := make([]*sdk.QueueRef, queues)
	for q := range queues {
		refs[q] = &sdk.QueueRef{Topic: topic, Queue: q}
	}
	resp, err := a.core.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: group, Queues: refs})
	if err != nil {
		fail(w, err)
		return
	}
	out := offsetsOut{Offsets: []queueOffsetsOut{}, Generation: resp.Generation}
	for _, o := range resp.Offsets {
		out.Offsets = append(out.Offsets, queueOffsetsOut{Topic: o.Topic, Queue: o.Queue, Start: o.Start, End: o.End, Committed: o.Committed})
	}
	writeJSON(w, http.StatusOK, out)
}

// metadata answers GET /v1/metadata[?topic=T...].
// metrics serves the transport's own metrics to a client the node
// authenticates like any other: the request's credentials are checked by
// the core (a metadata call, which needs no permission beyond being a
// known user), so on a node with users /metrics is 401 without them.
func (a *api) metrics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.timeout(r)
	defer cancel()
	if _, err := a.core.Metadata(ctx, &sdk.MetadataRequest{}); err != nil {
		fail(w, err)
		return
	}
	a.lim.metrics().ServeHTTP(w, r)
}

func (a *api) metadata(w http.ResponseWriter, r *http.Request) {
	topics := r.URL.Query()["topic"]
	for _, t := range topics {
		if err := checkName("topic", t); err != nil {
			fail(w, err)
			return
		}
	}
	ctx, cancel := a.timeout(r)
	defer cancel()
	resp, err := a.core.Metadata(ctx, &sdk.MetadataRequest{Topics: topics})
	if err != nil {
		fail(w, err)
		return
	}
	type topicOut struct {
		Name    string  `json:"name"`
		Queues  int32   `json:"queues"`
		Leaders []int32 `json:"leaders"`
	}
	type brokerOut struct {
		Node    string `json:"node"`
		Address string `json:"address"`
		Role    string `json:"role"`
	}
	out := struct {
		Topics  []topicOut  `json:"topics"`
		Brokers []brokerOut `json:"brokers"`
	}{Topics: []topicOut{}, Brokers: []brokerOut{}}
	for _, t := range resp.Topics {
		out.Topics = append(out.Topics, topicOut{Name: t.Name, Queues: t.Queues, Leaders: t.Leaders})
	}
	for _, b := range resp.Brokers {
		out.Brokers = append(out.Brokers, brokerOut{Node: b.Node, Address: b.Address, Role: b.Role})
	}
	writeJSON(w, http.StatusOK, out)
}
