package grpctransport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// fakeCore answers as its hooks say; unset hooks answer empty successes.
type fakeCore struct {
	produce      func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error)
	unaryErr     error // returned by every unary call when set
	produceCalls atomic.Int64
}

var _ sdk.Core = (*fakeCore)(nil)

func (c *fakeCore) Produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	c.produceCalls.Add(1)
	if c.produce != nil {
		return c.produce(ctx, req)
	}
	return &ferryv1.ProduceResponse{Offsets: make([]int64, len(req.Messages)), Status: ferryv1.Status_STATUS_OK}, nil
}

func (c *fakeCore) Fetch(ctx context.Context, req *ferryv1.FetchRequest) (*ferryv1.FetchResponse, error) {
	if c.unaryErr != nil {
		return nil, c.unaryErr
	}
	return &ferryv1.FetchResponse{Messages: []*ferryv1.Message{{Id: "m", Topic: req.Topic}}}, nil
}

func (c *fakeCore) CommitOffsets(context.Context, *ferryv1.CommitOffsetsRequest) error {
	return c.unaryErr
}

func (c *fakeCore) GetOffsets(context.Context, *ferryv1.GetOffsetsRequest) (*ferryv1.GetOffsetsResponse, error) {
	if c.unaryErr != nil {
		return nil, c.unaryErr
	}
	return &ferryv1.GetOffsetsResponse{}, nil
}

func (c *fakeCore) Heartbeat(_ context.Context, req *ferryv1.HeartbeatRequest) (*ferryv1.HeartbeatResponse, error) {
	if c.unaryErr != nil {
		return nil, c.unaryErr
	}
	return &ferryv1.HeartbeatResponse{Members: []string{req.Member}}, nil
}

func (c *fakeCore) Metadata(context.Context, *ferryv1.MetadataRequest) (*ferryv1.MetadataResponse, error) {
	if c.unaryErr != nil {
		return nil, c.unaryErr
	}
	return &ferryv1.MetadataResponse{Topics: []*ferryv1.TopicInfo{{Name: "t", Queues: 1}}}, nil
}

// served is a transport serving a core on 127.0.0.1:0.
type served struct {
	addr string
	rpc  ferryv1.BrokerClient
	// stop cancels Serve's context and returns Serve's error and how long
	// it took to return.
	stop func() (error, time.Duration)
}

func serve(t *testing.T, core sdk.Core, config string) *served {
	t.Helper()
	tr := grpctransport.New()
	if config == "" {
		config = `{"listen": "127.0.0.1:0"}`
	}
	if err := tr.Configure(context.Background(), []byte(config), nil); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Serve(ctx, core) }()
	cc, err := grpc.NewClient(tr.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		once    sync.Once
		err2    error
		elapsed time.Duration
	)
	s := &served{addr: tr.Addr(), rpc: ferryv1.NewBrokerClient(cc), stop: func() (error, time.Duration) {
		once.Do(func() {
			start := time.Now()
			cancel()
			err2 = <-done
			elapsed = time.Since(start)
			tr.Close()
		})
		return err2, elapsed
	}}
	t.Cleanup(func() {
		cc.Close()
		s.stop()
	})
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		config string
		paths  []string // keys with problems, sorted
	}{
		{``, nil},
		{`{}`, nil},
		{`{"listen": "0.0.0.0:7070", "max_message_bytes": "16MiB", "max_inflight_per_stream": 64, "max_concurrent_streams": 100, "shutdown_timeout": "1s"}`, nil},
		{`{"listen": ":0"}`, nil},
		{`{"listen": "localhost"}`, []string{"listen"}},
		{`{"listen": "127.0.0.1:70000"}`, []string{"listen"}},
		{`{"listen": ""}`, []string{"listen"}},
		{`{"max_message_bytes": 0}`, []string{"max_message_bytes"}},
		{`{"max_message_bytes": "1GiB"}`, []string{"max_message_bytes"}},
		{`{"listen": "x", "max_message_bytes": 0, "max_inflight_per_stream": 0, "shutdown_timeout": "-1s"}`,
			[]string{"listen", "max_inflight_per_stream", "max_message_bytes", "shutdown_timeout"}},
		{`{"max_inflight_per_stream": "many"}`, []string{"max_inflight_per_stream"}},
		{`{"port": 7070}`, []string{"port"}},
	} {
		t.Run(tc.config, func(t *testing.T) {
			ps := grpctransport.New().Validate([]byte(tc.config))
			var paths []string
			for _, p := range ps {
				paths = append(paths, p.Path)
			}
			slices.Sort(paths)
			if !slices.Equal(paths, tc.paths) {
				t.Fatalf("problems %v, want problems at %v", ps, tc.paths)
			}
		})
	}
}

