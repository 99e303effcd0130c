package sdktest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// The transport suite checks a transport's contract with the broker core: a
// test core (an sdk.Core the suite serves) takes the place of the broker and
// records every request that reaches it. A transport's client side is its own
// protocol, so the suite splits its cases in two:
//
//   - host-contract cases run against any transport: Validate names the key
//     of a bad config section, Configure and Serve start, and a drain with
//     nothing in flight ends Connect (Serve);
//   - client-driven cases need a client of the transport's protocol
//     (TransportFeatures.Client; BrokerClient for one that serves the
//     ferry.v1.Broker gRPC API, as the grpc transport does): every produce
//     reaches the core exactly once and its answer comes back, the core's
//     errors reach the client as the same SDK errors, deadlines and
//     cancellation cross into the core, a slow request does not hold up
//     others, and a drain answers what is in flight, refuses what is new and
//     ends Connect.

// TransportFeatures say how to run the suite against a transport.
type TransportFeatures struct {
	// Config is the config section (JSON) the transport is configured
	// with in every case; its listener must be where Client connects.
	// A transport that bounds its own drain (the grpc transport's
	// shutdown_timeout) must allow it a few seconds: DrainInFlight holds a
	// request in the core while it checks that new ones are refused.
	Config []byte
	// Client connects a client of the transport's own protocol to the
	// transport configured with Config; nil runs only the host-contract
	// cases (the others are skipped, saying so).
	Client func() (TransportDriver, error)
	// Bound is how long a transport may take to pass on a drain (to end
	// Serve once its requests are answered), a client's cancellation or a
	// request while another is held in the core; default DefaultBound.
	Bound time.Duration
}

// DefaultBound is TransportFeatures.Bound's default.
const DefaultBound = 10 * time.Second

// TransportDriver is a client of a transport's own protocol: it sends a
// request as an application would and returns the answer, with an error the
// SDK's sentinels match (errors.Is) when the transport's protocol carries
// them. A driver's calls are safe from many goroutines.
type TransportDriver interface {
	// Produce sends one batch and waits for its answer; an Error in the
	// answer is returned as the error.
	Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error)
	Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error)
	Close() error
}

// ServedTransport is a transport under test, configured and serving a test
// core; a harness makes them.
type ServedTransport struct {
	cancel context.CancelFunc
	served chan error
	stop   func()
	once   sync.Once
}

// NewServedTransport runs t.Serve(ctx, core) until Drain and returns it;
// stop ends what runs it (closes t, or stops its plugin process).
func NewServedTransport(t sdk.Transport, core sdk.Core, stop func()) *ServedTransport {
	ctx, cancel := context.WithCancel(context.Background())
	s := &ServedTransport{cancel: cancel, served: make(chan error, 1), stop: stop}
	go func() { s.served <- t.Serve(ctx, core) }()
	return s
}

// Drain ends Serve's context, which the host turns into a drain.
func (s *ServedTransport) Drain() { s.cancel() }

// Served is Serve's result, once it returned.
func (s *ServedTransport) Served() <-chan error { return s.served }

// Stop stops the transport (once).
func (s *ServedTransport) Stop() {
	s.once.Do(func() {
		s.cancel()
		s.stop()
	})
}

// TransportHarness starts the transports of one case.
type TransportHarness interface {
	Features() TransportFeatures
	// Start starts a transport configured with config serving core.
	Start(config []byte, core sdk.Core) (*ServedTransport, error)
	// Validate asks a transport to check config.
	Validate(config []byte) (sdk.Problems, error)
}

// TransportCase is one transport conformance case.
type TransportCase struct {
	Name string
	// Client: the case drives requests through TransportFeatures.Client.
	Client bool
	Run    func(h TransportHarness) error
}

// TransportCases returns the transport conformance cases, in the order they
// run: the host-contract ones first.
func TransportCases() []TransportCase {
	return []TransportCase{
		{"TransportBadConfig", false, testTransportBadConfig},
		{"TransportConfigureAndServe", false, testTransportConfigureAndServe},
		{"TransportDrainIdle", false, testTransportDrainIdle},
		{"ProduceExactlyOnce", true, testProduceExactlyOnce},
		{"ErrorsMapped", true, testErrorsMapped},
		{"DeadlineCrosses", true, testDeadlineCrosses},
		{"CancelCrosses", true, testCancelCrosses},
		{"SlowDoesNotBlock", true, testSlowDoesNotBlock},
		{"DrainInFlight", true, testDrainInFlight},
	}
}

