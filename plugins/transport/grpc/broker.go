package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/internal/gopool"
)

// brokerServer serves ferry.v1.Broker by forwarding every call to the core.
// gRPC calls its methods from one goroutine per RPC.
type brokerServer struct {
	ferryv1.UnimplementedBrokerServer
	core            sdk.Core
	maxMessageBytes int64
	maxInflight     int

	drainOnce sync.Once
	draining  chan struct{} // closed when Serve's ctx ended
}

func newBrokerServer(core sdk.Core, cfg Config) *brokerServer {
	return &brokerServer{
		core:            core,
		maxMessageBytes: int64(cfg.MaxMessageBytes),
		maxInflight:     cfg.MaxInflightPerStream,
		draining:        make(chan struct{}),
	}
}

// drain makes every Produce stream stop taking requests, answer the ones in
// flight and end with UNAVAILABLE, so that clients retry after the restart.
func (b *brokerServer) drain() { b.drainOnce.Do(func() { close(b.draining) }) }

func (b *brokerServer) isDraining() bool {
	select {
	case <-b.draining:
		return true
	default:
		return false
	}
}

var errDraining = fmt.Errorf("%w: broker transport is shutting down", sdk.ErrUnavailable)

// Produce reads a client's ProduceRequests and hands each to the core in its
// own goroutine, at most maxInflight at once (past that it stops reading, so
// HTTP/2 flow control pushes back on the client). Answers are sent as they
// complete, matched by seq. The stream ends when the client closes it (after
// the answers in flight), when the client goes away, or when the transport
// drains.
func (b *brokerServer) Produce(stream ferryv1.Broker_ProduceServer) error {
	ctx := stream.Context()
	var (
		sendMu sync.Mutex
		wg     sync.WaitGroup
		slots  = make(chan struct{}, b.maxInflight)
		reqs   = make(chan *ferryv1.ProduceRequest)
		recvEr = make(chan error, 1)
		stop   = make(chan struct{})
	)
	defer close(stop) // runs last: releases the reader
	defer wg.Wait()   // answers in flight go out before the stream ends

	// The reader outlives this handler only until gRPC ends the stream,
	// which makes its Recv fail.
	go func() {
		for {
			req, err := stream.Recv()
			if err == nil {
				err = refused(req) // the stream ends with InvalidArgument
			}
			if err != nil {
				recvEr <- err
				return
			}
			select {
			case reqs <- req:
			case <-stop:
				return
			}
		}
	}()

	for {
		// Once the drain began, no request is taken any more, even one
		// that is ready: it is not stored and its client retries.
		if b.isDraining() {
			return sdk.ErrorToStatus(errDraining)
		}
		select {
		case slots <- struct{}{}:
		case <-b.draining:
			return sdk.ErrorToStatus(errDraining)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		var req *ferryv1.ProduceRequest
		select {
		case req = <-reqs:
		case err := <-recvEr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-b.draining:
			return sdk.ErrorToStatus(errDraining)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		if b.isDraining() {
			return sdk.ErrorToStatus(errDraining)
		}
		wg.Add(1)
		gopool.Go(func() { // a parked goroutine: its stack is grown already
			defer wg.Done()
			defer func() { <-slots }()
			resp := b.produce(ctx, req)
			sendMu.Lock()
			defer sendMu.Unlock()
			// A failed Send means the stream is gone; ctx ends with it
			// and the loop above returns.
			_ = stream.Send(resp)
		})
	}
}

var tracer = telemetry.Tracer(telemetry.ComponentTransport)

// produce runs one request against the core and always returns an answer
// carrying the request's seq.
func (b *brokerServer) produce(ctx context.Context, req *ferryv1.ProduceRequest) *ferryv1.ProduceResponse {
	fail := func(err error) *ferryv1.ProduceResponse {
		return &ferryv1.ProduceResponse{Seq: req.Seq, Error: sdk.ErrorToProto(err)}
	}
	// The first traced hop of a batch: a span in each sampled message's
	// trace (telemetry.StartHop), whose ids go on to the core with the
	// request, and a batch span that the core's spans are children of.
	// A batch kept encoded (encodedProduce) names its sampled messages in
	// TracedIndex, and only those are decoded for the spans.
	msgs := req.Messages
	if len(msgs) == 0 && len(req.TracedIndex) > 0 && telemetry.Enabled() {
		msgs = sampledMessages(req, req.TracedIndex)
	}
	req.TracedIndex, req.TracedSpan = nil, nil
	if len(msgs) > 0 && telemetry.Enabled() {
		hop := telemetry.StartHop(ctx, tracer, telemetry.SpanTransportReceive, msgs, telemetry.Sampled(msgs),
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(telemetry.AttrTopic.String(msgs[0].GetTopic())))
		defer hop.End()
		ctx = hop.Ctx
		tr := hop.Traced()
		req.TracedIndex, req.TracedSpan = tr.Index, tr.Span
	}
	if err := b.checkSizes(req); err != nil {
		return fail(err)
	}
	if req.TimeoutNanos > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutNanos))
		defer cancel()
	}
	resp, err := b.core.Produce(ctx, req)
	if err != nil {
		return fail(err)
	}
	if resp == nil {
		return fail(errors.New("broker core returned no produce response"))
	}
	resp.Seq = req.Seq
	return resp
}

