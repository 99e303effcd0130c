package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/telemetry"
)

var storageTracer = telemetry.Tracer(telemetry.ComponentStorage)

// storageServer adapts a Storage to the Storage gRPC service (plugin side).
type storageServer struct {
	ferryv1.UnimplementedStorageServer
	impl Storage
}

func (s *storageServer) Append(stream ferryv1.Storage_AppendServer) error {
	// Sends are serialised here: an early answer (written) goes out from a
	// request's own goroutine, alongside the final answers serveOrdered sends.
	var sendMu sync.Mutex
	send := func(r *ferryv1.AppendResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	return serveOrdered(stream.Context(), stream.Recv, send, func(ctx context.Context, req *ferryv1.AppendRequest) func() *ferryv1.AppendResponse {
		return s.startAppend(ctx, req, send)
	})
}

// startAppend calls Append for req, in stream order (that fixes the
// offsets), and returns what finishes it: waiting for durability and
// building the final answer. An early answer (written), when asked for, goes
// out through send from the finishing goroutine. The gRPC stream and the
// ring data plane share it.
func (s *storageServer) startAppend(ctx context.Context, req *ferryv1.AppendRequest, send func(*ferryv1.AppendResponse) error) func() *ferryv1.AppendResponse {
	return s.startAppendOf(ctx, req, nil, send)
}

// startAppendOf is startAppend; with wires (not nil), of the messages in
// their wire form (WireAppender), which s.impl must have, and which only an
// untraced append uses: req.Messages is empty then.
func (s *storageServer) startAppendOf(ctx context.Context, req *ferryv1.AppendRequest, wires []WireAppend, send func(*ferryv1.AppendResponse) error) func() *ferryv1.AppendResponse {
	early, canEarly := s.impl.(EarlyOffsets)
	// A span in each sampled message's trace, under its broker.append,
	// and one for the batch, under the broker's batch span that sent it
	// (telemetry.StartHop).
	var span telemetry.Hop
	if telemetry.Enabled() {
		span = telemetry.StartHop(telemetry.Extract(ctx, req.Trace), storageTracer, telemetry.SpanStorageAppend, req.Messages,
			telemetry.Traced{Index: req.TracedIndex, Span: req.TracedSpan})
		span.ForMessages(func(i int, s trace.Span) {
			s.SetAttributes(telemetry.AttrTopic.String(req.Messages[i].Topic), telemetry.AttrQueue.Int(int(req.Messages[i].Queue)))
		})
	}
	var (
		written AppendWritten
		wait    AppendWait
		err     error
	)
	if req.LogDurable {
		ctx = WithLogDurable(ctx)
	}
	switch {
	case wires != nil:
		written, wait, err = s.impl.(WireAppender).AppendWire(ctx, wires)
		if !req.WantWritten {
			written = nil
		}
	case req.WantWritten && canEarly:
		written, wait, err = early.AppendEarly(ctx, req.Messages)
	default:
		wait, err = s.impl.Append(ctx, req.Messages)
	}
	if err != nil {
		span.RecordError(err)
		span.End()
		return func() *ferryv1.AppendResponse {
			return &ferryv1.AppendResponse{Seq: req.Seq, Error: ErrorToProto(err)}
		}
	}
	span.End()
	return func() *ferryv1.AppendResponse {
		if written != nil {
			// The early answer; on an error the final answer tells.
			if offsets, err := written(ctx); err == nil {
				_ = send(&ferryv1.AppendResponse{Seq: req.Seq, Offsets: offsets, Written: true})
			}
		}
		var flush telemetry.Hop
		if span.Ctx != nil {
			flush = telemetry.StartHop(span.Ctx, storageTracer, telemetry.SpanStorageFlush, req.Messages, span.Traced())
		}
		offsets, err := wait(ctx)
		if err != nil {
			flush.RecordError(err)
		} else if flush.Recording() {
			flush.SetOffsets(offsets)
		}
		flush.End()
		resp := &ferryv1.AppendResponse{Seq: req.Seq, Offsets: offsets, Status: ferryv1.Status_STATUS_OK}
		switch {
		case err == nil:
		case errors.Is(err, ErrFlushTimeout) && len(offsets) > 0:
			resp.Status = ferryv1.Status_STATUS_FLUSH_TIMEOUT
		default:
			resp = &ferryv1.AppendResponse{Seq: req.Seq, Error: ErrorToProto(err)}
		}
		return resp
	}
}

func (s *storageServer) Read(stream ferryv1.Storage_ReadServer) error {
	ctx := stream.Context()
	var sendMu sync.Mutex
	var reads sync.WaitGroup
	defer reads.Wait()
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		reads.Add(1)
		go func() {
			defer reads.Done()
			resp := s.read(ctx, req)
			resp.Id = req.Id
			sendMu.Lock()
			_ = stream.Send(resp)
			sendMu.Unlock()
		}()
	}
}

