package sdk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/internal/gopool"
)

// transportServer adapts a Transport to the Transport gRPC service (plugin
// side). The core opens Connect; the plugin's requests to the core travel on
// it as TransportFrames and come back as CoreFrames.
type transportServer struct {
	ferryv1.UnimplementedTransportServer
	impl Transport
	ring *coreClient // the core over the ring data plane, once the host offered it
}

// useRing moves the plugin's calls to the core onto conn (at Configure,
// before the host opens Connect).
func (s *transportServer) useRing(conn *ring.Conn) {
	core := &coreClient{calls: newPending[*ferryv1.CoreFrame]()}
	var pace answerPace // how soon the core answers produces
	core.sendFrame = func(f *ferryv1.TransportFrame) error {
		err := ringWrite(conn, KindTransportFrame, f.Id, f)
		if err == nil && f.GetProduce() != nil {
			// The core answers a produce once the store has it:
			// wait for it awake (ProduceExpect), unless its answers
			// come later than that (a store that fsyncs first).
			pace.sent(f.Id)
			if pace.worthSpinning(produceExpect) {
				conn.Expect(produceExpect)
			}
		}
		return err
	}
	s.ring = core
	go func() {
		frames := 0
		for {
			kind, id, p, err := conn.Read()
			if err != nil {
				core.calls.fail(fmt.Errorf("core data plane: %w", err))
				return
			}
			countFrame(conn, KindTransport, &frames)
			f := &ferryv1.CoreFrame{}
			if kind != KindCoreFrame || decodeCoreFrame(p, f) != nil {
				pluginLog().Error("data plane: host broke the ring protocol; stopping", "kind", kind, "id", id)
				core.calls.fail(fmt.Errorf("core data plane: bad record of kind %d", kind))
				return
			}
			tok := conn.Expecting()
			pace.answered(id)
			core.calls.resolve(id, f, nil)
			if core.calls.idle() {
				conn.Settle(tok) // no answer awaited: spin no longer (ProduceExpect)
			}
		}
	}()
}

func (s *transportServer) Connect(stream ferryv1.Transport_ConnectServer) error {
	// Serve's ctx ends when the host sends Drain (the node is stopping),
	// when the plugin process gets SIGTERM (exitWithHost), or when Connect
	// ends. After a Drain the plugin's calls to the core go on being
	// answered, on the ring or on this stream, until Serve returns.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	drained := make(chan struct{}) // the host sent Drain
	var drainOnce sync.Once
	hostDrain := func() {
		drainOnce.Do(func() { close(drained) })
		cancel()
	}
	go func() {
		select {
		case <-terminated:
			cancel()
		case <-ctx.Done():
		}
	}()
	if s.ring != nil {
		// The data flows on the ring; the stream only bounds Serve.
		go func() {
			for {
				f, err := stream.Recv()
				if err != nil {
					cancel()
					return
				}
				if f.GetDrain() != nil {
					hostDrain()
				}
			}
		}()
		err := s.impl.Serve(ctx, s.ring)
		holdAfterTerm(stream.Context(), drained)
		return err
	}
	core := &coreClient{calls: newPending[*ferryv1.CoreFrame]()}
	core.sendFrame = stream.Send
	go func() {
		for {
			f, err := stream.Recv()
			if err != nil {
				core.calls.fail(fmt.Errorf("core connection closed: %w", err))
				cancel()
				return
			}
			if f.GetDrain() != nil {
				hostDrain()
				continue
			}
			core.calls.resolve(f.Id, f, nil)
		}
	}()
	err := s.impl.Serve(ctx, core)
	holdAfterTerm(stream.Context(), drained)
	return err
}

// holdAfterTerm keeps Connect open after a Serve that drained because the
// process got SIGTERM, not because the host asked, until the host asks
// (its Drain frame), the stream ends, or termHold passes. Signalled as a
// process group, the host is stopping too and drains within moments; had
// Connect ended first, the host would take the transport for crashed and
// start another. Signalled alone, the plugin ends Connect after termHold
// and the host replaces it.
func holdAfterTerm(streamCtx context.Context, drained <-chan struct{}) {
	select {
	case <-terminated:
	default:
		return
	}
	t := time.NewTimer(termHold)
	defer t.Stop()
	select {
	case <-drained:
	case <-streamCtx.Done():
	case <-t.C:
	}
}