// checkSizes refuses a request holding a message whose body and headers
// exceed max_message_bytes; nothing of such a request reaches the core.
func (b *brokerServer) checkSizes(req *ferryv1.ProduceRequest) error {
	for i, m := range req.Messages {
		n := int64(len(m.Body))
		for k, v := range m.Headers {
			n += int64(len(k) + len(v))
		}
		if n > b.maxMessageBytes {
			return fmt.Errorf("%w: message %d (id %q) has %d bytes of body and headers, over the transport's limit max_message_bytes = %d",
				sdk.ErrInvalidArgument, i, m.Id, n, b.maxMessageBytes)
		}
	}
	return nil
}

// Fetch long-polls the core.
func (b *brokerServer) Fetch(ctx context.Context, req *ferryv1.FetchRequest) (*ferryv1.FetchResponse, error) {
	fetch := b.core.Fetch
	if fe, ok := b.core.(sdk.EncodedFetcher); ok && sdk.EncodesRequests(b.core) {
		// The answer goes to the client as the core encoded it, without
		// being decoded here (core/sdk/encoded.go).
		fetch = fe.FetchEncoded
	}
	resp, err := fetch(ctx, req)
	if err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	if resp == nil {
		resp = &ferryv1.FetchResponse{}
	}
	if len(resp.TracedIndex) > 0 {
		// A transport.deliver span in each sampled message's trace, under
		// its broker.deliver; the traced fields stay between plugin and core.
		hop := telemetry.StartHop(ctx, tracer, telemetry.SpanTransportDeliver, resp.Messages,
			telemetry.Traced{Index: resp.TracedIndex, Span: resp.TracedSpan},
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(telemetry.AttrTopic.String(req.Topic), telemetry.AttrGroup.String(req.Group)))
		resp.TracedIndex, resp.TracedSpan = nil, nil
		hop.End()
	}
	return resp, nil
}

func (b *brokerServer) CommitOffsets(ctx context.Context, req *ferryv1.CommitOffsetsRequest) (*ferryv1.CommitOffsetsResponse, error) {
	if err := b.core.CommitOffsets(ctx, req); err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	return &ferryv1.CommitOffsetsResponse{}, nil
}

func (b *brokerServer) GetOffsets(ctx context.Context, req *ferryv1.GetOffsetsRequest) (*ferryv1.GetOffsetsResponse, error) {
	resp, err := b.core.GetOffsets(ctx, req)
	if err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	if resp == nil {
		resp = &ferryv1.GetOffsetsResponse{}
	}
	return resp, nil
}