// read runs a Read and records, in the trace of each sampled message read,
// a storage.read span (with a batch span for more than one message),
// whose ids go back with the answer for the broker's delivery spans. The
// gRPC stream and the ring data plane share it.
func (s *storageServer) read(ctx context.Context, req *ferryv1.ReadRequest) *ferryv1.ReadResponse {
	start := time.Now()
	resp, err := s.impl.Read(ctx, req)
	if err != nil {
		return &ferryv1.ReadResponse{Error: ErrorToProto(err)}
	}
	if telemetry.Enabled() && len(resp.Messages) > 0 {
		msgs := resp.Messages
		if strings.HasPrefix(req.Topic, retryPrefix) {
			// The broker holds back a retry queue's messages from the
			// first that is not due: they are read again, and traced
			// when they are delivered.
			msgs = msgs[:dueMessages(msgs, time.Now())]
		}
		traceRead(ctx, req, resp, msgs, func(i int) int64 { return msgs[i].Offset }, start)
	}
	return resp
}

// traceRead records the read's hop in the traces of its sampled messages
// (msgs, or stand-ins with their headers and ids; offset gives each one's
// offset) and sets the answer's traced fields for the broker's next hop.
func traceRead(ctx context.Context, req *ferryv1.ReadRequest, resp *ferryv1.ReadResponse, msgs []*Message, offset func(int) int64, start time.Time) {
	in := telemetry.Sampled(msgs)
	if in.Len() == 0 {
		return
	}
	hop := telemetry.StartHop(telemetry.Extract(ctx, req.Trace), storageTracer, telemetry.SpanStorageRead, msgs, in,
		trace.WithTimestamp(start),
		trace.WithAttributes(telemetry.AttrTopic.String(req.Topic), telemetry.AttrQueue.Int(int(req.Queue))))
	hop.ForMessages(func(i int, s trace.Span) { s.SetAttributes(telemetry.AttrOffset.Int64(offset(i))) })
	t := hop.Traced()
	resp.TracedIndex, resp.TracedSpan = t.Index, t.Span
	hop.End()
}

// untracedMessage stands in, for traceRead, for a stored message whose
// wire form holds no traceparent: no trace recorded it. Read only.
var untracedMessage = &Message{}

// traceWireRead is traceRead for a read in wire form (WireReader). Since an
// unsampled message carries no traceparent, a message whose encoding does
// not contain the header's name is in no sampled trace and is not decoded;
// the others are, for their headers and ids.
func traceWireRead(ctx context.Context, req *ferryv1.ReadRequest, resp *ferryv1.ReadResponse, wire []WireMessage, start time.Time) error {
	var msgs []*Message
	for i, w := range wire {
		if !bytes.Contains(w.Wire, traceparentKey) {
			continue
		}
		if msgs == nil {
			msgs = make([]*Message, len(wire))
			for j := range msgs {
				msgs[j] = untracedMessage
			}
		}
		m := &Message{}
		if err := m.UnmarshalVT(w.Wire); err != nil {
			return fmt.Errorf("%w: stored message at offset %d does not decode: %v", ErrCorrupt, w.Offset, err)
		}
		msgs[i] = m
	}
	if msgs != nil {
		traceRead(ctx, req, resp, msgs, func(i int) int64 { return wire[i].Offset }, start)
	}
	return nil
}

var traceparentKey = []byte(telemetry.HeaderTraceparent)