// termHold bounds holdAfterTerm.
const termHold = 5 * time.Second

// coreClient is Core as a transport plugin sees it: each call is a frame on
// the Connect stream or the ring data plane, answered by id.
type coreClient struct {
	sendMu    sync.Mutex
	sendFrame func(*ferryv1.TransportFrame) error
	calls     *pending[*ferryv1.CoreFrame]
}

func (c *coreClient) send(f *ferryv1.TransportFrame) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.sendFrame(f)
}

func (c *coreClient) call(ctx context.Context, f *ferryv1.TransportFrame) (*ferryv1.CoreFrame, error) {
	id, ch, err := c.calls.add()
	if err != nil {
		return nil, err
	}
	f.Id = id
	f.Trace = telemetry.Inject(ctx, nil)
	f.Client = ClientCredentialsFrom(ctx)
	if dl, ok := ctx.Deadline(); ok {
		f.TimeoutNanos = max(int64(time.Until(dl)), 1)
	}
	if err := c.send(f); err != nil {
		c.calls.fail(err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.v.Error != nil {
			return nil, ErrorFromProto(r.v.Error)
		}
		return r.v, nil
	case <-ctx.Done():
		c.calls.drop(id)
		_ = c.send(&ferryv1.TransportFrame{Id: id, Request: &ferryv1.TransportFrame_Cancel{Cancel: &ferryv1.Cancel{}}})
		return nil, ctx.Err()
	}
}

func (c *coreClient) Produce(ctx context.Context, req *ProduceRequest) (*ProduceResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_Produce{Produce: req}})
	if err != nil {
		return nil, err
	}
	return f.GetProduce(), nil
}

func (c *coreClient) Fetch(ctx context.Context, req *FetchRequest) (*FetchResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_Fetch{Fetch: req}})
	if err != nil {
		return nil, err
	}
	return decodedFetch(f.GetFetch()) // the ring's answers stay encoded until here
}

func (c *coreClient) CommitOffsets(ctx context.Context, req *CommitOffsetsRequest) error {
	_, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_CommitOffsets{CommitOffsets: req}})
	return err
}

func (c *coreClient) GetOffsets(ctx context.Context, req *GetOffsetsRequest) (*GetOffsetsResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_GetOffsets{GetOffsets: req}})
	if err != nil {
		return nil, err
	}
	return f.GetGetOffsets(), nil
}

func (c *coreClient) Metadata(ctx context.Context, req *MetadataRequest) (*MetadataResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_Metadata{Metadata: req}})
	if err != nil {
		return nil, err
	}
	return f.GetMetadata(), nil
}

func (c *coreClient) Heartbeat(ctx context.Context, req *HeartbeatRequest) (*HeartbeatResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_Heartbeat{Heartbeat: req}})
	if err != nil {
		return nil, err
	}
	return f.GetHeartbeat(), nil
}

func (c *coreClient) CreateTopic(ctx context.Context, req *CreateTopicRequest) (*CreateTopicResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_CreateTopic{CreateTopic: req}})
	if err != nil {
		return nil, err
	}
	return f.GetCreateTopic(), nil
}

func (c *coreClient) AlterTopic(ctx context.Context, req *AlterTopicRequest) (*AlterTopicResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_AlterTopic{AlterTopic: req}})
	if err != nil {
		return nil, err
	}
	return f.GetAlterTopic(), nil
}

func (c *coreClient) DeleteTopic(ctx context.Context, req *DeleteTopicRequest) (*DeleteTopicResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_DeleteTopic{DeleteTopic: req}})
	if err != nil {
		return nil, err
	}
	return f.GetDeleteTopic(), nil
}

func (c *coreClient) ListGroups(ctx context.Context, req *ListGroupsRequest) (*ListGroupsResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_ListGroups{ListGroups: req}})
	if err != nil {
		return nil, err
	}
	return f.GetListGroups(), nil
}

