package sdk

import (
	"fmt"
	"sync"
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
