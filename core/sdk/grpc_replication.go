package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/telemetry"
)

// replicationServer adapts a Replication to the Replication gRPC service
// (plugin side).
type replicationServer struct {
	ferryv1.UnimplementedReplicationServer
	impl Replication
	ring *replicaCoreClient // the core over the ring data plane, once the host offered it
}

var replicationTracer = telemetry.Tracer(telemetry.ComponentReplication)

func (s *replicationServer) Replicate(stream ferryv1.Replication_ReplicateServer) error {
	return serveOrdered(stream.Context(), stream.Recv, stream.Send, s.startReplicate)
}

// startReplicate hands one batch to the plugin (in stream or ring order) and
// returns what finishes it: the wait for its replication level, and the
// answer.
func (s *replicationServer) startReplicate(ctx context.Context, req *ferryv1.ReplicateRequest) func() *ferryv1.ReplicateResponse {
	// One span per batch, under the broker's span that sent it, linked
	// to the messages' own traces; it lasts until the batch is
	// replicated as far as the plugin's level demands.
	// A span in each sampled message's trace too, under its broker.append
	// (telemetry.StartHop).
	var span telemetry.Hop
	if telemetry.Enabled() {
		span = telemetry.StartHop(telemetry.Extract(ctx, req.Trace), replicationTracer, telemetry.SpanReplicationReplicate, req.Messages,
			telemetry.Traced{Index: req.TracedIndex, Span: req.TracedSpan})
	}
	wait, err := s.impl.Replicate(ctx, req.Messages)
	if err != nil {
		span.RecordError(err)
		span.End()
		return func() *ferryv1.ReplicateResponse {
			return &ferryv1.ReplicateResponse{Seq: req.Seq, Error: ErrorToProto(err)}
		}
	}
	return func() *ferryv1.ReplicateResponse {
		st, offs, err := wait(ctx)
		if err != nil {
			span.RecordError(err)
		}
		span.SetAttributes(telemetry.AttrStatus.String(st.String()))
		span.End()
		return &ferryv1.ReplicateResponse{Seq: req.Seq, Status: st, Offsets: offs, Error: ErrorToProto(err)}
	}
}

func (s *replicationServer) Connect(stream ferryv1.Replication_ConnectServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	if s.ring != nil {
		// The calls flow on the ring; the stream only bounds Serve: it
		// ends when the host's side ends.
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					cancel()
					return
				}
			}
		}()
		return s.impl.Serve(ctx, s.ring)
	}
	core := &replicaCoreClient{sendFrame: stream.Send, calls: newPending[*ferryv1.ReplicaCoreFrame]()}
	go func() {
		for {
			f, err := stream.Recv()
			if err != nil {
				core.calls.fail(fmt.Errorf("core connection closed: %w", err))
				cancel()
				return
			}
			core.calls.resolve(f.Id, f, nil)
		}
	}()
	return s.impl.Serve(ctx, core)
}

func (s *replicationServer) Status(ctx context.Context, req *ferryv1.ReplicationStatusRequest) (*ferryv1.ReplicationStatusResponse, error) {
	mode := ModeApplyFirst
	if m, ok := s.impl.(ReplicationMode); ok {
		mode = m.Mode()
	}
	_, offsets := s.impl.(OffsetReplication)
	_, topics := s.impl.(TopicReplication)
	_, groups := s.impl.(GroupDeleteReplication)
	_, waits := s.impl.(OffsetCommitter)
	if req.ModeOnly {
		return &ferryv1.ReplicationStatusResponse{Mode: mode, ReplicatesOffsets: offsets, ReplicatesTopics: topics, ReplicatesGroupDeletes: groups, WaitsOffsets: waits}, nil
	}
	st, err := s.impl.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Mode == "" {
		st.Mode = mode
	}
	st.ReplicatesOffsets = offsets
	st.ReplicatesTopics = topics
	st.ReplicatesGroupDeletes = groups
	st.WaitsOffsets = waits
	return st, nil
}