// dueMessages is how many of a retry queue's msgs, from the first, are due
// at now (HeaderDeliverAt), as the broker counts them when it delivers.
func dueMessages(msgs []*Message, now time.Time) int {
	for i, m := range msgs {
		v, ok := m.Headers[HeaderDeliverAt]
		if !ok {
			continue
		}
		if at, err := strconv.ParseInt(v, 10, 64); err == nil && time.Unix(0, at).After(now) {
			return i
		}
	}
	return len(msgs)
}

func (s *storageServer) CommitOffsets(ctx context.Context, req *ferryv1.CommitOffsetsRequest) (*ferryv1.CommitOffsetsResponse, error) {
	if err := s.impl.CommitOffsets(ctx, req.Group, req.Offsets); err != nil {
		return nil, err
	}
	return &ferryv1.CommitOffsetsResponse{}, nil
}

func (s *storageServer) GetOffsets(ctx context.Context, req *ferryv1.GetOffsetsRequest) (*ferryv1.GetOffsetsResponse, error) {
	offs, err := s.impl.GetOffsets(ctx, req.Group, req.Queues)
	if err != nil {
		return nil, err
	}
	return &ferryv1.GetOffsetsResponse{Offsets: offs}, nil
}

func (s *storageServer) StoredGroups(ctx context.Context, _ *ferryv1.StoredGroupsRequest) (*ferryv1.StoredGroupsResponse, error) {
	gs, ok := s.impl.(GroupStore)
	if !ok {
		return nil, fmt.Errorf("%w: this store does not list consumer groups (sdk.GroupStore)", errors.ErrUnsupported)
	}
	groups, err := gs.StoredGroups(ctx)
	if err != nil {
		return nil, err
	}
	return &ferryv1.StoredGroupsResponse{Groups: groups}, nil
}

func (s *storageServer) DeleteGroupOffsets(ctx context.Context, req *ferryv1.DeleteGroupOffsetsRequest) (*ferryv1.DeleteGroupOffsetsResponse, error) {
	gs, ok := s.impl.(GroupStore)
	if !ok {
		return nil, fmt.Errorf("%w: this store does not delete consumer groups' offsets (sdk.GroupStore)", errors.ErrUnsupported)
	}
	if err := gs.DeleteGroupOffsets(ctx, req.Group); err != nil {
		return nil, err
	}
	return &ferryv1.DeleteGroupOffsetsResponse{}, nil
}

func (s *storageServer) OffsetsForTime(ctx context.Context, req *ferryv1.OffsetsForTimeRequest) (*ferryv1.OffsetsForTimeResponse, error) {
	ts, ok := s.impl.(TimeSeeker)
	if !ok {
		return nil, fmt.Errorf("%w: this store does not seek by time (sdk.TimeSeeker)", errors.ErrUnsupported)
	}
	offs, err := ts.OffsetsForTime(ctx, req.UnixNano, req.Queues)
	if err != nil {
		return nil, err
	}
	if len(offs) != len(req.Queues) {
		return nil, fmt.Errorf("storage plugin: OffsetsForTime answered %d offsets for %d queues", len(offs), len(req.Queues))
	}
	return &ferryv1.OffsetsForTimeResponse{Offsets: offs}, nil
}

// SetTopicRetention hands the store the topics' own retention
// (sdk.TopicRetainer).
func (s *storageServer) SetTopicRetention(ctx context.Context, req *ferryv1.SetTopicRetentionRequest) (*ferryv1.SetTopicRetentionResponse, error) {
	tr, ok := s.impl.(TopicRetainer)
	if !ok {
		return nil, fmt.Errorf("%w: this store has no retention per topic (sdk.TopicRetainer)", errors.ErrUnsupported)
	}
	if err := tr.SetTopicRetention(ctx, req.Topics); err != nil {
		return nil, err
	}
	return &ferryv1.SetTopicRetentionResponse{}, nil
}

// Sync makes every earlier append durable (sdk.Syncer).
func (s *storageServer) Sync(ctx context.Context, _ *ferryv1.SyncRequest) (*ferryv1.SyncResponse, error) {
	sy, ok := s.impl.(Syncer)
	if !ok {
		return nil, fmt.Errorf("%w: this store fsyncs every append itself (no sdk.Syncer)", errors.ErrUnsupported)
	}
	if err := sy.Sync(ctx); err != nil {
		return nil, err
	}
	return &ferryv1.SyncResponse{}, nil
}

