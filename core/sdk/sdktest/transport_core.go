package sdktest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// The test core a transport under test serves: what the broker core is to a
// transport, with behaviour chosen by the topic of each request, and a record
// of every request that reached it.
//
//	sdktest-ok            Produce: offsets assigned per queue, STATUS_OK;
//	                      Fetch: one message
//	sdktest-slow          blocks until the case releases it or the request's
//	                      context ends; then answers as sdktest-ok
//	sdktest-err-<CODE>    the SDK error whose wire name is CODE
//	sdktest-status-flush  Produce: offsets with STATUS_FLUSH_TIMEOUT
//
// A slow request is named by its first message's id (Produce) or its group
// (Fetch).
const (
	topicOK     = "sdktest-ok"
	topicSlow   = "sdktest-slow"
	topicErr    = "sdktest-err-"
	topicStatus = "sdktest-status-flush"
	errMarker   = "sdktest-marker"
)

// wireErrors are the SDK errors the suite sends through a transport, by
// their wire names.
var wireErrors = []struct {
	name string
	err  error
}{
	{"INVALID_ARGUMENT", sdk.ErrInvalidArgument},
	{"NOT_FOUND", sdk.ErrNotFound},
	{"NOT_LEADER", sdk.ErrNotLeader},
	{"FULL", sdk.ErrFull},
	{"UNAVAILABLE", sdk.ErrUnavailable},
	{"PERMISSION_DENIED", sdk.ErrPermissionDenied},
	{"UNAUTHENTICATED", sdk.ErrUnauthenticated},
}

// coreCall is one request that reached the test core.
type coreCall struct {
	arrived     chan struct{} // closed when the request reached the core
	release     chan struct{} // closed by the case: a slow request answers
	ended       chan struct{} // closed when the request's context ended in the core
	deadline    time.Time
	hasDeadline bool
	cause       error // the context's error, once ended
}

type queueKey struct {
	topic string
	queue int32
}

// transportCore is the sdk.Core of the transport suite.
type transportCore struct {
	mu      sync.Mutex
	next    map[queueKey]int64
	offset  map[string]int64 // message id -> the offset it was given
	seen    map[string]int   // message id -> how often it reached the core
	calls   map[string]*coreCall
	fetches int
}

func newTransportCore() *transportCore {
	return &transportCore{next: map[queueKey]int64{}, offset: map[string]int64{}, seen: map[string]int{}, calls: map[string]*coreCall{}}
}

var _ sdk.Core = (*transportCore)(nil)

// call returns the record of the slow request named name, made when first
// asked for (by the case or the core).
func (c *transportCore) call(name string) *coreCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc := c.calls[name]
	if cc == nil {
		cc = &coreCall{arrived: make(chan struct{}), release: make(chan struct{}), ended: make(chan struct{})}
		c.calls[name] = cc
	}
	return cc
}

// hold runs a slow request in the core: it waits for the case's release or
// the end of ctx, recording both.
func (c *transportCore) hold(ctx context.Context, name string) error {
	cc := c.call(name)
	c.mu.Lock()
	select {
	case <-cc.arrived:
		c.mu.Unlock()
		return fmt.Errorf("%w: sdktest core: slow request %q arrived twice", sdk.ErrInvalidArgument, name)
	default:
		cc.deadline, cc.hasDeadline = ctx.Deadline()
		close(cc.arrived)
	}
	c.mu.Unlock()
	select {
	case <-cc.release:
		return nil
	case <-ctx.Done():
		cc.cause = ctx.Err()
		close(cc.ended)
		return ctx.Err()
	}
}

// topicError is the error a sdktest-err- topic asks for.
func topicError(topic string) error {
	name, ok := strings.CutPrefix(topic, topicErr)
	if !ok {
		return nil
	}
	for _, w := range wireErrors {
		if w.name == name {
			return fmt.Errorf("%w: %s for topic %s", w.err, errMarker, topic)
		}
	}
	return fmt.Errorf("%w: sdktest core: no error named %q", sdk.ErrInvalidArgument, name)
}

func (c *transportCore) Produce(ctx context.Context, req *sdk.ProduceRequest) (*sdk.ProduceResponse, error) {
	if len(req.Messages) == 0 {
		return nil, fmt.Errorf("%w: sdktest core: empty produce", sdk.ErrInvalidArgument)
	}
	topic := req.Messages[0].Topic
	c.mu.Lock()
	for _, m := range req.Messages {
		c.seen[m.Id]++
	}
	c.mu.Unlock()
	if err := topicError(topic); err != nil {
		return nil, err
	}
	if topic == topicSlow {
		if err := c.hold(ctx, req.Messages[0].Id); err != nil {
			return nil, err
		}
	}
	st := sdk.Status(1) // STATUS_OK
	if topic == topicStatus {
		st = 2 // STATUS_FLUSH_TIMEOUT
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	offs := make([]int64, len(req.Messages))
	for i, m := range req.Messages {
		k := queueKey{m.Topic, m.Queue}
		offs[i] = c.next[k]
		c.next[k]++
		c.offset[m.Id] = offs[i]
	}
	return &sdk.ProduceResponse{Seq: req.Seq, Offsets: offs, Status: st}, nil
}

func (c *transportCore) Fetch(ctx context.Context, req *sdk.FetchRequest) (*sdk.FetchResponse, error) {
	c.mu.Lock()
	c.fetches++
	c.mu.Unlock()
	if err := topicError(req.Topic); err != nil {
		return nil, err
	}
	if req.Topic == topicSlow {
		if err := c.hold(ctx, req.Group); err != nil {
			return nil, err
		}
	}
	return &sdk.FetchResponse{Messages: []*sdk.Message{{Id: "sdktest-fetched", Topic: req.Topic, Offset: 0, Body: []byte("sdktest")}}}, nil
}

func (c *transportCore) CommitOffsets(ctx context.Context, req *sdk.CommitOffsetsRequest) error {
	return nil
}

func (c *transportCore) GetOffsets(ctx context.Context, req *sdk.GetOffsetsRequest) (*sdk.GetOffsetsResponse, error) {
	return &sdk.GetOffsetsResponse{}, nil
}

func (c *transportCore) Metadata(ctx context.Context, req *sdk.MetadataRequest) (*sdk.MetadataResponse, error) {
	return &sdk.MetadataResponse{}, nil
}

func (c *transportCore) Heartbeat(ctx context.Context, req *sdk.HeartbeatRequest) (*sdk.HeartbeatResponse, error) {
	return &sdk.HeartbeatResponse{}, nil
}

// seenCount is how often the message with id reached the core.
func (c *transportCore) seenCount(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[id]
}

// seenIDs returns every message id that reached the core, with its count.
func (c *transportCore) seenIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.seen))
	for k, v := range c.seen {
		out[k] = v
	}
	return out
}

func (c *transportCore) offsetOf(id string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.offset[id]
	return o, ok
}

// waitClosed waits for ch to close within d; what names it in the error.
func waitClosed(ch <-chan struct{}, d time.Duration, what string) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return fmt.Errorf("%s: not within %s", what, d)
	}
}

// errIs reports whether err matches target, through the client's mapping.
func errIs(err, target error) bool { return errors.Is(err, target) }
