package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// DialCluster connects to a Ferry cluster given a seed list of brokers
// (host:port of their grpc transports). It asks every seed for its metadata
// within ctx and succeeds when at least one answers; the first seed (in the
// order given) that answered becomes the primary broker, which serves the
// client's unary calls. Producers route each topic over the queues of every
// broker that has it, as the brokers' metadata says (which broker leads each
// queue), and dial brokers the metadata names that were not seeds; with more
// than one broker a send that cannot reach its broker moves on to another
// one (see ProducerOptions.SyncRetry).
func DialCluster(ctx context.Context, addrs []string, opts ...Option) (*Client, error) {
	if len(addrs) == 0 {
		return nil, fmt.Errorf("ferry client: dial: %w: no broker address", sdk.ErrInvalidArgument)
	}
	o := options{logger: slog.Default(), maxRequestBytes: DefaultMaxRequestBytes, closeTimeout: DefaultCloseTimeout, routeRefresh: DefaultRouteRefresh}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err == nil && o.closeTimeout <= 0 {
		o.err = fmt.Errorf("%w: close timeout %v: must be positive", sdk.ErrInvalidArgument, o.closeTimeout)
	}
	if o.err == nil && o.routeRefresh <= 0 {
		o.err = fmt.Errorf("%w: route refresh interval %v: must be positive", sdk.ErrInvalidArgument, o.routeRefresh)
	}
	if o.err != nil {
		return nil, fmt.Errorf("ferry client: dial: %w", o.err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		log:             o.logger,
		maxRequestBytes: o.maxRequestBytes,
		closeTimeout:    o.closeTimeout,
		routeRefresh:    o.routeRefresh,
		dopts:           dialOptions(o),
		ctx:             cctx,
		cancel:          cancel,
		inflight:        make(chan struct{}, maxInflightProduce),
		routes:          map[string]*topicRoute{},
		topics:          map[string]int32{},
	}
	var seeds []*brokerConn
	for _, a := range addrs {
		b, err := c.brokerFor(a)
		if err != nil {
			c.Close()
			return nil, err
		}
		if !slices.Contains(seeds, b) {
			seeds = append(seeds, b)
		}
	}
	resps, errs := askMetadata(ctx, seeds, &ferryv1.MetadataRequest{}, false)
	for i, b := range seeds {
		if errs[i] == nil && c.primary == nil {
			c.primary, c.addr, c.conn, c.rpc = b, b.addr, b.conn, b.rpc
			c.topicsMu.Lock()
			for _, t := range resps[i].Topics {
				c.topics[t.Name] = t.Queues
			}
			c.topicsMu.Unlock()
		}
	}
	if c.primary == nil {
		c.Close()
		return nil, fmt.Errorf("ferry client: dial %s: %w%s", strings.Join(addrs, ","), errors.Join(errs...), tlsHint(o, errs))
	}
	// Warm the routes of every topic the seeds know.
	topics := map[string]bool{}
	for _, r := range resps {
		for _, t := range r.GetTopics() {
			topics[t.Name] = true
		}
	}
	for t := range topics {
		r := c.mergeRoutes(t, seeds, resps, errs, nil)
		// A leader named by others that did not answer: the first send
		// refreshes the route (and waits out an election, bounded).
		r.stale = silentLeader(t, seeds, resps, errs)
		c.setRoute(t, r)
	}
	return c, nil
}

// brokerConn is the client's connection to one broker: a gRPC connection
// and the one Produce stream all producers of the client share.
type brokerConn struct {
	c    *Client
	addr string
	conn *grpc.ClientConn
	rpc  ferryv1.BrokerClient

	opening  chan struct{} // one slot: held while a produce stream is opened
	streamMu sync.Mutex
	stream   *produceStream // nil until needed and after it broke
}

// brokerFor returns the connection to addr, creating it (without connecting
// yet) if the client has none.
func (c *Client) brokerFor(addr string) (*brokerConn, error) {
	c.brokersMu.Lock()
	defer c.brokersMu.Unlock()
	for _, b := range c.brokers {
		if b.addr == addr {
			return b, nil
		}
	}
	if c.closed() {
		return nil, errClientClosed
	}
	conn, err := grpc.NewClient(addr, c.dopts...)
	if err != nil {
		return nil, fmt.Errorf("ferry client: dial %q: %w: %v", addr, sdk.ErrInvalidArgument, err)
	}
	b := &brokerConn{c: c, addr: addr, conn: conn, rpc: ferryv1.NewBrokerClient(conn), opening: make(chan struct{}, 1)}
	c.brokers = append(c.brokers, b)
	return b, nil
}

func (c *Client) brokerList() []*brokerConn {
	c.brokersMu.Lock()
	defer c.brokersMu.Unlock()
	return slices.Clone(c.brokers)
}

// multiBroker reports whether the client knows more than one broker. Then a
// send does not wait for an unreachable broker: it moves on.
func (c *Client) multiBroker() bool {
	c.brokersMu.Lock()
	defer c.brokersMu.Unlock()
	return len(c.brokers) > 1
}

// Brokers lists the addresses of the brokers the client knows: the seeds,
// then those learnt from metadata.
func (c *Client) Brokers() []string {
	var out []string
	for _, b := range c.brokerList() {
		out = append(out, b.addr)
	}
	return out
}

func (b *brokerConn) close() error {
	b.streamMu.Lock()
	s := b.stream
	b.stream = nil
	b.streamMu.Unlock()
	if s != nil {
		s.fail(errClientClosed)
	}
	if err := b.conn.Close(); err != nil && b.c.ctx.Err() == nil {
		return err
	}
	return nil
}

// down reports whether the broker's connection is failing now (its last
// connection attempt failed): sends avoid it while another broker is up.
func (b *brokerConn) down() bool {
	return b.conn.GetState() == connectivity.TransientFailure
}

// waitReady waits until the connection to the broker is up, starting it if
// it is idle, or until ctx ends. With failFast it gives up as soon as a
// connection attempt fails.
func (b *brokerConn) waitReady(ctx context.Context, failFast bool) error {
	for {
		s := b.conn.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			b.conn.Connect()
		case connectivity.TransientFailure:
			if failFast {
				return errors.New("connection failed")
			}
		case connectivity.Shutdown:
			return errClientClosed
		}
		if !b.conn.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}

// queueRoute is one queue of a topic: which broker leads it, and its index
// there.
type queueRoute struct {
	broker *brokerConn
	queue  int32
}

// topicRoute is every queue of a topic across the brokers, ordered by broker
// (as the client knows them) then queue. A QueueSelector picks an index into
// queues.
type topicRoute struct {
	topic  string
	queues []queueRoute
	stale  bool // a stream broke since: refresh before the next selection

	at         time.Time   // when the brokers were asked (mergeRoutes)
	refreshing atomic.Bool // a background refresh of it runs (cachedRoute)
}

// brokers lists the distinct brokers of the route, in order.
func (r *topicRoute) brokers() []*brokerConn {
	var out []*brokerConn
	for _, q := range r.queues {
		if !slices.Contains(out, q.broker) {
			out = append(out, q.broker)
		}
	}
	return out
}

// queuesOf lists the queues the route has on broker b.
func (r *topicRoute) queuesOf(b *brokerConn) []int32 {
	var out []int32
	for _, q := range r.queues {
		if q.broker == b {
			out = append(out, q.queue)
		}
	}
	return out
}

// healthy returns the route at i, or, when its broker is down and another
// broker of the topic is not, the next queue (in route order) on a broker
// that is not down.
func (r *topicRoute) healthy(i int) queueRoute {
	q := r.queues[i]
	if !q.broker.down() {
		return q
	}
	for k := 1; k < len(r.queues); k++ {
		if alt := r.queues[(i+k)%len(r.queues)]; !alt.broker.down() {
			return alt
		}
	}
	return q
}

// route returns the producers' route of topic, from the cache or from the
// brokers; sdk.ErrNotFound when no broker has the topic.
func (c *Client) route(ctx context.Context, topic string) (*topicRoute, error) {
	if r := c.cachedRoute(topic); r != nil {
		return r, nil
	}
	return c.refreshRoute(ctx, topic)
}

// ProducerTopic looks topic up as a producer's first send to it does and
// returns its queue count: on a node that auto-creates topics
// (node.auto_create_topics) an unknown topic is created by it.
// sdk.ErrNotFound when no broker has (or made) the topic.
func (c *Client) ProducerTopic(ctx context.Context, topic string) (int32, error) {
	r, err := c.route(ctx, topic)
	if err != nil {
		return 0, err
	}
	return int32(len(r.queues)), nil
}

// cachedRoute is topic's route if it is cached and not stale, else nil. A
// route older than the route refresh interval (WithRouteRefresh) is still
// returned, and refreshed in the background, so that producers pick up
// queues added to the topic (AlterTopic, by any client) without waiting for
// a reconnect, and a send never waits for it.
func (c *Client) cachedRoute(topic string) *topicRoute {
	c.routesMu.Lock()
	r := c.routes[topic]
	c.routesMu.Unlock()
	if r == nil || r.stale {
		return nil
	}
	if time.Since(r.at) > c.routeRefresh && r.refreshing.CompareAndSwap(false, true) {
		go c.refreshAged(topic, r)
	}
	return r
}

// refreshAged asks the brokers for topic's route again, in the background,
// as the route r has aged. When no broker answers, r stays, as fresh (it is
// tried again an interval later).
func (c *Client) refreshAged(topic string, r *topicRoute) {
	ctx, cancel := context.WithTimeout(c.ctx, callTimeout)
	defer cancel()
	if _, err := c.refreshRouteOf(ctx, topic, r); err != nil && !c.closed() {
		c.log.Debug("ferry client: refreshing a topic's route failed; keeping the one it had", "topic", topic, "error", err)
		c.routesMu.Lock()
		if c.routes[topic] == r {
			c.routes[topic] = &topicRoute{topic: r.topic, queues: r.queues, at: time.Now()}
		}
		c.routesMu.Unlock()
	}
}

func (c *Client) setRoute(topic string, r *topicRoute) {
	c.routesMu.Lock()
	defer c.routesMu.Unlock()
	if r == nil || len(r.queues) == 0 {
		delete(c.routes, topic)
		return
	}
	c.routes[topic] = r
}

// staleRoutes marks every route for a refresh (a stream broke: the broker may
// have changed while it was away).
func (c *Client) staleRoutes() {
	c.routesMu.Lock()
	defer c.routesMu.Unlock()
	for t, r := range c.routes {
		c.routes[t] = &topicRoute{topic: r.topic, queues: r.queues, at: r.at, stale: true}
	}
}

// refreshRoute asks every known broker for topic's metadata (as a producer:
// a node that auto-creates topics creates it), merges the
// answers and caches the result. A broker that does not answer keeps the
// queues it had: it may be back for the next send, which otherwise moves on.
// With a single broker the call waits for it (within ctx).
func (c *Client) refreshRoute(ctx context.Context, topic string) (*topicRoute, error) {
	return c.refreshRouteOf(ctx, topic, nil)
}

// refreshRouteOf is refreshRoute that also replaces a cached route that is
// aged (not stale): the one cachedRoute found old.
func (c *Client) refreshRouteOf(ctx context.Context, topic string, aged *topicRoute) (*topicRoute, error) {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	c.routesMu.Lock()
	old := c.routes[topic]
	c.routesMu.Unlock()
	if old != nil && !old.stale && (aged == nil || old != aged) {
		return old, nil // refreshed by another caller meanwhile
	}
	if c.closed() {
		return nil, errClientClosed
	}
	brokers := c.brokerList()
	resps, errs := askMetadata(ctx, brokers, &ferryv1.MetadataRequest{Topics: []string{topic}, AutoCreate: true}, len(brokers) == 1)
	// A leader that other nodes name but that does not answer itself is
	// most likely failing (frozen, cut off, dead): while its group elects
	// another, ask again rather than send to it (bounded).
	deadline := time.Now().Add(electionWait)
	for silentLeader(topic, brokers, resps, errs) && time.Now().Before(deadline) && !c.closed() {
		select {
		case <-ctx.Done():
		case <-time.After(electionPoll):
		}
		if ctx.Err() != nil {
			break
		}
		resps, errs = askMetadata(ctx, brokers, &ferryv1.MetadataRequest{Topics: []string{topic}, AutoCreate: true}, false)
	}
	if c.closed() {
		return nil, errClientClosed
	}
	r := c.mergeRoutes(topic, brokers, resps, errs, old)
	if len(r.queues) > 0 {
		c.setRoute(topic, r)
		return r, nil
	}
	if slices.ContainsFunc(errs, func(e error) bool { return e == nil }) {
		c.setRoute(topic, nil)
		return nil, fmt.Errorf("ferry client: topic %q: %w: no broker has it (asked %s)", topic, sdk.ErrNotFound, strings.Join(c.Brokers(), ", "))
	}
	return nil, fmt.Errorf("ferry client: topic %q: %w", topic, errors.Join(errs...))
}

// While a leader other nodes name does not answer, a route refresh asks
// again every electionPoll, for at most electionWait (an election takes
// well under that), before it settles for what it has.
const (
	electionPoll = 100 * time.Millisecond
	electionWait = 2 * time.Second
)

// silentLeader reports whether a broker that answered names, as the leader
// of one of topic's queues, another broker that was asked and did not
// answer.
func silentLeader(topic string, brokers []*brokerConn, resps []*ferryv1.MetadataResponse, errs []error) bool {
	silent := map[string]bool{}
	answered := false
	for i, b := range brokers {
		if errs[i] != nil || resps[i] == nil {
			silent[b.addr] = true
		} else {
			answered = true
		}
	}
	if !answered || len(silent) == 0 {
		return false
	}
	for i, resp := range resps {
		if errs[i] != nil || resp == nil {
			continue
		}
		for _, t := range resp.Topics {
			if t.Name != topic {
				continue
			}
			for _, idx := range t.Leaders {
				if idx > 0 && int(idx) < len(resp.Brokers) && silent[resp.Brokers[idx].Address] {
					return true
				}
			}
		}
	}
	return false
}

// metadataGrace is how long the client waits for the other brokers' metadata
// once one broker answered: a frozen or cut-off broker must not hold up
// every dial and route refresh until the caller's deadline.
const metadataGrace = 200 * time.Millisecond

// askMetadata asks every broker at once and returns their answers (resps and
// errs by broker) once all answered, or metadataGrace after the first
// answer; the brokers still silent then get an error. waitForReady makes the
// calls wait for a connection (within ctx) rather than fail at once.
func askMetadata(ctx context.Context, brokers []*brokerConn, req *ferryv1.MetadataRequest, waitForReady bool) ([]*ferryv1.MetadataResponse, []error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		i    int
		resp *ferryv1.MetadataResponse
		err  error
	}
	answers := make(chan answer, len(brokers))
	for i, b := range brokers {
		go func() {
			resp, err := b.rpc.Metadata(ctx, req, grpc.WaitForReady(waitForReady))
			if err != nil {
				err = fmt.Errorf("metadata from %s: %w", b.addr, err)
			}
			answers <- answer{i, resp, err}
		}()
	}
	resps := make([]*ferryv1.MetadataResponse, len(brokers))
	errs := make([]error, len(brokers))
	for i, b := range brokers {
		errs[i] = fmt.Errorf("metadata from %s: no answer within %s of another broker's", b.addr, metadataGrace)
	}
	var grace <-chan time.Time
	for range brokers {
		select {
		case a := <-answers:
			resps[a.i], errs[a.i] = a.resp, a.err
			if a.err == nil && grace == nil {
				t := time.NewTimer(metadataGrace)
				defer t.Stop()
				grace = t.C
			}
			continue
		case <-grace:
		}
		break
	}
	return resps, errs
}