func (s *storageServer) QueueBytes(ctx context.Context, req *ferryv1.QueueBytesRequest) (*ferryv1.QueueBytesResponse, error) {
	qs, ok := s.impl.(QueueSizer)
	if !ok {
		return nil, fmt.Errorf("%w: this store does not size its queues (sdk.QueueSizer)", errors.ErrUnsupported)
	}
	bytes, err := qs.QueueBytes(ctx, req.Queues)
	if err != nil {
		return nil, err
	}
	if len(bytes) != len(req.Queues) {
		return nil, fmt.Errorf("storage plugin: QueueBytes answered %d sizes for %d queues", len(bytes), len(req.Queues))
	}
	return &ferryv1.QueueBytesResponse{Bytes: bytes}, nil
}

func (s *storageServer) DeleteTopicData(ctx context.Context, req *ferryv1.DeleteTopicDataRequest) (*ferryv1.DeleteTopicDataResponse, error) {
	td, ok := s.impl.(TopicDeleter)
	if !ok {
		return nil, fmt.Errorf("%w: this store does not delete topics (sdk.TopicDeleter)", errors.ErrUnsupported)
	}
	if err := td.DeleteTopicData(ctx, req.Topic); err != nil {
		return nil, err
	}
	return &ferryv1.DeleteTopicDataResponse{}, nil
}

// StorageClient is the host's side of a storage plugin over gRPC. It
// implements Storage; Append and Read are multiplexed over one stream each,
// opened on first use. When a stream breaks, every call waiting on it fails
// with ErrUnavailable (outcome unknown) and the client stays broken: the
// host starts a new plugin process and a new client.
type StorageClient struct {
	pluginClient
	rpc ferryv1.StorageClient

	appends *clientStream[*ferryv1.AppendRequest, *ferryv1.AppendResponse]
	earlyMu sync.Mutex
	early   map[uint64]chan []int64 // calls waiting for an early answer, by seq
	reads   *clientStream[*ferryv1.ReadRequest, *ferryv1.ReadResponse]

	dp ringHost // the shared-memory data plane, when the plugin took it

	// sendWires are the wire forms of the messages of the append being
	// sent (MessageWires), from its build to the ring's send: both run
	// under appends.mu.
	sendWires MessageWires

	// appendPace is how soon the plugin answers appends on the ring: the
	// host spins for an answer only while they come within appendExpect.
	appendPace answerPace
	unary      *pending[ringReply] // CommitOffsets and GetOffsets on the data plane

	ctx    context.Context // lives as long as the client; ends the streams
	cancel context.CancelFunc
}

var (
	_ Storage       = (*StorageClient)(nil)
	_ EarlyOffsets  = (*StorageClient)(nil)
	_ GroupStore    = (*StorageClient)(nil)
	_ TopicDeleter  = (*StorageClient)(nil)
	_ TimeSeeker    = (*StorageClient)(nil)
	_ QueueSizer    = (*StorageClient)(nil)
	_ Syncer        = (*StorageClient)(nil)
	_ TopicRetainer = (*StorageClient)(nil)
	_ RingUser      = (*StorageClient)(nil)
)

// UseRing hands the client a data plane segment to offer at Configure.
func (c *StorageClient) UseRing(seg *ring.Segment, broken func(error)) { c.dp.UseRing(seg, broken) }

// RingPokes counts the pokes that rang the plugin's bell (0 on gRPC).
func (c *StorageClient) RingPokes() uint64 {
	if c.dp.conn != nil {
		return c.dp.conn.Pokes()
	}
	return 0
}

// Poke wakes the plugin's reader of the data plane, if it sleeps, ahead of
// a call about to be written (ring.Conn.Poke). Nothing on gRPC.
func (c *StorageClient) Poke() {
	if c.dp.conn != nil && !pokeOff {
		c.dp.conn.Poke()
	}
}

// Configure configures the plugin, offering the data plane when the host
// handed one over; if the plugin takes it, Append, Read, CommitOffsets and
// GetOffsets go over the rings from now on.
func (c *StorageClient) Configure(ctx context.Context, config []byte, env *Environment) error {
	return c.dp.configureAndStart(ctx, c.pluginClient, config, env, c.startRing)
}

// DataPlane names the data plane the client's hot calls use: DataPlaneRing
// or "grpc".
func (c *StorageClient) DataPlane() string {
	return c.dp.dataPlane()
}