func (c *coreClient) DescribeGroup(ctx context.Context, req *DescribeGroupRequest) (*DescribeGroupResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_DescribeGroup{DescribeGroup: req}})
	if err != nil {
		return nil, err
	}
	return f.GetDescribeGroup(), nil
}

func (c *coreClient) ResetOffsets(ctx context.Context, req *ResetOffsetsRequest) (*ResetOffsetsResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_ResetOffsets{ResetOffsets: req}})
	if err != nil {
		return nil, err
	}
	return f.GetResetOffsets(), nil
}

func (c *coreClient) DeleteGroup(ctx context.Context, req *DeleteGroupRequest) (*DeleteGroupResponse, error) {
	f, err := c.call(ctx, &ferryv1.TransportFrame{Request: &ferryv1.TransportFrame_DeleteGroup{DeleteGroup: req}})
	if err != nil {
		return nil, err
	}
	return f.GetDeleteGroup(), nil
}

var (
	_ TopicAdmin = (*coreClient)(nil)
	_ GroupAdmin = (*coreClient)(nil)
)

// TransportClient is the host's side of a transport plugin over gRPC.
type TransportClient struct {
	pluginClient
	rpc ferryv1.TransportClient
	dp  ringHost // the shared-memory data plane, when the plugin took it

	// DrainTimeout bounds Serve's drain after its ctx ended; 0 means
	// DefaultTransportDrain. Set it before Serve.
	DrainTimeout time.Duration
}

var (
	_ Transport = (*TransportClient)(nil)
	_ RingUser  = (*TransportClient)(nil)
)

// UseRing hands the client a data plane segment to offer at Configure.
func (c *TransportClient) UseRing(seg *ring.Segment, broken func(error)) { c.dp.UseRing(seg, broken) }

// Configure configures the plugin, offering the data plane when the host
// handed one over.
func (c *TransportClient) Configure(ctx context.Context, config []byte, env *Environment) error {
	return c.dp.configureAndStart(ctx, c.pluginClient, config, env, nil)
}

// DataPlane names the data plane the plugin's requests use: DataPlaneRing
// or "grpc".
func (c *TransportClient) DataPlane() string {
	return c.dp.dataPlane()
}

// NewTransportClient returns a client for a transport plugin reached through cc.
func NewTransportClient(cc grpc.ClientConnInterface) *TransportClient {
	return &TransportClient{pluginClient: newPluginClient(cc), rpc: ferryv1.NewTransportClient(cc)}
}

// DefaultTransportDrain bounds how long TransportClient.Serve waits, once
// its ctx ended, for the plugin to drain before it cuts the plugin off.
const DefaultTransportDrain = 30 * time.Second

// Serve opens the Connect stream and answers the plugin's requests with core
// until ctx ends or the stream breaks (the plugin died: ErrUnavailable).
//
// When ctx ends, Serve asks the plugin to drain (a Drain frame): the plugin
// stops taking requests from its clients and ends Connect once it has the
// answers of those it took. Until then Serve goes on answering, with request
// contexts that ctx's end does not cancel, so that every request the
// transport took gets its true answer (a produce the store took is answered
// with its offsets, not "context canceled"). If the plugin has not ended
// Connect after DrainTimeout (default DefaultTransportDrain), or earlier when
// the host stops the plugin's process, Serve cuts it off: requests still
// running are cancelled and answered UNAVAILABLE (outcome unknown).
func (c *TransportClient) Serve(ctx context.Context, core Core) error {
	sctx, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	stream, err := c.rpc.Connect(sctx)
	if err != nil {
		return fmt.Errorf("%w: transport connect: %v", ErrUnavailable, err)
	}
	var sendMu sync.Mutex
	send := func(out *ferryv1.CoreFrame) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(out)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-sctx.Done():
			return
		}
		_ = send(&ferryv1.CoreFrame{Response: &ferryv1.CoreFrame_Drain{Drain: &ferryv1.Drain{}}})
		t := time.NewTimer(cmp.Or(c.DrainTimeout, DefaultTransportDrain))
		defer t.Stop()
		select {
		case <-t.C:
			cut()
		case <-sctx.Done():
		}
	}()
	if c.dp.conn != nil {
		return c.serveRing(ctx, sctx, cut, core, stream)
	}
	reqs := newCoreRequests(sctx, core, func(out *ferryv1.CoreFrame, fetch *fetchFrame) {
		if fetch != nil {
			out = fetch.frame()
		}
		_ = send(out)
	})
	defer reqs.wait()
	for {
		f, err := stream.Recv()
		if err != nil {
			// The plugin ended Serve (drained), died, or was cut off:
			// nothing of it waits for an answer any more.
			cut()
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w: transport stream: %v", ErrUnavailable, err)
		}
		reqs.handle(f)
	}
}

