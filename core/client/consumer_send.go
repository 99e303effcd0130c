package client

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// copySender stores the messages consumers and DLQ tools write to a group's
// retry and dead-letter topics. Unlike a Producer's, their ids are chosen by
// the caller, derived from where the source message is stored, so that a
// copy sent again after a crash is de-duplicated by the broker. It keeps one
// Broker.Produce stream of its own to the client's primary broker, one
// request at a time: copies are rare next to deliveries.
type copySender struct {
	c *Client

	mu     sync.Mutex
	stream ferryv1.Broker_ProduceClient
	cancel context.CancelFunc
	seq    uint64
}

func newCopySender(c *Client) *copySender { return &copySender{c: c} }

// send stores msgs (all for one topic), retrying with backoff while the
// broker cannot be reached, until ctx ends. It returns nil once the broker
// has stored them with any status: a weaker status than OK is still stored.
func (s *copySender) send(ctx context.Context, msgs ...*ferryv1.Message) error {
	wait := retryBase
	for {
		err := s.attempt(ctx, msgs)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		if permanent(err) || s.c.closed() {
			return err
		}
		s.c.log.Warn("ferry consumer: storing a retry or dead-letter copy failed; retrying", "topic", msgs[0].Topic, "in", wait, "error", err)
		if !sleep(ctx, wait) {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		wait = min(2*wait, retryMax)
	}
}

func (s *copySender) attempt(ctx context.Context, msgs []*ferryv1.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c.closed() {
		return errClientClosed
	}
	if s.stream == nil {
		sctx, cancel := context.WithCancel(s.c.ctx)
		octx, ocancel := context.WithTimeout(ctx, callTimeout)
		stop := context.AfterFunc(octx, func() {
			if octx.Err() == context.DeadlineExceeded || ctx.Err() != nil {
				cancel()
			}
		})
		st, err := s.c.rpc.Produce(sctx, grpc.WaitForReady(true))
		stop()
		ocancel()
		if err != nil {
			cancel()
			return s.c.callError("produce (retry copy)", sdk.ErrorFromStatus(err))
		}
		s.stream, s.cancel = st, cancel
	}
	s.seq++
	req := &ferryv1.ProduceRequest{Seq: s.seq, Messages: msgs, TimeoutNanos: int64(callTimeout)}
	if err := s.stream.Send(req); err != nil {
		s.resetLocked()
		return s.c.callError("produce (retry copy)", fmt.Errorf("%w: %v", sdk.ErrUnavailable, err))
	}
	type answer struct {
		resp *ferryv1.ProduceResponse
		err  error
	}
	ch := make(chan answer, 1)
	st := s.stream
	go func() {
		resp, err := st.Recv()
		ch <- answer{resp, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			s.resetLocked()
			return s.c.callError("produce (retry copy)", fmt.Errorf("%w: %v", sdk.ErrUnavailable, sdk.ErrorFromStatus(a.err)))
		}
		if a.resp.Error != nil {
			return s.c.callError("produce (retry copy)", sdk.ErrorFromProto(a.resp.Error))
		}
		if a.resp.Seq != req.Seq || len(a.resp.Offsets) != len(msgs) {
			s.resetLocked()
			return s.c.callError("produce (retry copy)", fmt.Errorf("%w: answer for seq %d with %d offsets, want seq %d with %d",
				sdk.ErrUnavailable, a.resp.Seq, len(a.resp.Offsets), req.Seq, len(msgs)))
		}
		return nil
	case <-ctx.Done():
		// The answer may still come; the stream is dropped with it. A send
		// again uses the same ids, so the broker stores each copy once.
		s.resetLocked()
		return ctx.Err()
	}
}

func (s *copySender) resetLocked() {
	if s.cancel != nil {
		s.cancel()
	}
	s.stream, s.cancel = nil, nil
}

// close ends the stream.
func (s *copySender) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream != nil {
		_ = s.stream.CloseSend()
	}
	s.resetLocked()
}
