package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/tlsbatch"
)

const (
	// DefaultMaxRequestBytes is the largest ProduceRequest (one batch for one
	// topic) the client sends; a larger batch fails with
	// sdk.ErrInvalidArgument before anything is sent. The grpc transport
	// accepts at least this much.
	DefaultMaxRequestBytes = 64 << 20
	// maxResponseBytes bounds one answer from the broker (a fetch).
	maxResponseBytes = 256 << 20
	// maxInflightProduce bounds the produce requests of one Client that
	// wait for their answers; a send past it waits (within its timeout).
	maxInflightProduce = 1024
	// DefaultCloseTimeout bounds how long Close waits for consumers'
	// handlers to return (WithCloseTimeout).
	DefaultCloseTimeout = 30 * time.Second
	// DefaultRouteRefresh is how old a producer's route of a topic may
	// grow before the client asks the brokers again (WithRouteRefresh).
	DefaultRouteRefresh = 30 * time.Second
)

// Option configures Dial.
type Option func(*options)

type options struct {
	grpcOpts        []grpc.DialOption
	logger          *slog.Logger
	maxRequestBytes int
	tls             *tls.Config // nil: plaintext (WithTLS)
	closeTimeout    time.Duration
	routeRefresh    time.Duration
	err             error // an option that could not be applied
}

// WithGRPCOptions adds gRPC dial options (TLS credentials, interceptors,
// otelgrpc stats handlers, ...) after the client's own, so they win.
func WithGRPCOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.grpcOpts = append(o.grpcOpts, opts...) }
}

// WithLogger sets where the client reports what it recovers from on its own
// (reconnects, handler errors it retries). Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithMaxRequestBytes changes DefaultMaxRequestBytes. Raise it only together
// with the transport's limit.
func WithMaxRequestBytes(n int) Option { return func(o *options) { o.maxRequestBytes = n } }

// WithCloseTimeout changes DefaultCloseTimeout: how long Close waits for
// the handlers of the client's push consumers to return before it gives up
// on them (see Client.Close). It must be positive.
func WithCloseTimeout(d time.Duration) Option { return func(o *options) { o.closeTimeout = d } }

// WithRouteRefresh changes DefaultRouteRefresh: a producer's route of a
// topic (its queues on each broker) older than d is asked for again, in the
// background, at the next send to it, so that queues added to the topic
// (AlterTopic, by any client or by ferry topic alter) get messages without
// a new client or a reconnect. It must be positive.
func WithRouteRefresh(d time.Duration) Option { return func(o *options) { o.routeRefresh = d } }

// Client is a connection to a Ferry cluster: one broker (Dial) or several
// (DialCluster), shared by any number of producers and consumers and safe for
// concurrent use. It reconnects by itself: a call made while a broker is away
// waits for it within the call's own deadline, or, with several brokers, a
// producer's send moves on to another broker (see ProducerOptions).
//
// Unary calls (Metadata, GetOffsets, consumers' fetches and commits) go to
// the primary broker: the first seed that answered when the client dialled.
type Client struct {
	addr            string // the primary broker's address
	conn            *grpc.ClientConn
	rpc             ferryv1.BrokerClient
	log             *slog.Logger
	maxRequestBytes int
	closeTimeout    time.Duration
	routeRefresh    time.Duration
	dopts           []grpc.DialOption

	ctx    context.Context // ends on Close; the parent of produce streams
	cancel context.CancelFunc

	inflight chan struct{} // one slot per produce request awaiting its answer

	brokersMu sync.Mutex
	brokers   []*brokerConn // seeds in the order given, then brokers learnt from metadata
	primary   *brokerConn

	routesMu  sync.Mutex
	routes    map[string]*topicRoute // producers' routing, per topic
	refreshMu sync.Mutex             // one route refresh at a time

	topicsMu sync.Mutex
	topics   map[string]int32 // queue count per topic on the primary, from Metadata

	consumersMu sync.Mutex
	consumers   map[*runtime]bool // consumers started and not stopped
	closing     bool              // Close began: no consumer starts
}

// register records a starting consumer run for Close; false once Close
// began.
func (c *Client) register(rt *runtime) bool {
	c.consumersMu.Lock()
	defer c.consumersMu.Unlock()
	if c.closing || c.closed() {
		return false
	}
	if c.consumers == nil {
		c.consumers = map[*runtime]bool{}
	}
	c.consumers[rt] = true
	return true
}