// ReplicateGroupDelete hands a group's deletion to the plugin; one without
// GroupDeleteReplication answers UNIMPLEMENTED (the broker does not call
// it: Status did not announce it).
func (s *replicationServer) ReplicateGroupDelete(ctx context.Context, req *ferryv1.DeleteGroupOffsetsRequest) (*ferryv1.DeleteGroupOffsetsResponse, error) {
	g, ok := s.impl.(GroupDeleteReplication)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this replication plugin does not replicate consumer group deletions")
	}
	if err := g.ReplicateGroupDelete(ctx, req.Group, req.Generation); err != nil {
		return nil, err
	}
	return &ferryv1.DeleteGroupOffsetsResponse{}, nil
}

// ReplicateTopics hands a change of the topic metadata to the plugin; one
// without TopicReplication answers UNIMPLEMENTED (the broker does not call
// it: Status did not announce it).
func (s *replicationServer) ReplicateTopics(ctx context.Context, req *ferryv1.TopicChange) (*ferryv1.TopicChangeResponse, error) {
	t, ok := s.impl.(TopicReplication)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this replication plugin does not replicate topic metadata")
	}
	if err := t.ReplicateTopics(ctx, req); err != nil {
		return nil, err
	}
	return &ferryv1.TopicChangeResponse{}, nil
}

// ReplicateOffsets hands a group's committed offsets to the plugin; one
// without OffsetReplication answers UNIMPLEMENTED (the broker does not call
// it: Status did not announce it). With req.Wait it is OffsetCommitter's
// CommitOffsets, answered once the offsets are committed.
func (s *replicationServer) ReplicateOffsets(ctx context.Context, req *ferryv1.CommitOffsetsRequest) (*ferryv1.CommitOffsetsResponse, error) {
	if req.Wait {
		c, ok := s.impl.(OffsetCommitter)
		if !ok {
			return nil, status.Error(codes.Unimplemented, "this replication plugin cannot wait until consumer offsets are committed (no waits_offsets)")
		}
		if err := c.CommitOffsets(ctx, req.Group, req.Generation, req.Offsets); err != nil {
			return nil, err
		}
		return &ferryv1.CommitOffsetsResponse{}, nil
	}
	o, ok := s.impl.(OffsetReplication)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this replication plugin does not replicate consumer offsets")
	}
	if err := o.ReplicateOffsets(ctx, req.Group, req.Offsets); err != nil {
		return nil, err
	}
	return &ferryv1.CommitOffsetsResponse{}, nil
}

// replicaCoreClient is ReplicaCore as a replication plugin sees it: each call
// is a frame on the Connect stream or the ring data plane, answered by id.
// Frames are sent in call order and the core handles Apply frames in the
// order received.
type replicaCoreClient struct {
	sendMu    sync.Mutex
	sendFrame func(*ferryv1.ReplicationFrame) error
	calls     *pending[*ferryv1.ReplicaCoreFrame]
}

func (c *replicaCoreClient) start(ctx context.Context, f *ferryv1.ReplicationFrame) (func(context.Context) (*ferryv1.ReplicaCoreFrame, error), error) {
	id, ch, err := c.calls.add()
	if err != nil {
		return nil, err
	}
	f.Id = id
	if dl, ok := ctx.Deadline(); ok {
		f.TimeoutNanos = max(int64(time.Until(dl)), 1)
	}
	c.sendMu.Lock()
	err = c.sendFrame(f)
	c.sendMu.Unlock()
	if err != nil {
		c.calls.fail(err)
	}
	return func(ctx context.Context) (*ferryv1.ReplicaCoreFrame, error) {
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
			return nil, ctx.Err()
		}
	}, nil
}

func (c *replicaCoreClient) call(ctx context.Context, f *ferryv1.ReplicationFrame) (*ferryv1.ReplicaCoreFrame, error) {
	wait, err := c.start(ctx, f)
	if err != nil {
		return nil, err
	}
	return wait(ctx)
}

