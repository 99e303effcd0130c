package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// produceStream is the one Broker.Produce stream of a broker connection,
// shared by all the client's producers: each request gets a seq and its
// answer, which may come out of order, is matched back by seq. When the
// stream breaks, every call waiting on it fails with sdk.ErrUnavailable and
// the next call opens a new stream.
type produceStream struct {
	b      *brokerConn
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

// notStoredError marks a failed attempt that certainly stored nothing: the
// request never left the client, or the broker answered that it did not
// store it. Such an attempt may be retried on any broker without creating a
// duplicate.
type notStoredError struct{ err error }

func (e *notStoredError) Error() string { return e.err.Error() }
func (e *notStoredError) Unwrap() error { return e.err }

func notStored(err error) error { return &notStoredError{err: err} }

func isNotStored(err error) bool {
	var ns *notStoredError
	return errors.As(err, &ns)
}

// produce sends one request on the broker's shared stream (opening it if
// need be) and waits for its answer or for ctx. It fails with
// sdk.ErrUnavailable when the broker cannot be reached (a notStoredError) or
// the stream broke before the answer came (the request may or may not have
// been stored).
func (b *brokerConn) produce(ctx context.Context, req *ferryv1.ProduceRequest) (*ferryv1.ProduceResponse, error) {
	c := b.c
	if c.closed() {
		return nil, errClientClosed
	}
	if n := req.SizeVT(); n > c.maxRequestBytes {
		return nil, fmt.Errorf("ferry client: %w: a batch of %d messages is %d bytes, over the client's limit of %d bytes (WithMaxRequestBytes); send fewer messages at once",
			sdk.ErrInvalidArgument, len(req.Messages), n, c.maxRequestBytes)
	}
	select {
	case c.inflight <- struct{}{}:
		defer func() { <-c.inflight }()
	case <-ctx.Done():
		return nil, notStored(ctx.Err())
	}
	s, err := b.produceStream(ctx)
	if err != nil {
		return nil, err
	}
	return s.call(ctx, req)
}

// produceOneway sends req on the stream without waiting for its answer. It
// returns once gRPC took the request (it is on its way to the broker), or
// with a notStoredError when it could not be sent.
func (b *brokerConn) produceOneway(ctx context.Context, req *ferryv1.ProduceRequest) error {
	c := b.c
	if c.closed() {
		return errClientClosed
	}
	if n := req.SizeVT(); n > c.maxRequestBytes {
		return fmt.Errorf("ferry client: %w: a batch of %d messages is %d bytes, over the client's limit of %d bytes",
			sdk.ErrInvalidArgument, len(req.Messages), n, c.maxRequestBytes)
	}
	s, err := b.produceStream(ctx)
	if err != nil {
		return err
	}
	return s.send(req)
}

// produceStream returns the working stream or opens a new one, waiting for
// the connection (within ctx) if the broker is away; with several brokers it
// does not wait for one whose connection attempt failed. Its errors are
// notStoredErrors.
func (b *brokerConn) produceStream(ctx context.Context) (*produceStream, error) {
	if s := b.currentStream(); s != nil {
		return s, nil
	}
	c := b.c
	select {
	case b.opening <- struct{}{}:
		defer func() { <-b.opening }()
	case <-ctx.Done():
		return nil, notStored(fmt.Errorf("ferry client: %w: waiting for the produce stream to %s: %v", sdk.ErrUnavailable, b.addr, ctx.Err()))
	}
	if s := b.currentStream(); s != nil {
		return s, nil // another caller opened it meanwhile
	}
	if err := b.waitReady(ctx, c.multiBroker()); err != nil {
		if c.closed() {
			return nil, errClientClosed
		}
		// Nothing was sent: the outcome is known, so this is not a timeout.
		return nil, notStored(fmt.Errorf("ferry client: %w: broker %s not reachable: %v", sdk.ErrUnavailable, b.addr, err))
	}
	sctx, cancel := context.WithCancel(c.ctx)
	st, err := b.rpc.Produce(sctx)
	if err != nil {
		cancel()
		if c.closed() {
			return nil, errClientClosed
		}
		return nil, notStored(fmt.Errorf("ferry client: %w: opening the produce stream to %s: %v", sdk.ErrUnavailable, b.addr, err))
	}
	s := &produceStream{b: b, st: st, cancel: cancel, calls: map[uint64]chan produceResult{}}
	b.streamMu.Lock()
	b.stream = s
	b.streamMu.Unlock()
	go b.receive(s)
	return s, nil
}

func (b *brokerConn) currentStream() *produceStream {
	b.streamMu.Lock()
	defer b.streamMu.Unlock()
	if b.stream != nil && b.stream.alive() {
		return b.stream
	}
	return nil
}

// receive delivers the stream's answers to their callers until it breaks;
// then it fails the calls in flight and marks the cached metadata stale (the
// broker may have changed while we were away). Answers nobody waits for
// (oneway sends, abandoned calls) are dropped.
func (b *brokerConn) receive(s *produceStream) {
	c := b.c
	for {
		resp, err := s.st.Recv()
		if err != nil {
			if c.closed() {
				s.fail(errClientClosed)
			} else {
				s.fail(fmt.Errorf("ferry client: %w: produce stream to %s broke: %v", sdk.ErrUnavailable, b.addr, sdk.ErrorFromStatus(err)))
				c.log.Warn("ferry client: produce stream broke; sends in flight are retried", "broker", b.addr, "error", err)
			}
			b.streamMu.Lock()
			if b.stream == s {
				b.stream = nil
			}
			b.streamMu.Unlock()
			c.forgetTopic("")
			c.staleRoutes()
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
		return nil, notStored(err)
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
	if err != nil {
		// The request did not go out: the stream ended (receive reports
		// why) or failed here. Either way nothing of it is stored.
		s.mu.Lock()
		delete(s.calls, seq)
		s.mu.Unlock()
		err = fmt.Errorf("ferry client: %w: produce stream to %s: %v", sdk.ErrUnavailable, s.b.addr, sdk.ErrorFromStatus(err))
		s.fail(err)
		return nil, notStored(err)
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

// send sends req with a fresh seq and does not wait for its answer.
func (s *produceStream) send(req *ferryv1.ProduceRequest) error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return notStored(err)
	}
	s.seq++
	out := &ferryv1.ProduceRequest{Seq: s.seq, Messages: req.Messages, TimeoutNanos: req.TimeoutNanos}
	s.mu.Unlock()
	s.sendMu.Lock()
	err := s.st.Send(out)
	s.sendMu.Unlock()
	if err != nil {
		err = fmt.Errorf("ferry client: %w: produce stream to %s: %v", sdk.ErrUnavailable, s.b.addr, sdk.ErrorFromStatus(err))
		s.fail(err)
		return notStored(err)
	}
	return nil
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
