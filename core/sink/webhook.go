package sink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
)

// DefaultWebhookTimeout bounds one POST of a webhook sink.
const DefaultWebhookTimeout = 10 * time.Second

// maxRetryAfter bounds a Retry-After a server asks for.
const maxRetryAfter = time.Hour

// webhookSink POSTs each message's body to a URL. The request carries the
// message's metadata as headers (Ferry-Id, Ferry-Topic, Ferry-Queue,
// Ferry-Offset, Ferry-Attempt, Ferry-Group, Ferry-Key when set), W3C trace
// context (traceparent, tracestate) as is, the message's other application
// headers as Ferry-Header-<name>, and the sink's configured headers (which
// win). A 2xx answer acknowledges; 429 and 5xx fail the attempt (retried,
// after Retry-After when the server gives one); any other status (a 4xx, a
// redirect that was not followed) is permanent: the message is
// dead-lettered. Network errors and timeouts are retried.
type webhookSink struct {
	url     string
	headers map[string]string
	client  *http.Client
}

func newWebhookSink(cfg config.Sink, _ Options) (Sink, error) {
	t := cfg.Timeout
	if t <= 0 {
		t = DefaultWebhookTimeout
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &webhookSink{url: cfg.URL, headers: cfg.Headers, client: &http.Client{Timeout: t, Transport: tr}}, nil
}

func (s *webhookSink) Deliver(ctx context.Context, d *client.Delivery) error {
	m := d.Message
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(m.Body))
	if err != nil {
		return client.Permanent(err)
	}
	h := req.Header
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Ferry-Id", d.ID)
	h.Set("Ferry-Topic", d.Topic)
	h.Set("Ferry-Queue", strconv.Itoa(int(d.Queue)))
	h.Set("Ferry-Offset", strconv.FormatInt(d.Offset, 10))
	h.Set("Ferry-Attempt", strconv.Itoa(d.Attempt))
	h.Set("Ferry-Group", d.Group)
	if m.Key != "" {
		h.Set("Ferry-Key", m.Key)
	}
	for k, v := range m.Headers {
		switch {
		case k == "traceparent" || k == "tracestate":
			h.Set(k, v)
		case strings.HasPrefix(k, "ferry-"):
		case isToken(k) && validHeaderValue(v):
			h.Set("Ferry-Header-"+k, v)
		}
	}
	for k, v := range s.headers {
		h.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", s.url, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	resp.Body.Close()
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = fmt.Errorf("POST %s: %s: %s", s.url, resp.Status, strings.TrimSpace(string(body)))
	switch {
	case code == http.StatusTooManyRequests || code >= 500:
		if after, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return client.RetryAfter(after, err)
		}
		return err
	default:
		return client.Permanent(err)
	}
}

func (s *webhookSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return min(time.Duration(secs)*time.Second, maxRetryAfter), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter), true
	}
	return 0, false
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// isToken reports whether s can be (part of) an HTTP header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