// coreRequests runs a transport's requests against the core, each on its
// own goroutine under its deadline and trace context, and sends each answer
// with send; a Cancel frame ends the request it names. The gRPC stream and
// the ring data plane share it.
type coreRequests struct {
	ctx  context.Context
	core Core
	send func(*ferryv1.CoreFrame, *fetchFrame) // one of them

	mu       sync.Mutex
	inflight map[uint64]context.CancelFunc
	wg       sync.WaitGroup
}

func newCoreRequests(ctx context.Context, core Core, send func(*ferryv1.CoreFrame, *fetchFrame)) *coreRequests {
	return &coreRequests{ctx: ctx, core: core, send: send, inflight: map[uint64]context.CancelFunc{}}
}

// handle starts f (or cancels the request it names); called from the one
// goroutine that receives the frames.
func (r *coreRequests) handle(f *ferryv1.TransportFrame) { r.handleWires(f, nil) }

// handleWires is handle of a produce whose messages' wire forms are wires
// (MessageWires; nil when there are none).
func (r *coreRequests) handleWires(f *ferryv1.TransportFrame, wires MessageWires) {
	if f.GetCancel() != nil {
		r.mu.Lock()
		if stop := r.inflight[f.Id]; stop != nil {
			stop()
		}
		r.mu.Unlock()
		return
	}
	var (
		rctx    context.Context
		rcancel context.CancelFunc
	)
	if f.TimeoutNanos > 0 {
		rctx, rcancel = context.WithTimeout(r.ctx, time.Duration(f.TimeoutNanos))
	} else {
		rctx, rcancel = context.WithCancel(r.ctx)
	}
	rctx = telemetry.Extract(rctx, f.Trace)
	rctx = WithClientCredentials(rctx, f.Client)
	if wires != nil {
		rctx = WithMessageWires(rctx, f.GetProduce().GetMessages(), wires)
	}
	r.mu.Lock()
	r.inflight[f.Id] = rcancel
	r.mu.Unlock()
	r.wg.Add(1)
	gopool.Go(func() { // a parked goroutine: its stack is grown already
		defer r.wg.Done()
		out, fetch := handleFrame(rctx, r.core, f)
		if r.ctx.Err() != nil && out.Error.GetCode() == "CANCELED" {
			// The host cut the plugin off while the request ran (its drain
			// took too long): what became of it is unknown, and a client
			// may retry it (a produce is de-duplicated by id).
			out.Response = nil
			out.Error = ErrorToProto(fmt.Errorf("%w: the node stopped before this request finished; its outcome is unknown", ErrUnavailable))
		}
		r.mu.Lock()
		delete(r.inflight, f.Id)
		r.mu.Unlock()
		rcancel()
		if fetch != nil {
			r.send(nil, fetch)
			return
		}
		r.send(out, nil)
	})
}

// wait waits for every request started to be answered.
func (r *coreRequests) wait() { r.wg.Wait() }