func (c *replicaCoreClient) Apply(ctx context.Context, msgs []*Message) (ApplyWait, error) {
	wait, err := c.start(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_Apply{Apply: &ferryv1.ApplyRequest{Messages: msgs, LogDurable: LogDurable(ctx)}}})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]int64, error) {
		f, err := wait(ctx)
		if err != nil {
			return nil, err
		}
		return f.GetApply().GetOffsets(), nil
	}, nil
}

func (c *replicaCoreClient) Read(ctx context.Context, req *ReadRequest) (*ReadResponse, error) {
	f, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_Read{Read: req}})
	if err != nil {
		return nil, err
	}
	return f.GetRead(), nil
}

func (c *replicaCoreClient) NodeInfo(ctx context.Context) (*NodeInfo, error) {
	f, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_NodeInfo{NodeInfo: &ferryv1.NodeInfoRequest{}}})
	if err != nil {
		return nil, err
	}
	return f.GetNodeInfo(), nil
}

func (c *replicaCoreClient) SetRole(ctx context.Context, req *SetRoleRequest) error {
	_, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_SetRole{SetRole: req}})
	return err
}

func (c *replicaCoreClient) CommitOffsets(ctx context.Context, group string, offsets []*GroupOffset) error {
	_, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_CommitOffsets{
		CommitOffsets: &ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets}}})
	return err
}

var _ CommitForwarder = (*replicaCoreClient)(nil)

// CommitForwarded hands a follower's forwarded consumer commit to the core
// (CommitForwarder). A core older than the call answers that it does not
// know it: that is errors.ErrUnsupported here.
func (c *replicaCoreClient) CommitForwarded(ctx context.Context, req *CommitOffsetsRequest) error {
	_, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_CommitForwarded{CommitForwarded: req}})
	if errors.Is(err, ErrInvalidArgument) && strings.Contains(err.Error(), "unknown replication request") {
		return fmt.Errorf("the core does not take forwarded commits (%v): %w", err, errors.ErrUnsupported)
	}
	return err
}

func (c *replicaCoreClient) ApplyTopics(ctx context.Context, change *TopicChange) error {
	_, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_ApplyTopics{ApplyTopics: change}})
	return err
}

var _ StoreSyncer = (*replicaCoreClient)(nil)

// SyncStore asks the core to make every earlier apply durable in its store
// (sdk.StoreSyncer).
func (c *replicaCoreClient) SyncStore(ctx context.Context) error {
	_, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_SyncStore{SyncStore: &ferryv1.SyncStoreRequest{}}})
	return err
}

func (c *replicaCoreClient) DeleteGroupOffsets(ctx context.Context, group string, generation uint64) error {
	_, err := c.call(ctx, &ferryv1.ReplicationFrame{Request: &ferryv1.ReplicationFrame_DeleteGroupOffsets{
		DeleteGroupOffsets: &ferryv1.DeleteGroupOffsetsRequest{Group: group, Generation: generation}}})
	return err
}

// ReplicationClient is the host's side of a replication plugin over gRPC.
// Replicate is multiplexed over one stream, opened on first use; when it
// breaks every waiting call fails with ErrUnavailable and the client stays
// broken (the host starts a new process and a new client).
type ReplicationClient struct {
	pluginClient
	rpc ferryv1.ReplicationClient

	reps *clientStream[*ferryv1.ReplicateRequest, *ferryv1.ReplicateResponse]

	dp    ringHost                       // the shared-memory data plane, when the plugin took it
	calls chan *ferryv1.ReplicationFrame // the plugin's calls read from the ring, for Serve

	modeMu  sync.Mutex
	mode    string // "" until the plugin answered
	offsets bool   // the plugin announced ReplicateOffsets
	topics  bool   // the plugin announced ReplicateTopics
	groups  bool   // the plugin announced ReplicateGroupDelete
	waits   bool   // the plugin announced waits_offsets (OffsetCommitter)

	ctx    context.Context
	cancel context.CancelFunc
}