// unregister forgets a consumer run that stopped.
func (c *Client) unregister(rt *runtime) {
	c.consumersMu.Lock()
	delete(c.consumers, rt)
	c.consumersMu.Unlock()
}

// stopConsumers stops every consumer started on c and waits for their final
// commits: push consumers (Consume, Run, Launch) are cancelled and their
// handlers in progress finish; pull consumers (Start) are closed. Handlers
// still running when ctx ends are given up on (runtime.giveUp): their
// deliveries are not committed, and the error names the consumers that had
// them.
func (c *Client) stopConsumers(ctx context.Context) error {
	c.consumersMu.Lock()
	c.closing = true
	rts := make([]*runtime, 0, len(c.consumers))
	for rt := range c.consumers {
		rts = append(rts, rt)
	}
	c.consumersMu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, rt := range rts {
		wg.Go(func() {
			rt.cancel()
			if !rt.pushing {
				_ = rt.stop() // its Consumer.Close later returns the same
			}
			select {
			case <-rt.finished:
				return
			case <-ctx.Done():
			}
			n := rt.handling.Load()
			rt.giveUp()
			<-rt.finished // the final commit of what was settled (bounded)
			mu.Lock()
			errs = append(errs, fmt.Errorf("ferry client: close: consumer of topic %q, group %q: %d handler(s) still running; "+
				"their deliveries are not committed and the group gets them again: %w", rt.opts.Topic, rt.group, n, ctx.Err()))
			mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Dial connects to the broker at addr (host:port of its grpc transport) and
// checks that it answers, by fetching the topics' metadata within ctx. It
// fails when the broker cannot be reached now; once dialled, the client
// reconnects by itself whenever the connection breaks. Dial(ctx, a) is
// DialCluster(ctx, []string{a}).
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	return DialCluster(ctx, []string{addr}, opts...)
}

// Close stops the client's consumers and then ends the connections. Each
// running consumer is cancelled as if its context ended: its handlers in
// progress finish, what was settled is committed, it leaves its group, and
// its Run, Consume or Launch returns; pull consumers are closed (Consumer.Close).
// Close waits for those final commits (each bounded by a few seconds), so
// nothing settled is delivered again. Then other calls in flight fail with
// sdk.ErrClosed (or the context error of their caller), and async sends not
// yet answered get their callbacks with sdk.ErrClosed. Safe to call more
// than once.
//
// The wait for handlers is bounded by the close timeout (DefaultCloseTimeout,
// WithCloseTimeout): a handler that has not returned by then is left
// running, and the delivery it holds (with every unsettled one of its
// consumer) is not committed: the group gets it again, from this or another
// member. What was settled before is still committed, the consumer's
// Consume or Launch returns, and Close returns an error wrapping
// context.DeadlineExceeded that names the consumer. A handler that returns
// later settles nothing. CloseContext takes the bound from a context.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.closeTimeout)
	defer cancel()
	return c.CloseContext(ctx)
}

// CloseContext is Close with the wait for consumers' handlers bounded by ctx
// instead of the close timeout: when ctx ends first, the handlers still
// running are given up on as Close describes, and the error wraps ctx's.
// The final commits after that take a few seconds at most.
func (c *Client) CloseContext(ctx context.Context) error {
	errs := []error{c.stopConsumers(ctx)}
	c.cancel()
	for _, b := range c.brokerList() {
		if err := b.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dialOptions are the gRPC options of every broker connection: large windows
// and buffers for batches, keepalives, quick reconnects, errors mapped to the
// SDK's sentinels; then the caller's (WithGRPCOptions), which win.
func dialOptions(o options) []grpc.DialOption {
	tc := insecure.NewCredentials()
	if o.tls != nil {
		// One socket write per flush, as in plaintext (internal/tlsbatch).
		tc = tlsbatch.Credentials(credentials.NewTLS(o.tls))
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(tc),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxResponseBytes),
			grpc.MaxCallSendMsgSize(o.maxRequestBytes+(1<<20)),
		),
		grpc.WithInitialWindowSize(4 << 20),
		grpc.WithInitialConnWindowSize(16 << 20),
		grpc.WithReadBufferSize(256 << 10),
		grpc.WithWriteBufferSize(256 << 10),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// Reconnect quickly after a broker restart.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithChainUnaryInterceptor(unaryErrors),
	}
	dopts = append(dopts, sdk.GRPCBufferDialOptions()...) // buffers not zeroed: batches cost less CPU
	return append(dopts, o.grpcOpts...)
}

func (c *Client) closed() bool { return c.ctx.Err() != nil }

var errClientClosed = fmt.Errorf("ferry client: %w", sdk.ErrClosed)

// Metadata returns the primary broker's topics (with their queue counts) and
// nodes, and refreshes the client's cache of queue counts. While the broker
// is away it waits for it until ctx ends.
func (c *Client) Metadata(ctx context.Context) (*ferryv1.MetadataResponse, error) {
	return c.metadata(ctx, nil, true)
}

// GetOffsets reports each queue's stored range (start, end) and the group's
// committed offset on it (-1 when none; always -1 for an empty group), in the
// order of queues. While the broker is away it waits for it until ctx ends.
func (c *Client) GetOffsets(ctx context.Context, group string, queues []*ferryv1.QueueRef) ([]*ferryv1.QueueOffsets, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Group: group, Queues: queues}, grpc.WaitForReady(true))
	if err != nil {
		return nil, c.callError("get offsets", err)
	}
	return resp.Offsets, nil
}

