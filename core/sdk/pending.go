package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// pending matches answers on a multiplexed stream to the calls waiting for
// them, by id. When the stream breaks every waiter gets the error at once.
type pending[T any] struct {
	mu     sync.Mutex
	next   uint64
	calls  map[uint64]chan result[T]
	broken error
}

type result[T any] struct {
	v   T
	err error
}

func newPending[T any]() *pending[T] {
	return &pending[T]{calls: make(map[uint64]chan result[T])}
}

// add registers a new call and returns its id and the channel its answer
// arrives on (buffered, so resolving never blocks).
func (p *pending[T]) add() (uint64, chan result[T], error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return 0, nil, p.broken
	}
	p.next++
	ch := make(chan result[T], 1)
	p.calls[p.next] = ch
	return p.next, ch, nil
}

// idle reports whether no call waits for its answer.
func (p *pending[T]) idle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.calls) == 0
}

// drop forgets a call whose caller gave up.
func (p *pending[T]) drop(id uint64) {
	p.mu.Lock()
	delete(p.calls, id)
	p.mu.Unlock()
}

// resolve delivers an answer; unknown ids (abandoned calls) are ignored.
func (p *pending[T]) resolve(id uint64, v T, err error) {
	p.mu.Lock()
	ch, ok := p.calls[id]
	delete(p.calls, id)
	p.mu.Unlock()
	if ok {
		ch <- result[T]{v, err}
	}
}

// fail breaks the table: every waiting and future call gets err.
func (p *pending[T]) fail(err error) {
	p.mu.Lock()
	if p.broken == nil {
		p.broken = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	calls := p.calls
	p.calls = make(map[uint64]chan result[T])
	broken := p.broken
	p.mu.Unlock()
	for _, ch := range calls {
		ch <- result[T]{err: broken}
	}
}

// clientStream is the client side of a long-lived gRPC stream multiplexed by
// id (Storage.Append and Read, Replication.Replicate): opened on first use,
// with one goroutine matching answers to the calls waiting for them. Sends
// are serialised, which keeps the order of requests. When the stream breaks,
// every waiting call fails with ErrUnavailable and the stream stays broken:
// the host replaces the plugin process and its client.
type clientStream[Req, Resp any] struct {
	once  sync.Once
	err   error
	mu    sync.Mutex // serialises send
	send  func(Req) error
	close func() error // CloseSend
	calls *pending[Resp]
}

// grpcStream is what a generated bidi client stream offers.
type grpcStream[Req, Resp any] interface {
	Send(Req) error
	Recv() (Resp, error)
	CloseSend() error
}

func newClientStream[Req, Resp any]() *clientStream[Req, Resp] {
	return &clientStream[Req, Resp]{calls: newPending[Resp]()}
}

// openStream opens s with open on first use; id gives an answer's call id.
func openStream[Req, Resp any, S grpcStream[Req, Resp]](s *clientStream[Req, Resp], open func() (S, error), id func(Resp) uint64) error {
	s.once.Do(func() {
		st, err := open()
		if err != nil {
			s.err = ErrorFromStatus(err)
			s.calls.fail(err)
			return
		}
		s.send, s.close = st.Send, st.CloseSend
		go func() {
			for {
				resp, err := st.Recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = ErrClosed
					}
					s.calls.fail(err)
					return
				}
				s.calls.resolve(id(resp), resp, nil)
			}
		}()
	})
	return s.err
}

// call sends the request build makes for a new call id and returns the id
// and the channel its answer (or the stream's failure) arrives on.
func (s *clientStream[Req, Resp]) call(build func(id uint64) Req) (uint64, chan result[Resp], error) {
	id, ch, err := s.calls.add()
	if err != nil {
		return 0, nil, err
	}
	s.mu.Lock()
	err = s.send(build(id))
	s.mu.Unlock()
	if err != nil {
		s.calls.fail(err) // the receive loop sees the same failure
	}
	return id, ch, nil
}

// closeSend ends the client's side of an opened stream.
func (s *clientStream[Req, Resp]) closeSend() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.close != nil {
		_ = s.close()
	}
}

// serveOrdered is the plugin side of an ordered, multiplexed stream
// (Storage.Append, Replication.Replicate). Each request is started in stream
// order, under a context bounded by its timeout: starting fixes its order (the
// offsets of an append). What start returns finishes it on its own goroutine,
// many at once, and gives the answer, which is sent as soon as it is ready.
// It returns when the stream ends, after every answer was sent.
func serveOrdered[Req interface{ GetTimeoutNanos() int64 }, Resp any](ctx context.Context,
	recv func() (Req, error), send func(Resp) error,
	start func(ctx context.Context, req Req) (finish func() Resp)) error {
	var sendMu sync.Mutex
	var finishing sync.WaitGroup
	defer finishing.Wait()
	for {
		req, err := recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if t := req.GetTimeoutNanos(); t > 0 {
			rctx, cancel = context.WithTimeout(ctx, time.Duration(t))
		}
		finish := start(rctx, req)
		finishing.Add(1)
		go func() {
			defer finishing.Done()
			defer cancel()
			resp := finish()
			sendMu.Lock()
			_ = send(resp) // a broken stream also ends recv
			sendMu.Unlock()
		}()
	}
}