var (
	_ Replication            = (*ReplicationClient)(nil)
	_ ReplicationMode        = (*ReplicationClient)(nil)
	_ OffsetReplication      = (*ReplicationClient)(nil)
	_ OffsetCommitter        = (*ReplicationClient)(nil)
	_ TopicReplication       = (*ReplicationClient)(nil)
	_ GroupDeleteReplication = (*ReplicationClient)(nil)
	_ RingUser               = (*ReplicationClient)(nil)
)

// UseRing hands the client a data plane segment to offer at Configure.
func (c *ReplicationClient) UseRing(seg *ring.Segment, broken func(error)) { c.dp.UseRing(seg, broken) }

// Configure configures the plugin, offering the data plane when the host
// handed one over; if the plugin takes it, Replicate and the plugin's calls
// to the core go over the rings from now on.
func (c *ReplicationClient) Configure(ctx context.Context, config []byte, env *Environment) error {
	return c.dp.configureAndStart(ctx, c.pluginClient, config, env, c.startRing)
}

// DataPlane names the data plane Replicate and the plugin's calls use:
// DataPlaneRing or "grpc".
func (c *ReplicationClient) DataPlane() string {
	return c.dp.dataPlane()
}

// NewReplicationClient returns a client for a replication plugin reached
// through cc.
func NewReplicationClient(cc grpc.ClientConnInterface) *ReplicationClient {
	ctx, cancel := context.WithCancel(context.Background())
	return &ReplicationClient{
		pluginClient: newPluginClient(cc),
		rpc:          ferryv1.NewReplicationClient(cc),
		reps:         newClientStream[*ferryv1.ReplicateRequest, *ferryv1.ReplicateResponse](),
		ctx:          ctx,
		cancel:       cancel,
	}
}

// Mode asks the plugin (through Status) how the broker uses it, once it
// answered; "" when it could not be asked (the caller must not guess: a
// raft plugin taken for master–slave would let a leader store unreplicated
// batches).
func (c *ReplicationClient) Mode() string {
	c.modeMu.Lock()
	defer c.modeMu.Unlock()
	if c.mode != "" {
		return c.mode
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	st, err := c.rpc.Status(ctx, &ferryv1.ReplicationStatusRequest{ModeOnly: true})
	if err != nil {
		return ""
	}
	c.mode, c.offsets, c.topics, c.groups, c.waits = st.Mode, st.ReplicatesOffsets, st.ReplicatesTopics, st.ReplicatesGroupDeletes, st.WaitsOffsets
	if c.mode == "" {
		c.mode = ModeApplyFirst
	}
	return c.mode
}

// ReplicateOffsets sends a group's committed offsets to the plugin. Without
// the capability announced in the plugin's status (an older plugin, or one
// that does not replicate offsets) it returns an error wrapping
// errors.ErrUnsupported and sends nothing.
func (c *ReplicationClient) ReplicateOffsets(ctx context.Context, group string, offsets []*GroupOffset) error {
	if c.Mode() == "" {
		return fmt.Errorf("%w: replication plugin did not answer its status", ErrUnavailable)
	}
	c.modeMu.Lock()
	ok := c.offsets
	c.modeMu.Unlock()
	if !ok {
		return fmt.Errorf("replication plugin does not replicate consumer offsets: %w", errors.ErrUnsupported)
	}
	_, err := c.rpc.ReplicateOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets})
	return err
}

// CommitOffsets sends a group's committed offsets to the plugin and waits
// until they are committed through its log (OffsetCommitter). Without the
// capability announced in the plugin's status it returns an error wrapping
// errors.ErrUnsupported and sends nothing.
func (c *ReplicationClient) CommitOffsets(ctx context.Context, group string, generation uint64, offsets []*GroupOffset) error {
	if c.Mode() == "" {
		return fmt.Errorf("%w: replication plugin did not answer its status", ErrUnavailable)
	}
	c.modeMu.Lock()
	ok := c.waits
	c.modeMu.Unlock()
	if !ok {
		return fmt.Errorf("replication plugin cannot wait until consumer offsets are committed: %w", errors.ErrUnsupported)
	}
	_, err := c.rpc.ReplicateOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets, Wait: true, Generation: generation})
	return err
}

