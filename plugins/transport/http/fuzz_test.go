package httptransport

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// marshalCore is the broker core as the transport's link to it sees it:
// every request must marshal (protobuf strings are UTF-8), or the plugin's
// link to the host breaks. It answers with minimal successes.
type marshalCore struct{ t *testing.T }

func (c marshalCore) check(m proto.Message) {
	if _, err := proto.Marshal(m); err != nil {
		c.t.Fatalf("the transport sent the core a request that cannot be marshalled: %v\n%v", err, m)
	}
}

func (c marshalCore) Produce(_ context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	c.check(req)
	return &ferryv1.ProduceResponse{Offsets: make([]int64, len(req.Messages))}, nil
}

func (c marshalCore) Fetch(_ context.Context, req *ferryv1.FetchRequest) (*ferryv1.FetchResponse, error) {
	c.check(req)
	return &ferryv1.FetchResponse{}, nil
}

func (c marshalCore) CommitOffsets(_ context.Context, req *ferryv1.CommitOffsetsRequest) error {
	c.check(req)
	return nil
}

func (c marshalCore) GetOffsets(_ context.Context, req *ferryv1.GetOffsetsRequest) (*ferryv1.GetOffsetsResponse, error) {
	c.check(req)
	return &ferryv1.GetOffsetsResponse{}, nil
}

func (c marshalCore) Heartbeat(_ context.Context, req *ferryv1.HeartbeatRequest) (*ferryv1.HeartbeatResponse, error) {
	c.check(req)
	return &ferryv1.HeartbeatResponse{}, nil
}

func (c marshalCore) Metadata(_ context.Context, req *ferryv1.MetadataRequest) (*ferryv1.MetadataResponse, error) {
	c.check(req)
	var out ferryv1.MetadataResponse
	for _, t := range req.Topics {
		out.Topics = append(out.Topics, &ferryv1.TopicInfo{Name: t, Queues: 2})
	}
	return &out, nil
}

var _ sdk.Core = marshalCore{}

// FuzzRequest sends the API arbitrary HTTP/1.1 requests (as bytes on the
// wire: any path, query, headers and body): it never panics, answers every
// request with a JSON status, and never hands the core a request that cannot
// be marshalled (issue 13, item 7). The seeds run as an ordinary test;
// `go test -fuzz FuzzRequest ./plugins/transport/http` explores further.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"POST /v1/topics/orders/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n{\"messages\":[{\"id\":\"a\",\"key\":\"k\",\"headers\":{\"h\":\"v\"},\"body\":\"x\"}]}",
		"POST /v1/topics/orders/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n{\"messages\":[null]}",
		"POST /v1/topics/orders/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n{\"messages\":[{\"body\":\"\xff\"}]} trailing",
		"POST /v1/topics/orders/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nFerry-Key: \xff\r\nFerry-Id: \xc3\r\nFerry-Queue: 1\r\nFerry-Header-A: \xfe\r\n\r\nraw body",
		"POST /v1/topics/%ff/messages HTTP/1.1\r\nHost: x\r\n\r\nx",
		"GET /v1/topics/orders/messages?group=%ff&queue=0,1&max=5&wait=1ms HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/topics/orders/messages?queue=1&offset=3&encoding=base64 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /v1/groups/g%00/offsets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n{\"offsets\":[{\"topic\":\"orders\",\"queue\":0,\"offset\":1}]}",
		"POST /v1/groups/g/offsets HTTP/1.1\r\nHost: x\r\n\r\n{\"offsets\":[{\"topic\":\"\\udc00\",\"queue\":0,\"offset\":1}]}",
		"GET /v1/groups/g/offsets?topic=%80 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/metadata?topic=a&topic=%c3%28 HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	cfg := NewDefaultConfig()
	cfg.MaxRequestBytes, cfg.MaxInflightBytes, cfg.MaxMessageBytes = 64<<10, 64<<10, 1<<10
	f.Fuzz(func(t *testing.T, wire []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(wire)))
		if err != nil {
			return // net/http refuses it before any handler
		}
		draining, cancel := context.WithCancel(context.Background())
		defer cancel()
		a := newAPI(marshalCore{t}, cfg, draining)
		rec := httptest.NewRecorder()
		a.routes().ServeHTTP(rec, req)
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		if rec.Code/100 == 3 && rec.Header().Get("Location") != "" {
			return // net/http's mux redirects an unclean path ("/.") to its clean form
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("answer of type %q: %s", ct, rec.Body)
		}
		_, _ = io.Copy(io.Discard, rec.Body)
	})
}