// NewStorageClient returns a client for a storage plugin reached through cc.
func NewStorageClient(cc grpc.ClientConnInterface) *StorageClient {
	ctx, cancel := context.WithCancel(context.Background())
	return &StorageClient{
		pluginClient: newPluginClient(cc),
		rpc:          ferryv1.NewStorageClient(cc),
		appends:      newClientStream[*ferryv1.AppendRequest, *ferryv1.AppendResponse](),
		early:        map[uint64]chan []int64{},
		reads:        newClientStream[*ferryv1.ReadRequest, *ferryv1.ReadResponse](),
		ctx:          ctx,
		cancel:       cancel,
	}
}

// Append sends the batch and returns at once; the AppendWait gets the answer.
func (c *StorageClient) Append(ctx context.Context, msgs []*Message) (AppendWait, error) {
	call, err := c.send(ctx, msgs, false)
	if err != nil {
		return nil, err
	}
	return call.wait, nil
}

// AppendEarly is Append that also asks the plugin for the batch's offsets as
// soon as they are fixed (sdk.EarlyOffsets). A plugin that does not send an
// early answer ends the AppendWritten with its final answer.
func (c *StorageClient) AppendEarly(ctx context.Context, msgs []*Message) (AppendWritten, AppendWait, error) {
	call, err := c.send(ctx, msgs, true)
	if err != nil {
		return nil, nil, err
	}
	return call.awaitWritten, call.wait, nil
}

// send sends one AppendRequest on the multiplexed stream.
func (c *StorageClient) send(ctx context.Context, msgs []*Message, wantWritten bool) (*appendCall, error) {
	if err := openStream(c.appends, func() (ferryv1.Storage_AppendClient, error) { return c.rpc.Append(c.ctx) },
		c.answerSeq); err != nil {
		return nil, err
	}
	tc := telemetry.Inject(ctx, nil)
	traced := telemetry.TracedFromContext(ctx)
	var timeout int64
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(dl)), 1)
	}
	wires := MessageWiresOf(ctx, msgs)
	if telemetry.Enabled() || c.dp.conn == nil {
		wires = nil
	}
	if wires != nil {
		if err := checkWires(msgs, wires); err != nil {
			wireMismatches.Add(1)
			fmt.Fprintf(os.Stderr, "%s [ERROR] ferry.sdk: append wire mismatch: %v\n", time.Now().UTC().Format(time.RFC3339Nano), err)
			wires = nil
		}
	}
	call := &appendCall{c: c}
	if wantWritten {
		call.written = make(chan []int64, 1)
	}
	seq, ch, err := c.appends.call(func(seq uint64) *ferryv1.AppendRequest {
		if wantWritten {
			// Registered before the request is sent: the early
			// answer may come back at once.
			c.earlyMu.Lock()
			c.early[seq] = call.written
			c.earlyMu.Unlock()
		}
		c.sendWires = wires // for the ring's send, which follows under the same lock
		return &ferryv1.AppendRequest{Seq: seq, Messages: msgs, Trace: tc, TimeoutNanos: timeout, WantWritten: wantWritten,
			TracedIndex: traced.Index, TracedSpan: traced.Span, LogDurable: LogDurable(ctx)}
	})
	if err != nil {
		return nil, err
	}
	call.seq, call.ch = seq, ch
	return call, nil
}

// answerSeq gives the call id of an answer for the stream's receive loop. An
// early answer (written) is handed to its call's written channel here, and 0,
// which no call has, is returned for it: the final answer resolves the call.
func (c *StorageClient) answerSeq(r *ferryv1.AppendResponse) uint64 {
	c.earlyMu.Lock()
	ch, ok := c.early[r.Seq]
	delete(c.early, r.Seq) // at most one early answer, always before the final one
	c.earlyMu.Unlock()
	if !r.Written {
		return r.Seq
	}
	if ok {
		ch <- r.Offsets // buffered, one send
	}
	return 0
}

// forget drops what the client keeps for a call whose caller gave up.
func (c *StorageClient) forget(seq uint64) {
	c.appends.calls.drop(seq)
	c.earlyMu.Lock()
	delete(c.early, seq)
	c.earlyMu.Unlock()
}