// ReplicateTopics sends a change of the topic metadata to the plugin and
// waits for its answer. Without the capability announced in the plugin's
// status it returns an error wrapping errors.ErrUnsupported and sends
// nothing.
func (c *ReplicationClient) ReplicateTopics(ctx context.Context, change *TopicChange) error {
	if c.Mode() == "" {
		return fmt.Errorf("%w: replication plugin did not answer its status", ErrUnavailable)
	}
	c.modeMu.Lock()
	ok := c.topics
	c.modeMu.Unlock()
	if !ok {
		return fmt.Errorf("this replication plugin does not replicate topic metadata: %w", errors.ErrUnsupported)
	}
	_, err := c.rpc.ReplicateTopics(ctx, change)
	return err
}

// ReplicatesTopics reports whether the plugin announced ReplicateTopics
// (false while its status is not known).
func (c *ReplicationClient) ReplicatesTopics() bool {
	if c.Mode() == "" {
		return false
	}
	c.modeMu.Lock()
	defer c.modeMu.Unlock()
	return c.topics
}

// ReplicateGroupDelete sends a consumer group's deletion to the plugin and
// waits for its answer. Without the capability announced in the plugin's
// status it returns an error wrapping errors.ErrUnsupported and sends
// nothing.
func (c *ReplicationClient) ReplicateGroupDelete(ctx context.Context, group string, generation uint64) error {
	if !c.ReplicatesGroupDeletes() {
		return fmt.Errorf("this replication plugin does not replicate consumer group deletions: %w", errors.ErrUnsupported)
	}
	_, err := c.rpc.ReplicateGroupDelete(ctx, &ferryv1.DeleteGroupOffsetsRequest{Group: group, Generation: generation})
	return err
}

// ReplicatesGroupDeletes reports whether the plugin announced
// ReplicateGroupDelete (false while its status is not known).
func (c *ReplicationClient) ReplicatesGroupDeletes() bool {
	if c.Mode() == "" {
		return false
	}
	c.modeMu.Lock()
	defer c.modeMu.Unlock()
	return c.groups
}

// Replicate sends the batch and returns at once; the ReplicateWait gets the
// answer.
func (c *ReplicationClient) Replicate(ctx context.Context, msgs []*Message) (ReplicateWait, error) {
	if err := openStream(c.reps, func() (ferryv1.Replication_ReplicateClient, error) { return c.rpc.Replicate(c.ctx) },
		func(r *ferryv1.ReplicateResponse) uint64 { return r.Seq }); err != nil {
		return nil, err
	}
	tc := telemetry.Inject(ctx, nil)
	traced := telemetry.TracedFromContext(ctx)
	var timeout int64
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(dl)), 1)
	}
	seq, ch, err := c.reps.call(func(seq uint64) *ferryv1.ReplicateRequest {
		return &ferryv1.ReplicateRequest{Seq: seq, Messages: msgs, TimeoutNanos: timeout, Trace: tc,
			TracedIndex: traced.Index, TracedSpan: traced.Span}
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (Status, []int64, error) {
		select {
		case r := <-ch:
			if r.err != nil {
				return 0, nil, r.err
			}
			if r.v.Error != nil {
				return r.v.Status, nil, ErrorFromProto(r.v.Error)
			}
			return r.v.Status, r.v.Offsets, nil
		case <-ctx.Done():
			c.reps.calls.drop(seq)
			return 0, nil, ctx.Err()
		}
	}, nil
}

// Serve opens the Connect stream and answers the plugin's requests with core
// until ctx ends or the stream breaks (the plugin died: ErrUnavailable).
// Apply requests are started in the order received, so their order holds.
func (c *ReplicationClient) Serve(ctx context.Context, core ReplicaCore) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Connect(ctx)
	if err != nil {
		return fmt.Errorf("%w: replication connect: %v", ErrUnavailable, err)
	}
	if c.dp.conn != nil {
		return c.serveRing(ctx, core, stream)
	}
	var sendMu sync.Mutex
	reqs := newReplicaRequests(ctx, core, func(out *ferryv1.ReplicaCoreFrame) {
		sendMu.Lock()
		_ = stream.Send(out)
		sendMu.Unlock()
	})
	defer reqs.wait()
	for {
		f, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w: replication stream: %v", ErrUnavailable, err)
		}
		reqs.handle(f)
	}
}