func TestConfigureReportsAddressInUse(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	tr := grpctransport.New()
	err = tr.Configure(context.Background(), fmt.Appendf(nil, `{"listen": %q}`, lis.Addr()), nil)
	if err == nil || !strings.Contains(err.Error(), lis.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Configure on a used address: %v, want an error naming the address and 'address already in use'", err)
	}
	if err := tr.Configure(context.Background(), []byte(`{"listen": 7070}`), nil); !errors.Is(err, sdk.ErrConfig) {
		t.Fatalf("Configure with a bad section: %v, want ErrConfig", err)
	}
}

func TestCloseWithoutServeReleasesThePort(t *testing.T) {
	tr := grpctransport.New()
	if err := tr.Configure(context.Background(), []byte(`{"listen": "127.0.0.1:0"}`), nil); err != nil {
		t.Fatal(err)
	}
	addr := tr.Addr()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still held after Close: %v", err)
	}
	lis.Close()
	if err := tr.Serve(context.Background(), &fakeCore{}); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("Serve after Close: %v, want ErrClosed", err)
	}
	if err := grpctransport.New().Serve(context.Background(), &fakeCore{}); !errors.Is(err, sdk.ErrNotConfigured) {
		t.Fatalf("Serve before Configure: %v, want ErrNotConfigured", err)
	}
}

func TestProduceAnswersEachRequestBySeq(t *testing.T) {
	const n = 20
	core := &fakeCore{produce: func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, fmt.Errorf("%w: no deadline from timeout_nanos", sdk.ErrInvalidArgument)
		}
		// Later requests finish first: answers come out of order.
		time.Sleep(time.Duration(n-req.Seq) * 3 * time.Millisecond)
		return &ferryv1.ProduceResponse{Offsets: []int64{int64(req.Seq) * 10}, Status: ferryv1.Status_STATUS_OK}, nil
	}}
	s := serve(t, core, "")
	stream, err := s.rpc.Produce(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= n; seq++ {
		req := &ferryv1.ProduceRequest{Seq: seq, Messages: []*ferryv1.Message{{Id: fmt.Sprint(seq), Topic: "t"}}, TimeoutNanos: int64(time.Second)}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	var order []uint64
	for range n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Error != nil || len(resp.Offsets) != 1 || resp.Offsets[0] != int64(resp.Seq)*10 {
			t.Fatalf("answer %v does not match its request", resp)
		}
		order = append(order, resp.Seq)
	}
	if slices.IsSorted(order) {
		t.Fatalf("answers came in request order %v: requests were not run concurrently", order)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend the stream ended with %v, want EOF", err)
	}
}

func TestProduceBoundsRequestsInFlight(t *testing.T) {
	var active, peak atomic.Int64
	release := make(chan struct{})
	core := &fakeCore{produce: func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		return &ferryv1.ProduceResponse{Offsets: []int64{0}}, nil
	}}
	s := serve(t, core, `{"listen": "127.0.0.1:0", "max_inflight_per_stream": 4}`)
	stream, err := s.rpc.Produce(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 20; seq++ {
		if err := stream.Send(&ferryv1.ProduceRequest{Seq: seq, Messages: []*ferryv1.Message{{Id: "x"}}}); err != nil {
			t.Fatal(err)
		}
	}
	for active.Load() < 4 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if n := active.Load(); n != 4 {
		t.Fatalf("%d requests at the core, want the limit 4", n)
	}
	close(release)
	for range 20 {
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != 4 {
		t.Fatalf("peak of %d requests at the core, want 4", p)
	}
}

func TestProduceRefusesOversizeMessages(t *testing.T) {
	core := &fakeCore{}
	s := serve(t, core, `{"listen": "127.0.0.1:0", "max_message_bytes": "1KiB"}`)
	stream, err := s.rpc.Produce(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  *ferryv1.Message
		ok   bool
	}{
		{"body over", &ferryv1.Message{Id: "a", Body: make([]byte, 1025)}, false},
		{"body and headers over", &ferryv1.Message{Id: "b", Body: make([]byte, 1000), Headers: map[string]string{"trace": strings.Repeat("x", 30)}}, false},
		{"at the limit", &ferryv1.Message{Id: "c", Body: make([]byte, 1024)}, true},
	} {
		req := &ferryv1.ProduceRequest{Seq: 1, Messages: []*ferryv1.Message{{Id: "small"}, tc.msg}}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		err = sdk.ErrorFromProto(resp.Error)
		if tc.ok != (err == nil) {
			t.Fatalf("%s: answer error %v", tc.name, err)
		}
		if !tc.ok && (!errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "max_message_bytes = 1024")) {
			t.Fatalf("%s: %v, want INVALID_ARGUMENT naming max_message_bytes = 1024", tc.name, err)
		}
	}
	if n := core.produceCalls.Load(); n != 1 {
		t.Fatalf("core saw %d requests, want only the one within the limit", n)
	}
}