// handleFrame runs one transport request against core. A fetch of a core
// that has FetchWire is answered by the fetchFrame instead.
func handleFrame(ctx context.Context, core Core, f *ferryv1.TransportFrame) (*ferryv1.CoreFrame, *fetchFrame) {
	out := &ferryv1.CoreFrame{Id: f.Id}
	var err error
	switch r := f.Request.(type) {
	case *ferryv1.TransportFrame_Produce:
		var resp *ferryv1.ProduceResponse
		if resp, err = core.Produce(ctx, r.Produce); err == nil {
			out.Response = &ferryv1.CoreFrame_Produce{Produce: resp}
		}
	case *ferryv1.TransportFrame_Fetch:
		if wf, ok := core.(WireFetcher); ok {
			// The answer is encoded for the plugin next: its messages
			// may stay as the store encoded them.
			var (
				resp  *ferryv1.FetchResponse
				parts []EncodedMessages
			)
			if resp, parts, err = wf.FetchWire(ctx, r.Fetch); err == nil {
				return out, &fetchFrame{id: f.Id, resp: resp, parts: parts}
			}
			break
		}
		var resp *ferryv1.FetchResponse
		if resp, err = core.Fetch(ctx, r.Fetch); err == nil {
			out.Response = &ferryv1.CoreFrame_Fetch{Fetch: resp}
		}
	case *ferryv1.TransportFrame_CommitOffsets:
		if err = core.CommitOffsets(ctx, r.CommitOffsets); err == nil {
			out.Response = &ferryv1.CoreFrame_CommitOffsets{CommitOffsets: &ferryv1.CommitOffsetsResponse{}}
		}
	case *ferryv1.TransportFrame_GetOffsets:
		var resp *ferryv1.GetOffsetsResponse
		if resp, err = core.GetOffsets(ctx, r.GetOffsets); err == nil {
			out.Response = &ferryv1.CoreFrame_GetOffsets{GetOffsets: resp}
		}
	case *ferryv1.TransportFrame_Metadata:
		var resp *ferryv1.MetadataResponse
		if resp, err = core.Metadata(ctx, r.Metadata); err == nil {
			out.Response = &ferryv1.CoreFrame_Metadata{Metadata: resp}
		}
	case *ferryv1.TransportFrame_Heartbeat:
		var resp *ferryv1.HeartbeatResponse
		if resp, err = core.Heartbeat(ctx, r.Heartbeat); err == nil {
			out.Response = &ferryv1.CoreFrame_Heartbeat{Heartbeat: resp}
		}
	case *ferryv1.TransportFrame_CreateTopic, *ferryv1.TransportFrame_AlterTopic, *ferryv1.TransportFrame_DeleteTopic:
		err = handleAdmin(ctx, core, f, out)
	case *ferryv1.TransportFrame_ListGroups, *ferryv1.TransportFrame_DescribeGroup,
		*ferryv1.TransportFrame_ResetOffsets, *ferryv1.TransportFrame_DeleteGroup:
		err = handleGroupAdmin(ctx, core, f, out)
	default:
		err = fmt.Errorf("%w: unknown transport request %T", ErrInvalidArgument, f.Request)
	}
	out.Error = ErrorToProto(err)
	return out, nil
}

// handleAdmin runs a topic call of f against core into out.
func handleAdmin(ctx context.Context, core Core, f *ferryv1.TransportFrame, out *ferryv1.CoreFrame) error {
	admin, ok := core.(TopicAdmin)
	if !ok {
		return fmt.Errorf("%w: this broker core has no topic administration", errors.ErrUnsupported)
	}
	switch r := f.Request.(type) {
	case *ferryv1.TransportFrame_CreateTopic:
		resp, err := admin.CreateTopic(ctx, r.CreateTopic)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_CreateTopic{CreateTopic: resp}
		}
		return err
	case *ferryv1.TransportFrame_AlterTopic:
		resp, err := admin.AlterTopic(ctx, r.AlterTopic)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_AlterTopic{AlterTopic: resp}
		}
		return err
	case *ferryv1.TransportFrame_DeleteTopic:
		resp, err := admin.DeleteTopic(ctx, r.DeleteTopic)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_DeleteTopic{DeleteTopic: resp}
		}
		return err
	}
	return fmt.Errorf("%w: %T is not a topic call", ErrInvalidArgument, f.Request)
}