// RunTransportCase runs c on h, skipping a client-driven case when h has no
// client.
func RunTransportCase(c TransportCase, h TransportHarness) error {
	if c.Client && h.Features().Client == nil {
		return Skip("client-driven: needs a client of the transport's protocol (one serving ferry.v1.Broker gets it); host-contract cases only")
	}
	return c.Run(h)
}

func (f TransportFeatures) bound() time.Duration {
	if f.Bound > 0 {
		return f.Bound
	}
	return DefaultBound
}

// TestTransport runs the transport conformance cases against the transports
// newTransport returns (unconfigured): on the transport itself ("direct"),
// and through the plugin boundary on gRPC ("grpc") and on the shared-memory
// data plane ("ring").
func TestTransport(t *testing.T, newTransport func(t *testing.T) sdk.Transport, f TransportFeatures) {
	for _, mode := range []string{"direct", "grpc", "ring"} {
		t.Run(mode, func(t *testing.T) {
			for _, c := range TransportCases() {
				t.Run(c.Name, func(t *testing.T) {
					err := RunTransportCase(c, NewGoTransportHarness(t, mode, newTransport, f))
					if why, ok := Skipped(err); ok {
						t.Skip(why)
					}
					if err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}

// NewGoTransportHarness returns the harness TestTransport runs a case on in
// mode (direct, grpc or ring), for tests that run single cases (negative
// controls).
func NewGoTransportHarness(t *testing.T, mode string, newTransport func(t *testing.T) sdk.Transport, f TransportFeatures) TransportHarness {
	return &goTransportHarness{t: t, mode: mode, newTransport: newTransport, f: f}
}

type goTransportHarness struct {
	t            *testing.T
	mode         string
	newTransport func(t *testing.T) sdk.Transport
	f            TransportFeatures
}

func (h *goTransportHarness) Features() TransportFeatures { return h.f }

func (h *goTransportHarness) Validate(config []byte) (sdk.Problems, error) {
	impl := h.newTransport(h.t)
	defer impl.Close()
	if h.mode == "direct" {
		return impl.Validate(config), nil
	}
	c, stop := ServeTransport(h.t, impl, false)
	defer stop()
	return c.Validate(config), nil
}

func (h *goTransportHarness) Start(config []byte, core sdk.Core) (*ServedTransport, error) {
	impl := h.newTransport(h.t)
	tr := impl
	stop := func() {}
	if h.mode != "direct" {
		c, cstop := ServeTransport(h.t, impl, h.mode == "ring")
		// The suite bounds the drain itself (DrainBound); the host's cut
		// comes only after it.
		c.DrainTimeout = 4 * h.f.bound()
		tr, stop = c, cstop
	}
	ctx, cancel := ctxT()
	defer cancel()
	if err := tr.Configure(ctx, config, &sdk.Environment{Pipeline: "sdktest", Node: "sdktest", DataDir: h.t.TempDir()}); err != nil {
		stop()
		_ = impl.Close()
		return nil, fmt.Errorf("Configure: %w", err)
	}
	if c, ok := tr.(*sdk.TransportClient); ok && h.mode == "ring" && c.DataPlane() != sdk.DataPlaneRing {
		stop()
		_ = impl.Close()
		return nil, fmt.Errorf("the plugin did not take the ring data plane (got %s)", c.DataPlane())
	}
	s := NewServedTransport(tr, core, func() {
		stop()
		_ = impl.Close()
	})
	h.t.Cleanup(s.Stop)
	return s, nil
}

// BrokerClient returns a TransportFeatures.Client for a transport that serves
// the ferry.v1.Broker gRPC API (as the grpc transport does) at addr, in
// plaintext.
func BrokerClient(addr string) func() (TransportDriver, error) {
	return func() (TransportDriver, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		return &brokerDriver{cc: cc, rpc: ferryv1.NewBrokerClient(cc)}, nil
	}
}

type brokerDriver struct {
	cc  *grpc.ClientConn
	rpc ferryv1.BrokerClient
}

func (d *brokerDriver) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := d.rpc.Produce(ctx)
	if err != nil {
		return nil, sdk.ErrorFromStatus(err)
	}
	if err := stream.Send(req); err != nil {
		_, err = stream.Recv() // the stream's status says why
		return nil, sdk.ErrorFromStatus(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, sdk.ErrorFromStatus(err)
	}
	_ = stream.CloseSend()
	if resp.Error != nil {
		return resp, sdk.ErrorFromProto(resp.Error)
	}
	return resp, nil
}

func (d *brokerDriver) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	resp, err := d.rpc.Fetch(ctx, req)
	return resp, sdk.ErrorFromStatus(err)
}

func (d *brokerDriver) Close() error { return d.cc.Close() }

// --- the cases ---

// started starts the transport of a client-driven case and connects the
// client; done stops both.
func started(h TransportHarness) (*transportCore, *ServedTransport, TransportDriver, func(), error) {
	core := newTransportCore()
	st, err := h.Start(h.Features().Config, core)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	cl, err := h.Features().Client()
	if err != nil {
		st.Stop()
		return nil, nil, nil, nil, fmt.Errorf("client: %w", err)
	}
	return core, st, cl, func() { _ = cl.Close(); st.Stop() }, nil
}

// drained drains st and waits for Serve to end within the bound.
func drained(h TransportHarness, st *ServedTransport) error {
	st.Drain()
	select {
	case err := <-st.Served():
		if err != nil {
			return fmt.Errorf("Serve after a drain returned %v, want nil", err)
		}
		return nil
	case <-time.After(h.Features().bound()):
		return fmt.Errorf("the transport did not end Serve (Connect) within %s of the drain", h.Features().bound())
	}
}

func testTransportBadConfig(h TransportHarness) error {
	const key = "sdktest_no_such_key"
	bad := []byte(`{"` + key + `": 1}`)
	ps, err := h.Validate(bad)
	if err != nil {
		return fmt.Errorf("Validate: %w", err)
	}
	found := false
	for _, p := range ps {
		if strings.Contains(p.Path, key) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("Validate(%s) = %v, want a problem at key %s", bad, ps, key)
	}
	if ps, err := h.Validate(h.Features().Config); err != nil || len(ps) > 0 {
		return fmt.Errorf("Validate of the suite's config section %s: %v %v, want no problem", h.Features().Config, ps, err)
	}
	st, err := h.Start(bad, newTransportCore())
	if err == nil {
		st.Stop()
		return fmt.Errorf("Configure(%s) succeeded, want it refused", bad)
	}
	if !strings.Contains(err.Error(), key) {
		return fmt.Errorf("Configure(%s) = %v, want an error naming %s", bad, err, key)
	}
	return nil
}

func testTransportConfigureAndServe(h TransportHarness) error {
	st, err := h.Start(h.Features().Config, newTransportCore())
	if err != nil {
		return err
	}
	defer st.Stop()
	// Serve must keep running until drained: it has not returned by the
	// time a second transport's Validate (a round trip of the host) ran.
	if _, err := h.Validate(h.Features().Config); err != nil {
		return err
	}
	select {
	case err := <-st.Served():
		return fmt.Errorf("Serve returned %v before it was drained", err)
	default:
	}
	return nil
}

func testTransportDrainIdle(h TransportHarness) error {
	st, err := h.Start(h.Features().Config, newTransportCore())
	if err != nil {
		return err
	}
	defer st.Stop()
	return drained(h, st)
}

func produceReq(seq uint64, topic string, queue int32, ids ...string) *sdk.ProduceRequest {
	req := &sdk.ProduceRequest{Seq: seq}
	for _, id := range ids {
		req.Messages = append(req.Messages, &sdk.Message{Id: id, Topic: topic, Queue: queue, Body: []byte("sdktest " + id)})
	}
	return req
}

func testProduceExactlyOnce(h TransportHarness) error {
	core, st, cl, done, err := started(h)
	if err != nil {
		return err
	}
	defer done()
	const requests, per = 40, 3
	type answer struct {
		ids  []string
		resp *sdk.ProduceResponse
		err  error
	}
	answers := make([]answer, requests)
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			ids := make([]string, per)
			for j := range ids {
				ids[j] = fmt.Sprintf("once-%d-%d", i, j)
			}
			ctx, cancel := ctxT()
			defer cancel()
			resp, err := cl.Produce(ctx, produceReq(uint64(i+1), topicOK, int32(i%2), ids...))
			answers[i] = answer{ids, resp, err}
		})
	}
	wg.Wait()
	want := map[string]bool{}
	for i, a := range answers {
		if a.err != nil {
			return fmt.Errorf("produce %d: %v", i, a.err)
		}
		if a.resp.GetStatus() != 1 || len(a.resp.GetOffsets()) != per {
			return fmt.Errorf("produce %d: answered status %v with offsets %v, want STATUS_OK and %d offsets", i, a.resp.GetStatus(), a.resp.GetOffsets(), per)
		}
		for j, id := range a.ids {
			want[id] = true
			if o, _ := core.offsetOf(id); o != a.resp.Offsets[j] {
				return fmt.Errorf("produce %d: message %s answered offset %d, the core gave it %d", i, id, a.resp.Offsets[j], o)
			}
		}
	}
	check := func() error {
		for id, n := range core.seenIDs() {
			if !want[id] {
				return fmt.Errorf("message %s reached the core, but no client sent it", id)
			}
			if n != 1 {
				return fmt.Errorf("message %s reached the core %d times, want exactly once", id, n)
			}
		}
		for id := range want {
			if n := core.seenCount(id); n != 1 {
				return fmt.Errorf("message %s was answered but reached the core %d times", id, n)
			}
		}
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	// Nothing can reach the core once Serve ended: no late copies either.
	if err := drained(h, st); err != nil {
		return err
	}
	return check()
}

func testErrorsMapped(h TransportHarness) error {
	_, _, cl, done, err := started(h)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := ctxT()
	defer cancel()
	for i, w := range wireErrors {
		_, err := cl.Produce(ctx, produceReq(uint64(i+1), topicErr+w.name, 0, fmt.Sprintf("err-%s", w.name)))
		if !errIs(err, w.err) || !strings.Contains(fmt.Sprint(err), errMarker) {
			return fmt.Errorf("produce: the core answered %s (%q), the client got %v", w.name, errMarker, err)
		}
		_, err = cl.Fetch(ctx, &sdk.FetchRequest{Topic: topicErr + w.name, Group: "sdktest"})
		if !errIs(err, w.err) || !strings.Contains(fmt.Sprint(err), errMarker) {
			return fmt.Errorf("fetch: the core answered %s (%q), the client got %v", w.name, errMarker, err)
		}
	}
	resp, err := cl.Produce(ctx, produceReq(100, topicStatus, 0, "status-flush"))
	if err != nil || resp.GetStatus() != 2 {
		return fmt.Errorf("produce: the core answered STATUS_FLUSH_TIMEOUT, the client got status %v, error %v", resp.GetStatus(), err)
	}
	resp2, err := cl.Fetch(ctx, &sdk.FetchRequest{Topic: topicOK, Group: "sdktest"})
	if err != nil || len(resp2.GetMessages()) != 1 || resp2.Messages[0].Id != "sdktest-fetched" {
		return fmt.Errorf("fetch: the core answered one message, the client got %v, error %v", resp2.GetMessages(), err)
	}
	return nil
}

func testDeadlineCrosses(h TransportHarness) error {
	core, _, cl, done, err := started(h)
	if err != nil {
		return err
	}
	defer done()
	const timeout = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	errc := make(chan error, 1)
	go func() {
		_, err := cl.Fetch(ctx, &sdk.FetchRequest{Topic: topicSlow, Group: "deadline"})
		errc <- err
	}()
	cc := core.call("deadline")
	if err := waitClosed(cc.arrived, CallTimeout, "the fetch reaching the core"); err != nil {
		return err
	}
	if !cc.hasDeadline {
		return fmt.Errorf("the client's fetch had a deadline %s away; in the core it has none", timeout)
	}
	if cc.deadline.After(dl.Add(time.Second)) {
		return fmt.Errorf("the client's deadline is %s, the core's %s later", dl.Format(time.StampMicro), cc.deadline.Sub(dl))
	}
	if err := waitClosed(cc.ended, timeout+h.Features().bound(), "the request ending in the core at the client's deadline"); err != nil {
		return err
	}
	if err := <-errc; err == nil {
		return errors.New("the fetch past its deadline was answered without an error")
	}
	return nil
}

func testCancelCrosses(h TransportHarness) error {
	core, _, cl, done, err := started(h)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := cl.Fetch(ctx, &sdk.FetchRequest{Topic: topicSlow, Group: "cancel"})
		errc <- err
	}()
	cc := core.call("cancel")
	if err := waitClosed(cc.arrived, CallTimeout, "the fetch reaching the core"); err != nil {
		return err
	}
	cancel()
	if err := waitClosed(cc.ended, h.Features().bound(), "the request cancelled in the core after its client gave up"); err != nil {
		return err
	}
	if !errors.Is(cc.cause, context.Canceled) && !errors.Is(cc.cause, context.DeadlineExceeded) {
		return fmt.Errorf("the core's request ended with %v", cc.cause)
	}
	<-errc
	return nil
}

func testSlowDoesNotBlock(h TransportHarness) error {
	core, _, cl, done, err := started(h)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := ctxT()
	defer cancel()
	slowFetch := make(chan error, 1)
	slowProduce := make(chan error, 1)
	go func() {
		_, err := cl.Fetch(ctx, &sdk.FetchRequest{Topic: topicSlow, Group: "slow"})
		slowFetch <- err
	}()
	f, p := core.call("slow"), core.call("slow-produce")
	if err := waitClosed(f.arrived, CallTimeout, "the slow fetch reaching the core"); err != nil {
		return err
	}
	go func() {
		_, err := cl.Produce(ctx, produceReq(1, topicSlow, 0, "slow-produce"))
		slowProduce <- err
	}()
	if err := waitClosed(p.arrived, h.Features().bound(), "a produce reaching the core while another request was held there"); err != nil {
		return err
	}
	// With both held in the core, others are answered.
	fctx, fcancel := context.WithTimeout(ctx, h.Features().bound())
	defer fcancel()
	for i := range 5 {
		if _, err := cl.Produce(fctx, produceReq(uint64(10+i), topicOK, 0, fmt.Sprintf("fast-%d", i))); err != nil {
			return fmt.Errorf("a produce while another was held in the core: %v", err)
		}
		if _, err := cl.Fetch(fctx, &sdk.FetchRequest{Topic: topicOK, Group: "fast"}); err != nil {
			return fmt.Errorf("a fetch while another was held in the core: %v", err)
		}
	}
	close(f.release)
	close(p.release)
	if err := <-slowFetch; err != nil {
		return fmt.Errorf("the slow fetch, released: %v", err)
	}
	if err := <-slowProduce; err != nil {
		return fmt.Errorf("the slow produce, released: %v", err)
	}
	return nil
}

func testDrainInFlight(h TransportHarness) error {
	core, st, cl, done, err := started(h)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := ctxT()
	defer cancel()
	type answer struct {
		resp *sdk.ProduceResponse
		err  error
	}
	held := make(chan answer, 1)
	go func() {
		resp, err := cl.Produce(ctx, produceReq(1, topicSlow, 0, "drain-held"))
		held <- answer{resp, err}
	}()
	cc := core.call("drain-held")
	if err := waitClosed(cc.arrived, CallTimeout, "the produce reaching the core"); err != nil {
		return err
	}
	st.Drain()
	// New requests are refused: probe until one is.
	bound := h.Features().bound()
	deadline := time.Now().Add(bound)
	answered := map[string]bool{}
	for i := 0; ; i++ {
		id := fmt.Sprintf("drain-probe-%d", i)
		pctx, pcancel := context.WithTimeout(ctx, bound)
		_, err := cl.Produce(pctx, produceReq(uint64(100+i), topicOK, 0, id))
		pcancel()
		if err != nil {
			break
		}
		answered[id] = true
		if time.Now().After(deadline) {
			return fmt.Errorf("%d new produce requests after the drain were all taken (for %s): the transport did not stop taking requests", i+1, bound)
		}
		time.Sleep(10 * time.Millisecond) // pacing of the probes, not a wait for a condition
	}
	select {
	case a := <-held:
		return fmt.Errorf("the request held in the core was answered before the core answered it: %v, %v", a.resp, a.err)
	case err := <-st.Served():
		return fmt.Errorf("Serve returned (%v) while a request it took was still at the core", err)
	default:
	}
	close(cc.release)
	a := <-held
	if a.err != nil || a.resp.GetStatus() != 1 || len(a.resp.GetOffsets()) != 1 {
		return fmt.Errorf("the request in flight at the drain got %v, %v; want the core's answer (STATUS_OK, one offset)", a.resp, a.err)
	}
	if o, _ := core.offsetOf("drain-held"); o != a.resp.Offsets[0] {
		return fmt.Errorf("the request in flight at the drain was answered offset %d, the core gave %d", a.resp.Offsets[0], o)
	}
	select {
	case err := <-st.Served():
		if err != nil {
			return fmt.Errorf("Serve after the drain returned %v", err)
		}
	case <-time.After(bound):
		return fmt.Errorf("the transport did not end Serve (Connect) within %s of answering its last request", bound)
	}
	for id := range core.seenIDs() {
		if strings.HasPrefix(id, "drain-probe-") && !answered[id] {
			return fmt.Errorf("%s reached the core but its client was not answered", id)
		}
	}
	return nil
}