// QueueSizes is GetOffsets without a group, with each queue's size:
// QueueOffsets.Bytes is what the broker's store holds for the queue (the
// file store: its records in the log; the memory store: its encoded
// messages), or nil when the store cannot say (sdk.QueueSizer), which is
// unknown, not 0 (so also from a broker too old to ask).
func (c *Client) QueueSizes(ctx context.Context, queues []*ferryv1.QueueRef) ([]*ferryv1.QueueOffsets, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Queues: queues, WithBytes: true}, grpc.WaitForReady(true))
	if err != nil {
		return nil, c.callError("get offsets", err)
	}
	return resp.Offsets, nil
}

// CreateTopic creates topic name with queues queues on the broker, which
// stores it before it answers (it survives the broker's restart), and
// returns it as the broker now lists it. A bad name or count, or a topic that
// exists, is sdk.ErrInvalidArgument. On a replicated node the change is
// made where the group takes it (the raft leader, the master) and reaches
// the other nodes through replication (docs/admin.md).
func (c *Client) CreateTopic(ctx context.Context, name string, queues int32) (*ferryv1.TopicInfo, error) {
	return c.CreateTopicWith(ctx, name, queues, nil)
}

// CreateTopicWith is CreateTopic with the topic's own settings (retention
// by size and age, max message bytes; nil or 0 fields: unset). A retention
// the broker's store cannot keep is errors.ErrUnsupported, naming it.
func (c *Client) CreateTopicWith(ctx context.Context, name string, queues int32, settings *ferryv1.TopicSettings) (*ferryv1.TopicInfo, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.CreateTopic(ctx, &ferryv1.CreateTopicRequest{Name: name, Queues: queues, Settings: settings})
	if err != nil {
		return nil, c.callError("create topic", err)
	}
	c.forgetTopic(name)
	return resp.Topic, nil
}

// AlterTopic grows topic name to queues queues (queues are never removed: a
// smaller count is sdk.ErrInvalidArgument; an unknown topic is
// sdk.ErrNotFound). This client's producers use the new queues at once;
// other clients' within their route refresh interval (WithRouteRefresh).
func (c *Client) AlterTopic(ctx context.Context, name string, queues int32) (*ferryv1.TopicInfo, error) {
	return c.AlterTopicWith(ctx, name, queues, nil)
}

// AlterTopicWith is AlterTopic with settings to change: a field 0 keeps
// the topic's, -1 unsets it, another value sets it. queues 0 keeps the
// queues (an alter of settings only).
func (c *Client) AlterTopicWith(ctx context.Context, name string, queues int32, settings *ferryv1.TopicSettings) (*ferryv1.TopicInfo, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.AlterTopic(ctx, &ferryv1.AlterTopicRequest{Name: name, Queues: queues, Settings: settings})
	if err != nil {
		return nil, c.callError("alter topic", err)
	}
	c.forgetTopic(name)
	return resp.Topic, nil
}

