package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// produceStream is the one Broker.Produce stream of a Client, shared by all
// its producers: each request gets a seq and its answer, which may come out of
// order, is matched back by seq. When the stream breaks, every call waiting on
// it fails with sdk.ErrUnavailable and the next call opens a new stream.
type produceStream struct {
	st     ferryv1.Broker_ProduceClient
	cancel context.CancelFunc

	sendMu sync.Mutex // Send is not safe from many goroutines

	mu    sync.Mutex
	seq   uint64
	calls map[uint64]chan produceResult
	err   error // why the stream broke; nil while it works
}

type produceResult struct {
	resp *ferryv1.ProduceResponse
	err  error
}

// produce sends one request on the shared stream (opening it if need be) and
// waits for its answer or for ctx. It fails with sdk.ErrUnavailable when the
// broker cannot be reached or the stream broke before the answer came: the
// request may or may not have been stored.
func (c *Client) produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	if c.closed() {
		return nil, errClientClosed
	}
	if n := proto.Size(req); n > c.maxRequestBytes {
		return nil, fmt.Errorf("ferry client: %w: a batch of %d messages is %d bytes, over the client's limit of %d bytes (WithMaxRequestBytes); send fewer messages at once",
			sdk.ErrInvalidArgument, len(req.Messages), n, c.maxRequestBytes)
	}
	select {
	case c.inflight <- struct{}{}:
		defer func() { <-c.inflight }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s, err := c.produceStream(ctx)
	if err != nil {
		return nil, err
	}
	return s.call(ctx, req)
}

// produceStream returns the working stream or opens a new one, waiting for
// the connection (within ctx) if the broker is away.
func (c *Client) produceStream(ctx context.Context) (*produceStream, error) {
	if s := c.currentStream(); s != nil {
		return s, nil
	}
	select {
	case c.opening <- struct{}{}:
		defer func() { <-c.opening }()
	case <-ctx.Done():
		return nil, fmt.Errorf("ferry client: %w: waiting for the produce stream to %s: %v", sdk.ErrUnavailable, c.addr, ctx.Err())
	}
	if s := c.currentStream(); s != nil {
		return s, nil // another caller opened it meanwhile
	}
	if err := c.waitReady(ctx); err != nil {
		if c.closed() {
			return nil, errClientClosed
		}
		// Nothing was sent: the outcome is known, so this is not a timeout.
		return nil, fmt.Errorf("ferry client: %w: broker %s not reachable: %v", sdk.ErrUnavailable, c.addr, err)
	}
	sctx, cancel := context.WithCancel(c.ctx)
	st, err := c.rpc.Produce(sctx)
	if err != nil {
		cancel()
		if c.closed() {
			return nil, errClientClosed
		}
		return nil, fmt.Errorf("ferry client: %w: opening the produce stream to %s: %v", sdk.ErrUnavailable, c.addr, err)
	}
	s := &produceStream{st: st, cancel: cancel, calls: map[uint64]chan produceResult{}}
	c.streamMu.Lock()
	c.stream = s
	c.streamMu.Unlock()
	go c.receive(s)
	return s, nil
}

func (c *Client) currentStream() *produceStream {
	c.streamMu.Lock()
	defer c.streamMu.Unlock()
	if c.stream != nil && c.stream.alive() {
		return c.stream
	}
	return nil
}

// receive delivers the stream's answers to their callers until it breaks;
// then it fails the calls in flight and forgets the stream and the cached
// topic metadata (the broker may have changed while we were away).
func (c *Client) receive(s *produceStream) {
	for {
		resp, err := s.st.Recv()
		if err != nil {
			if c.closed() {
				s.fail(errClientClosed)
			} else {
				s.fail(fmt.Errorf("ferry client: %w: produce stream to %s broke: %v", sdk.ErrUnavailable, c.addr, sdk.ErrorFromStatus(err)))
				c.log.Warn("ferry client: produce stream broke; sends in flight are retried", "broker", c.addr, "error", err)
			}
			c.streamMu.Lock()
			if c.stream == s {
				c.stream = nil
			}
			c.streamMu.Unlock()
			c.forgetTopic("")
			return
		}
		s.mu.Lock()
		ch, ok := s.calls[resp.Seq]
		delete(s.calls, resp.Seq)
		s.mu.Unlock()
		if ok {
			ch <- produceResult{resp: resp}
		}
	}
}

func (s *produceStream) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err == nil
}

// call sends req with a fresh seq and waits for its answer. req is not
// modified; its messages are shared with the copy that is sent, whose
// timeout is what is left of ctx's.
func (s *produceStream) call(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	s.seq++
	seq := s.seq
	ch := make(chan produceResult, 1)
	s.calls[seq] = ch
	s.mu.Unlock()

	out := &ferryv1.ProduceRequest{Seq: seq, Messages: req.Messages, TimeoutNanos: req.TimeoutNanos}
	if dl, ok := ctx.Deadline(); ok {
		// The broker gets what is left of the caller's time.
		out.TimeoutNanos = max(int64(time.Until(dl)), 1)
	}
	s.sendMu.Lock()
	err := s.st.Send(out)
	s.sendMu.Unlock()
	if err != nil && !errors.Is(err, io.EOF) {
		// io.EOF: the stream ended and receive reports why; anything
		// else is a local failure that ended the stream.
		s.fail(fmt.Errorf("ferry client: %w: produce stream: %v", sdk.ErrUnavailable, sdk.ErrorFromStatus(err)))
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.calls, seq)
		s.mu.Unlock()
		return nil, ctx.Err()
	}
}

// fail breaks the stream: every waiting and later call gets err.
func (s *produceStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	calls := s.calls
	s.calls = map[uint64]chan produceResult{}
	err = s.err
	s.mu.Unlock()
	s.cancel()
	for _, ch := range calls {
		ch <- produceResult{err: err}
	}
}