func TestErrorsMatchSentinelsAcrossTheWire(t *testing.T) {
	for _, sentinel := range []error{sdk.ErrNotFound, sdk.ErrInvalidArgument, sdk.ErrFull, sdk.ErrUnavailable, sdk.ErrCorrupt} {
		t.Run(sentinel.Error(), func(t *testing.T) {
			wrapped := fmt.Errorf("core says: %w", sentinel)
			core := &fakeCore{unaryErr: wrapped, produce: func(context.Context, *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
				return nil, wrapped
			}}
			s := serve(t, core, "")
			ctx := testCtx(t)
			calls := map[string]error{}
			_, calls["fetch"] = s.rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: "t"})
			_, calls["commit"] = s.rpc.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: "g"})
			_, calls["offsets"] = s.rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{})
			_, calls["metadata"] = s.rpc.Metadata(ctx, &ferryv1.MetadataRequest{})
			for name, err := range calls {
				if got := sdk.ErrorFromStatus(err); !errors.Is(got, sentinel) || !strings.Contains(got.Error(), "core says") {
					t.Errorf("%s: %v, want an error matching %v with the core's message", name, got, sentinel)
				}
			}
			stream, err := s.rpc.Produce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&ferryv1.ProduceRequest{Seq: 7}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if got := sdk.ErrorFromProto(resp.Error); resp.Seq != 7 || !errors.Is(got, sentinel) {
				t.Errorf("produce answer %v, want seq 7 and an error matching %v", resp, sentinel)
			}
		})
	}
}

func TestServeDrainsInFlightRequestsOnShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	core := &fakeCore{produce: func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
		entered <- struct{}{}
		<-release
		return &ferryv1.ProduceResponse{Offsets: []int64{41}, Status: ferryv1.Status_STATUS_OK}, nil
	}}
	s := serve(t, core, `{"listen": "127.0.0.1:0", "shutdown_timeout": "5s"}`)
	stream, err := s.rpc.Produce(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ferryv1.ProduceRequest{Seq: 1, Messages: []*ferryv1.Message{{Id: "x"}}}); err != nil {
		t.Fatal(err)
	}
	<-entered
	stopped := make(chan time.Duration, 1)
	go func() {
		err, d := s.stop()
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		stopped <- d
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	resp, err := stream.Recv()
	if err != nil || resp.Seq != 1 || resp.Offsets[0] != 41 {
		t.Fatalf("in-flight request during shutdown: %v, %v; want its answer", resp, err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable || !errors.Is(sdk.ErrorFromStatus(err), sdk.ErrUnavailable) {
		t.Fatalf("stream ended with %v, want UNAVAILABLE so that the client retries", err)
	}
	if d := <-stopped; d > 2*time.Second {
		t.Fatalf("Serve took %s to return once the requests were answered", d)
	}
}

func TestServeCutsRequestsStuckPastShutdownTimeout(t *testing.T) {
	entered := make(chan struct{}, 1)
	core := &fakeCore{produce: func(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	s := serve(t, core, `{"listen": "127.0.0.1:0", "shutdown_timeout": "100ms"}`)
	stream, err := s.rpc.Produce(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ferryv1.ProduceRequest{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	<-entered
	err, d := s.stop()
	if err != nil || d > time.Second {
		t.Fatalf("Serve returned %v after %s, want nil soon after shutdown_timeout", err, d)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream still open after Serve returned")
	}
}
