package httptransport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Reasons a request is refused by a limit, the values of the reason label
// of ferry_http_refused_total.
const (
	reasonBodyTimeout   = "body_timeout"
	reasonConnections   = "max_connections"
	reasonInflightBytes = "max_inflight_bytes"
)

// limits holds the transport's protections against clients that hold
// connections, send slowly or send much at once: a bound on open
// connections, on the time to receive a body, and on the request-body bytes
// held in memory at once. One per Serve; net/http calls its methods from
// its connection and request goroutines.
type limits struct {
	cfg   Config
	conns atomic.Int64

	mu       sync.Mutex
	inflight int64 // request-body bytes reserved by requests in progress

	reg        *prometheus.Registry
	refused    *prometheus.CounterVec
	openConns  prometheus.GaugeFunc
	inflightGa prometheus.GaugeFunc
}

func newLimits(cfg Config) *limits {
	l := &limits{cfg: cfg, reg: prometheus.NewRegistry()}
	l.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_http_refused_total",
		Help: "Requests the http transport refused because of a limit, by reason (body_timeout: 408, max_connections: 503, max_inflight_bytes: 429).",
	}, []string{"reason"})
	for _, r := range []string{reasonBodyTimeout, reasonConnections, reasonInflightBytes} {
		l.refused.WithLabelValues(r)
	}
	l.openConns = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_http_connections",
		Help: "Open connections of the http transport.",
	}, func() float64 { return float64(l.conns.Load()) })
	l.inflightGa = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_http_inflight_bytes",
		Help: "Request-body bytes the http transport holds for requests in progress.",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.inflight)
	})
	l.reg.MustRegister(l.refused, l.openConns, l.inflightGa)
	return l
}

// connState counts open connections; the server calls it on every change
// of a connection's state.
func (l *limits) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		l.conns.Add(1)
	case http.StateClosed, http.StateHijacked:
		l.conns.Add(-1)
	}
}

// metrics serves the transport's own metrics (GET /metrics on its address).
func (l *limits) metrics() http.Handler {
	return promhttp.HandlerFor(l.reg, promhttp.HandlerOpts{})
}

// guard refuses a request on a connection past max_connections with 503 (and
// closes that connection); the router runs it before any handler.
func (l *limits) guard(w http.ResponseWriter) error {
	if n := l.conns.Load(); n > int64(l.cfg.MaxConnections) {
		l.refused.WithLabelValues(reasonConnections).Inc()
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "1")
		return &apiError{http.StatusServiceUnavailable, "UNAVAILABLE",
			fmt.Sprintf("the http transport has %d connections open, over its limit max_connections = %d: retry later", n, l.cfg.MaxConnections)}
	}
	return nil
}

// readBody reads a request body of at most max_request_bytes within
// body_timeout, holding its bytes against max_inflight_bytes; the handler
// calls release once the request is answered (the bytes live until then).
// A body that is not received in time is 408, one that does not fit in
// flight 429, one too large 413.
func (l *limits) readBody(w http.ResponseWriter, r *http.Request) (body []byte, release func(), err error) {
	reserved := int64(0)
	release = func() {
		l.mu.Lock()
		l.inflight -= reserved
		l.mu.Unlock()
		reserved = 0
	}
	reserve := func(n int64) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		// max_inflight_bytes >= max_request_bytes: one request alone fits.
		if l.inflight+n > int64(l.cfg.MaxInflightBytes) {
			l.refused.WithLabelValues(reasonInflightBytes).Inc()
			w.Header().Set("Retry-After", "1")
			return &apiError{http.StatusTooManyRequests, "RESOURCE_EXHAUSTED",
				fmt.Sprintf("the http transport holds %d bytes of requests in flight; %d more would pass its limit max_inflight_bytes = %d: retry later",
					l.inflight, n, l.cfg.MaxInflightBytes)}
		}
		l.inflight += n
		reserved += n
		return nil
	}
	limit := int64(l.cfg.MaxRequestBytes)
	if r.ContentLength > limit {
		return nil, release, tooLarge("request body of %d bytes is over the limit max_request_bytes = %d", r.ContentLength, limit)
	}
	if r.ContentLength > 0 {
		// Known length: refuse before reading anything.
		if err := reserve(r.ContentLength); err != nil {
			w.Header().Set("Connection", "close")
			return nil, release, err
		}
	}
	// The deadline stays after a failure: net/http may then read what is
	// left of the body, and must not wait for it longer.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(time.Duration(l.cfg.BodyTimeout)))
	src := http.MaxBytesReader(w, r.Body, limit)
	buf := make([]byte, 0, min(max(r.ContentLength, 0), limit)+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := src.Read(buf[len(buf):cap(buf)])
		if grow := int64(len(buf)+n) - reserved; grow > 0 {
			if err := reserve(grow); err != nil {
				w.Header().Set("Connection", "close")
				return nil, release, err
			}
		}
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			_ = rc.SetReadDeadline(time.Time{})
			return buf, release, nil
		}
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				l.refused.WithLabelValues(reasonBodyTimeout).Inc()
				w.Header().Set("Connection", "close")
				return nil, release, &apiError{http.StatusRequestTimeout, "REQUEST_TIMEOUT",
					fmt.Sprintf("the request body was not received within body_timeout = %s (got %d bytes)", time.Duration(l.cfg.BodyTimeout), len(buf))}
			}
			return nil, release, rerr
		}
	}
}