func (b *brokerServer) Metadata(ctx context.Context, req *ferryv1.MetadataRequest) (*ferryv1.MetadataResponse, error) {
	resp, err := b.core.Metadata(ctx, req)
	if err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	if resp == nil {
		resp = &ferryv1.MetadataResponse{}
	}
	return resp, nil
}

func (b *brokerServer) Heartbeat(ctx context.Context, req *ferryv1.HeartbeatRequest) (*ferryv1.HeartbeatResponse, error) {
	resp, err := b.core.Heartbeat(ctx, req)
	if err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	if resp == nil {
		resp = &ferryv1.HeartbeatResponse{}
	}
	return resp, nil
}

// coreCall makes one of the core's optional calls, of the interface A
// (sdk.TopicAdmin, sdk.GroupAdmin); errors.ErrUnsupported, naming what, when
// the core has none.
func coreCall[A, Resp any](b *brokerServer, what string, call func(A) (*Resp, error)) (*Resp, error) {
	a, ok := b.core.(A)
	if !ok {
		return nil, sdk.ErrorToStatus(fmt.Errorf("%w: this broker core has no %s", errors.ErrUnsupported, what))
	}
	resp, err := call(a)
	if err != nil {
		return nil, sdk.ErrorToStatus(err)
	}
	if resp == nil {
		resp = new(Resp)
	}
	return resp, nil
}

// adminCall makes one of the core's topic calls.
func adminCall[Resp any](b *brokerServer, call func(sdk.TopicAdmin) (*Resp, error)) (*Resp, error) {
	return coreCall(b, "topic administration", call)
}

func (b *brokerServer) CreateTopic(ctx context.Context, req *ferryv1.CreateTopicRequest) (*ferryv1.CreateTopicResponse, error) {
	return adminCall(b, func(a sdk.TopicAdmin) (*ferryv1.CreateTopicResponse, error) { return a.CreateTopic(ctx, req) })
}

func (b *brokerServer) AlterTopic(ctx context.Context, req *ferryv1.AlterTopicRequest) (*ferryv1.AlterTopicResponse, error) {
	return adminCall(b, func(a sdk.TopicAdmin) (*ferryv1.AlterTopicResponse, error) { return a.AlterTopic(ctx, req) })
}

func (b *brokerServer) DeleteTopic(ctx context.Context, req *ferryv1.DeleteTopicRequest) (*ferryv1.DeleteTopicResponse, error) {
	return adminCall(b, func(a sdk.TopicAdmin) (*ferryv1.DeleteTopicResponse, error) { return a.DeleteTopic(ctx, req) })
}

// groupCall makes one of the core's group calls.
func groupCall[Resp any](b *brokerServer, call func(sdk.GroupAdmin) (*Resp, error)) (*Resp, error) {
	return coreCall(b, "group administration", call)
}

func (b *brokerServer) ListGroups(ctx context.Context, req *ferryv1.ListGroupsRequest) (*ferryv1.ListGroupsResponse, error) {
	return groupCall(b, func(a sdk.GroupAdmin) (*ferryv1.ListGroupsResponse, error) { return a.ListGroups(ctx, req) })
}

func (b *brokerServer) DescribeGroup(ctx context.Context, req *ferryv1.DescribeGroupRequest) (*ferryv1.DescribeGroupResponse, error) {
	return groupCall(b, func(a sdk.GroupAdmin) (*ferryv1.DescribeGroupResponse, error) { return a.DescribeGroup(ctx, req) })
}

func (b *brokerServer) ResetOffsets(ctx context.Context, req *ferryv1.ResetOffsetsRequest) (*ferryv1.ResetOffsetsResponse, error) {
	return groupCall(b, func(a sdk.GroupAdmin) (*ferryv1.ResetOffsetsResponse, error) { return a.ResetOffsets(ctx, req) })
}

func (b *brokerServer) DeleteGroup(ctx context.Context, req *ferryv1.DeleteGroupRequest) (*ferryv1.DeleteGroupResponse, error) {
	return groupCall(b, func(a sdk.GroupAdmin) (*ferryv1.DeleteGroupResponse, error) { return a.DeleteGroup(ctx, req) })
}