// DeleteTopic deletes topic name from the broker: from its routing and
// topic metadata, and its messages and groups' offsets from its store. It
// returns the groups that consumed it. A topic groups consume is refused
// (sdk.ErrInvalidArgument) unless force; so are a group's internal topic and
// one the broker's pipeline declares; an unknown topic is sdk.ErrNotFound.
func (c *Client) DeleteTopic(ctx context.Context, name string, force bool) ([]string, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.DeleteTopic(ctx, &ferryv1.DeleteTopicRequest{Name: name, Force: force})
	if err != nil {
		return nil, c.callError("delete topic", err)
	}
	c.forgetTopic(name)
	return resp.Groups, nil
}

// ListGroups lists the consumer groups the broker knows, with their live
// member counts, the topics they consume and their total lag.
func (c *Client) ListGroups(ctx context.Context) ([]*ferryv1.GroupSummary, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.ListGroups(ctx, &ferryv1.ListGroupsRequest{})
	if err != nil {
		return nil, c.callError("list groups", err)
	}
	return resp.Groups, nil
}

// DescribeGroup returns group's live members (with the queues each held at
// its last heartbeat) and its offsets and lag per queue of the topics it
// consumes. An unknown group is sdk.ErrNotFound.
func (c *Client) DescribeGroup(ctx context.Context, group string) (*ferryv1.DescribeGroupResponse, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.DescribeGroup(ctx, &ferryv1.DescribeGroupRequest{Group: group})
	if err != nil {
		return nil, c.callError("describe group", err)
	}
	return resp, nil
}

// ResetOffsets moves a group's committed offsets on a topic (see
// ferryv1.ResetOffsetsRequest) and returns each queue's offsets before and
// after. A group with live members is sdk.ErrInvalidArgument unless
// req.Force; so is an offset outside a queue's range.
func (c *Client) ResetOffsets(ctx context.Context, req *ferryv1.ResetOffsetsRequest) ([]*ferryv1.ResetQueue, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.ResetOffsets(ctx, req)
	if err != nil {
		return nil, c.callError("reset offsets", err)
	}
	return resp.Queues, nil
}

// DeleteGroup removes a group's committed offsets (on every node of a
// replicated one, whose plugin must replicate group deletions, else
// errors.ErrUnsupported); it is refused while the group has live members,
// unless force. It returns what the group's retry and dead-letter topics
// still hold.
func (c *Client) DeleteGroup(ctx context.Context, group string, force bool) ([]*ferryv1.InternalTopicSize, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.DeleteGroup(ctx, &ferryv1.DeleteGroupRequest{Group: group, Force: force})
	if err != nil {
		return nil, c.callError("delete group", err)
	}
	return resp.Internal, nil
}

func (c *Client) metadata(ctx context.Context, topics []string, wait bool) (*ferryv1.MetadataResponse, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	resp, err := c.rpc.Metadata(ctx, &ferryv1.MetadataRequest{Topics: topics}, grpc.WaitForReady(wait))
	if err != nil {
		return nil, c.callError("metadata", err)
	}
	c.topicsMu.Lock()
	for _, t := range resp.Topics {
		c.topics[t.Name] = t.Queues
	}
	c.topicsMu.Unlock()
	return resp, nil
}

// queueCount returns the number of queues of topic, from the cache or from
// the broker; sdk.ErrNotFound when the broker does not know the topic.
func (c *Client) queueCount(ctx context.Context, topic string) (int32, error) {
	c.topicsMu.Lock()
	n, ok := c.topics[topic]
	c.topicsMu.Unlock()
	if ok {
		return n, nil
	}
	resp, err := c.metadata(ctx, []string{topic}, true)
	if err != nil {
		return 0, err
	}
	for _, t := range resp.Topics {
		if t.Name == topic && t.Queues > 0 {
			return t.Queues, nil
		}
	}
	return 0, fmt.Errorf("ferry client: topic %q: %w", topic, sdk.ErrNotFound)
}

// forgetTopic drops the cached queue count of topic; "" drops them all.
func (c *Client) forgetTopic(topic string) {
	c.topicsMu.Lock()
	defer c.topicsMu.Unlock()
	if topic == "" {
		clear(c.topics)
		return
	}
	delete(c.topics, topic)
}

// callError names the call in an error from the broker, keeping its sentinel.
func (c *Client) callError(call string, err error) error {
	if c.closed() {
		return errClientClosed
	}
	return fmt.Errorf("ferry client: %s on %s: %w", call, c.addr, err)
}

// unaryErrors maps gRPC statuses to errors that match the SDK's sentinels.
func unaryErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return sdk.ErrorFromStatus(invoker(ctx, method, req, reply, cc, opts...))
}