func handleReplicationFrame(ctx context.Context, core ReplicaCore, f *ferryv1.ReplicationFrame) *ferryv1.ReplicaCoreFrame {
	out := &ferryv1.ReplicaCoreFrame{Id: f.Id}
	var err error
	switch r := f.Request.(type) {
	case *ferryv1.ReplicationFrame_Read:
		var resp *ferryv1.ReadResponse
		if resp, err = core.Read(ctx, r.Read); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_Read{Read: resp}
		}
	case *ferryv1.ReplicationFrame_NodeInfo:
		var resp *ferryv1.NodeInfoResponse
		if resp, err = core.NodeInfo(ctx); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_NodeInfo{NodeInfo: resp}
		}
	case *ferryv1.ReplicationFrame_SetRole:
		if err = core.SetRole(ctx, r.SetRole); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_SetRole{SetRole: &ferryv1.SetRoleResponse{}}
		}
	case *ferryv1.ReplicationFrame_CommitOffsets:
		if err = core.CommitOffsets(ctx, r.CommitOffsets.Group, r.CommitOffsets.Offsets); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_CommitOffsets{CommitOffsets: &ferryv1.CommitOffsetsResponse{}}
		}
	case *ferryv1.ReplicationFrame_ApplyTopics:
		if err = core.ApplyTopics(ctx, r.ApplyTopics); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_ApplyTopics{ApplyTopics: &ferryv1.TopicChangeResponse{}}
		}
	case *ferryv1.ReplicationFrame_DeleteGroupOffsets:
		if err = core.DeleteGroupOffsets(ctx, r.DeleteGroupOffsets.Group, r.DeleteGroupOffsets.Generation); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_DeleteGroupOffsets{DeleteGroupOffsets: &ferryv1.DeleteGroupOffsetsResponse{}}
		}
	case *ferryv1.ReplicationFrame_CommitForwarded:
		cf, ok := core.(CommitForwarder)
		if !ok {
			err = fmt.Errorf("%w: this core does not take forwarded consumer commits (no sdk.CommitForwarder)", errors.ErrUnsupported)
		} else if err = cf.CommitForwarded(ctx, r.CommitForwarded); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_CommitForwarded{CommitForwarded: &ferryv1.CommitOffsetsResponse{}}
		}
	case *ferryv1.ReplicationFrame_SyncStore:
		ss, ok := core.(StoreSyncer)
		if !ok {
			err = fmt.Errorf("%w: this core cannot sync its store (no sdk.StoreSyncer)", errors.ErrUnsupported)
		} else if err = ss.SyncStore(ctx); err == nil {
			out.Response = &ferryv1.ReplicaCoreFrame_SyncStore{SyncStore: &ferryv1.SyncStoreResponse{}}
		}
	default:
		err = fmt.Errorf("%w: unknown replication request %T", ErrInvalidArgument, f.Request)
	}
	out.Error = ErrorToProto(err)
	return out
}

// Status asks the plugin for its role, replicas and lag.
func (c *ReplicationClient) Status(ctx context.Context) (*ReplicationStatus, error) {
	return c.rpc.Status(ctx, &ferryv1.ReplicationStatusRequest{})
}

// Close ends the client's streams; the host stops the plugin process.
func (c *ReplicationClient) Close() error {
	c.reps.closeSend()
	c.cancel()
	c.dp.release()
	return nil
}