// mergeRoutes builds topic's route from the brokers' metadata answers (resps
// and errs by broker); brokers that did not answer keep their queues of old.
func (c *Client) mergeRoutes(topic string, brokers []*brokerConn, resps []*ferryv1.MetadataResponse, errs []error, old *topicRoute) *topicRoute {
	var qs, weak []queueRoute
	answered := map[*brokerConn]bool{}
	// Queues a replication group's leader (raft leader, master) answered
	// for: such a queue has one leader, so a silent broker's old claim
	// on it (a frozen or cut-off former leader) is dropped.
	led := map[int32]bool{}
	for i, asked := range brokers {
		if errs[i] != nil || resps[i] == nil {
			continue
		}
		answered[asked] = true
		resp := resps[i]
		leader := func(idx int32) *brokerConn {
			// A node's metadata lists itself; the address we reached it
			// at is the one that works for us. Other nodes are reached
			// at the addresses they advertise.
			if len(resp.Brokers) <= 1 || idx < 0 || int(idx) >= len(resp.Brokers) || resp.Brokers[idx].Address == "" {
				return asked
			}
			b, err := c.brokerFor(resp.Brokers[idx].Address)
			if err != nil {
				return asked
			}
			return b
		}
		for _, t := range resp.Topics {
			if t.Name != topic {
				continue
			}
			for q := range t.Queues {
				b, idx := asked, int32(0)
				if int(q) < len(t.Leaders) {
					idx = t.Leaders[q]
					b = leader(idx)
				}
				// A node that does not take produce and knows no leader
				// (a raft candidate cut off from its group) names itself:
				// its claim counts only if no answer names a node that
				// takes produce.
				if idx >= 0 && int(idx) < len(resp.Brokers) && !sdk.TakesProduce(resp.Brokers[idx].Role) {
					weak = append(weak, queueRoute{broker: b, queue: q})
					continue
				}
				qs = append(qs, queueRoute{broker: b, queue: q})
				if idx >= 0 && int(idx) < len(resp.Brokers) {
					if r := resp.Brokers[idx].Role; r == sdk.RoleLeader || r == sdk.RoleMaster {
						led[q] = true
					}
				}
			}
		}
	}
	if len(qs) == 0 {
		qs = weak
	}
	if old != nil {
		for _, q := range old.queues {
			if !answered[q.broker] && !led[q.queue] {
				qs = append(qs, q)
			}
		}
	}
	order := map[*brokerConn]int{}
	for i, b := range c.brokerList() {
		order[b] = i
	}
	slices.SortFunc(qs, func(a, b queueRoute) int {
		if d := order[a.broker] - order[b.broker]; d != 0 {
			return d
		}
		return int(a.queue - b.queue)
	})
	qs = slices.Compact(qs)
	return &topicRoute{topic: topic, queues: qs, at: time.Now()}
}