// handleGroupAdmin runs a consumer-group call of f against core into out.
func handleGroupAdmin(ctx context.Context, core Core, f *ferryv1.TransportFrame, out *ferryv1.CoreFrame) error {
	admin, ok := core.(GroupAdmin)
	if !ok {
		return fmt.Errorf("%w: this broker core has no group administration", errors.ErrUnsupported)
	}
	switch r := f.Request.(type) {
	case *ferryv1.TransportFrame_ListGroups:
		resp, err := admin.ListGroups(ctx, r.ListGroups)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_ListGroups{ListGroups: resp}
		}
		return err
	case *ferryv1.TransportFrame_DescribeGroup:
		resp, err := admin.DescribeGroup(ctx, r.DescribeGroup)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_DescribeGroup{DescribeGroup: resp}
		}
		return err
	case *ferryv1.TransportFrame_ResetOffsets:
		resp, err := admin.ResetOffsets(ctx, r.ResetOffsets)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_ResetOffsets{ResetOffsets: resp}
		}
		return err
	case *ferryv1.TransportFrame_DeleteGroup:
		resp, err := admin.DeleteGroup(ctx, r.DeleteGroup)
		if err == nil {
			out.Response = &ferryv1.CoreFrame_DeleteGroup{DeleteGroup: resp}
		}
		return err
	}
	return fmt.Errorf("%w: %T is not a group call", ErrInvalidArgument, f.Request)
}

// serveRing is Serve on the data plane: the plugin's requests arrive on the
// ring; the Connect stream only tells when the plugin's side ended. ctx is
// Serve's; sctx (cancelled by cut) bounds the stream and the requests.
func (c *TransportClient) serveRing(ctx, sctx context.Context, cut context.CancelFunc, core Core, stream ferryv1.Transport_ConnectClient) error {
	conn := c.dp.conn
	streamErr := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				// The plugin ended Serve (drained: nothing of it waits
				// for an answer any more), died, or was cut off.
				streamErr <- err
				cut()
				return
			}
		}
	}()
	go func() {
		<-sctx.Done()
		conn.Close() // unblocks the loop below
	}()
	reqs := newCoreRequests(sctx, core, func(out *ferryv1.CoreFrame, fetch *fetchFrame) {
		if fetch != nil {
			_ = c.dp.writeFetch(KindCoreFrame, fetch)
			return
		}
		_ = c.dp.write(KindCoreFrame, out.Id, out)
	})
	defer reqs.wait()
	prep, _ := core.(ProducePreparer)
	for {
		kind, id, p, err := conn.Read()
		if err != nil {
			if errors.Is(err, ring.ErrClosed) {
				select {
				case err := <-streamErr:
					if !errors.Is(err, io.EOF) && ctx.Err() == nil {
						return fmt.Errorf("%w: transport stream: %v", ErrUnavailable, err)
					}
					return nil
				default:
				}
				if sctx.Err() != nil {
					return nil
				}
			}
			c.dp.fault(err)
			return fmt.Errorf("%w: transport data plane: %v", ErrUnavailable, err)
		}
		if kind != KindTransportFrame {
			err := fmt.Errorf("%w: record kind %d id %d is not a transport frame", ring.ErrCorrupt, kind, id)
			c.dp.fault(err)
			return fmt.Errorf("%w: transport data plane: %v", ErrUnavailable, err)
		}
		f := &ferryv1.TransportFrame{}
		if err := unmarshalFrame(p, f); err != nil {
			// The record itself is sound (its checksum matched): what it
			// carries came from a client (a string that is not UTF-8, say).
			// That request fails; the plugin is not killed for it.
			_ = c.dp.write(KindCoreFrame, id, &ferryv1.CoreFrame{Id: id,
				Error: ErrorToProto(fmt.Errorf("%w: request the transport forwarded does not decode: %v", ErrInvalidArgument, err))})
			continue
		}
		f.Id = id
		var wires MessageWires
		if pr := f.GetProduce(); pr != nil {
			if prep != nil {
				prep.PrepareProduce()
			}
			// Kept for the store's ring (append_wire.go); a traced
			// produce is decoded all the way, as its hops add spans.
			if !telemetry.Enabled() {
				wires = produceWires(p, len(pr.Messages))
			}
		}
		reqs.handleWires(f, wires)
	}
}

// Close releases the data plane; the host stops the plugin process.
func (c *TransportClient) Close() error {
	c.dp.release()
	return nil
}