// appendCall is one AppendRequest waiting for its answers.
type appendCall struct {
	c       *StorageClient
	seq     uint64
	ch      chan result[*ferryv1.AppendResponse] // the final answer
	written chan []int64                         // the early answer; nil unless asked for

	mu    sync.Mutex
	final *result[*ferryv1.AppendResponse] // the final answer, when awaitWritten took it
}

// awaitWritten is the call's AppendWritten: the early answer, or the final
// one when it comes first (a plugin that sends no early answer).
func (a *appendCall) awaitWritten(ctx context.Context) ([]int64, error) {
	select {
	case offsets := <-a.written:
		return offsets, nil
	case r := <-a.ch:
		a.mu.Lock()
		a.final = &r
		a.mu.Unlock()
		offsets, err := appendOutcome(r)
		if errors.Is(err, ErrFlushTimeout) {
			err = nil // written, not flushed: the AppendWait tells
		}
		return offsets, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wait is the call's AppendWait.
func (a *appendCall) wait(ctx context.Context) ([]int64, error) {
	a.mu.Lock()
	final := a.final
	a.mu.Unlock()
	if final != nil {
		return appendOutcome(*final)
	}
	select {
	case r := <-a.ch:
		return appendOutcome(r)
	case <-ctx.Done():
		// The outcome is unknown; a retry with the same ids is safe.
		a.c.forget(a.seq)
		return nil, ctx.Err()
	}
}

// appendOutcome is what a final answer means to an AppendWait.
func appendOutcome(r result[*ferryv1.AppendResponse]) ([]int64, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.v.Error != nil {
		return nil, ErrorFromProto(r.v.Error)
	}
	if r.v.Status == ferryv1.Status_STATUS_FLUSH_TIMEOUT {
		return r.v.Offsets, ErrFlushTimeout
	}
	return r.v.Offsets, nil
}

func (c *StorageClient) Read(ctx context.Context, req *ReadRequest) (*ReadResponse, error) {
	resp, err := c.read(ctx, req)
	if err != nil {
		return nil, err
	}
	if c.dp.conn != nil { // the ring's answers keep their messages encoded until here
		if err := decodedRead(resp); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

var _ EncodedReader = (*StorageClient)(nil)

// ReadEncoded implements EncodedReader.
func (c *StorageClient) ReadEncoded(ctx context.Context, req *ReadRequest) (*ReadResponse, EncodedMessages, error) {
	if c.dp.conn == nil {
		resp, err := c.Read(ctx, req)
		return resp, EncodedMessages{}, err
	}
	resp, err := c.read(ctx, req)
	if err != nil {
		return nil, EncodedMessages{}, err
	}
	msgs, err := encodedRead(resp)
	if err != nil {
		return nil, EncodedMessages{}, err
	}
	return resp, msgs, nil
}

// read is a Read whose answer, from the ring, still holds its messages
// encoded (splitRead).
func (c *StorageClient) read(ctx context.Context, req *ReadRequest) (*ReadResponse, error) {
	if err := openStream(c.reads, func() (ferryv1.Storage_ReadClient, error) { return c.rpc.Read(c.ctx) },
		func(r *ferryv1.ReadResponse) uint64 { return r.Id }); err != nil {
		return nil, err
	}
	id, ch, err := c.reads.call(func(id uint64) *ferryv1.ReadRequest {
		return &ferryv1.ReadRequest{Id: id, Topic: req.Topic, Queue: req.Queue, Offset: req.Offset,
			MaxMessages: req.MaxMessages, MaxBytes: req.MaxBytes, Trace: req.Trace}
	})
	if err != nil {
		return nil, err
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, res.err
		}
		if res.v.Error != nil {
			return nil, ErrorFromProto(res.v.Error)
		}
		return res.v, nil
	case <-ctx.Done():
		c.reads.calls.drop(id)
		return nil, ctx.Err()
	}
}

func (c *StorageClient) CommitOffsets(ctx context.Context, group string, offsets []*GroupOffset) error {
	if c.dp.conn != nil {
		return c.ringCall(ctx, KindCommitOffsets, &ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets}, &ferryv1.CommitOffsetsResponse{})
	}
	_, err := c.rpc.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Offsets: offsets})
	return err
}

func (c *StorageClient) GetOffsets(ctx context.Context, group string, queues []*QueueRef) ([]*QueueOffsets, error) {
	if c.dp.conn != nil {
		resp := &ferryv1.GetOffsetsResponse{}
		if err := c.ringCall(ctx, KindGetOffsets, &ferryv1.GetOffsetsRequest{Group: group, Queues: queues}, resp); err != nil {
			return nil, err
		}
		return resp.Offsets, nil
	}
	resp, err := c.rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Group: group, Queues: queues})
	if err != nil {
		return nil, err
	}
	return resp.Offsets, nil
}

// StoredGroups asks the plugin for its groups (sdk.GroupStore): a control
// call, over gRPC even when the data plane is on the rings.
// errors.ErrUnsupported when the plugin lacks the capability.
func (c *StorageClient) StoredGroups(ctx context.Context) ([]string, error) {
	resp, err := c.rpc.StoredGroups(ctx, &ferryv1.StoredGroupsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.Groups, nil
}

// DeleteGroupOffsets asks the plugin to remove a group's offsets
// (sdk.GroupStore), over gRPC like StoredGroups.
func (c *StorageClient) DeleteGroupOffsets(ctx context.Context, group string) error {
	_, err := c.rpc.DeleteGroupOffsets(ctx, &ferryv1.DeleteGroupOffsetsRequest{Group: group})
	return err
}

// DeleteTopicData asks the plugin to delete a topic's data
// (sdk.TopicDeleter), over gRPC like StoredGroups.
func (c *StorageClient) DeleteTopicData(ctx context.Context, topic string) error {
	_, err := c.rpc.DeleteTopicData(ctx, &ferryv1.DeleteTopicDataRequest{Topic: topic})
	return err
}

// OffsetsForTime asks the plugin for the offsets of a time
// (sdk.TimeSeeker): a control call, over gRPC like StoredGroups, even when
// the data plane is on the rings. errors.ErrUnsupported when the plugin
// lacks the capability.
func (c *StorageClient) OffsetsForTime(ctx context.Context, unixNano int64, queues []*QueueRef) ([]int64, error) {
	resp, err := c.rpc.OffsetsForTime(ctx, &ferryv1.OffsetsForTimeRequest{UnixNano: unixNano, Queues: queues})
	if err != nil {
		return nil, err
	}
	if len(resp.Offsets) != len(queues) {
		return nil, fmt.Errorf("%w: storage plugin answered %d offsets for %d queues", ErrUnavailable, len(resp.Offsets), len(queues))
	}
	return resp.Offsets, nil
}

// SetTopicRetention hands the plugin the topics' own retention
// (sdk.TopicRetainer), over gRPC: errors.ErrUnsupported when the plugin
// lacks the capability or one of the settings.
func (c *StorageClient) SetTopicRetention(ctx context.Context, topics []*TopicRetention) error {
	_, err := c.rpc.SetTopicRetention(ctx, &ferryv1.SetTopicRetentionRequest{Topics: topics})
	return err
}

// Sync asks the plugin to make every earlier append durable (sdk.Syncer):
// errors.ErrUnsupported when the plugin lacks it (it then ignored
// LogDurable and fsynced each append as its policy says).
func (c *StorageClient) Sync(ctx context.Context) error {
	_, err := c.rpc.Sync(ctx, &ferryv1.SyncRequest{})
	return err
}

// QueueBytes asks the plugin for its queues' sizes (sdk.QueueSizer): a
// control call over gRPC. errors.ErrUnsupported when the plugin lacks the
// capability.
func (c *StorageClient) QueueBytes(ctx context.Context, queues []*QueueRef) ([]int64, error) {
	resp, err := c.rpc.QueueBytes(ctx, &ferryv1.QueueBytesRequest{Queues: queues})
	if err != nil {
		return nil, err
	}
	if len(resp.Bytes) != len(queues) {
		return nil, fmt.Errorf("%w: storage plugin answered %d sizes for %d queues", ErrUnavailable, len(resp.Bytes), len(queues))
	}
	return resp.Bytes, nil
}

// Close ends the client's streams. Appends still waiting fail with
// ErrUnavailable. The plugin process itself is stopped by the host.
func (c *StorageClient) Close() error {
	c.appends.closeSend()
	c.cancel()
	c.dp.release()
	return nil
}
