package sdk

import (
	"fmt"
	"net"
	"sync"
)

// Listener keeps a transport plugin's TCP listener through the plugin's life:
// Configure binds it (so that an address in use fails Configure, where the
// host reports it), Serve takes it and gives it back, Close releases it and
// stops a Serve still running. A Serve called again after it returned binds
// the same address anew. Safe for concurrent use.
type Listener struct {
	name string // the transport, for errors: "grpc transport"

	mu      sync.Mutex
	lis     net.Listener // bound and not yet taken
	addr    string       // the bound address, port resolved
	stop    func()       // stops the running Serve at once
	serving bool
	closed  bool
}

// NewListener returns an unbound listener of the transport called name.
func NewListener(name string) *Listener { return &Listener{name: name} }

// Bind binds addr ("host:port"; port 0 picks a free one). Called once, by
// Configure.
func (l *Listener) Bind(addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("%s: %w", l.name, ErrClosed)
	}
	if l.addr != "" {
		return fmt.Errorf("%s: %w: Configure called twice", l.name, ErrInvalidArgument)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: cannot listen on %s (config key listen): %w", l.name, addr, err)
	}
	l.lis, l.addr = lis, lis.Addr().String()
	return nil
}

// Addr is the bound address with its port resolved, "" before Bind.
func (l *Listener) Addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// Take hands the listener to Serve, binding the address again if an earlier
// Serve used it up; stop is how Close stops this Serve. Serve calls Done when
// it returns.
func (l *Listener) Take(stop func()) (net.Listener, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
		return nil, fmt.Errorf("%s: %w", l.name, ErrClosed)
	case l.addr == "":
		return nil, fmt.Errorf("%s: %w", l.name, ErrNotConfigured)
	case l.serving:
		return nil, fmt.Errorf("%s: %w: Serve is already running", l.name, ErrInvalidArgument)
	}
	lis := l.lis
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", l.addr); err != nil {
			return nil, fmt.Errorf("%s: cannot listen on %s again: %w", l.name, l.addr, err)
		}
	}
	l.lis, l.stop, l.serving = nil, stop, true
	return lis, nil
}

// Done records that Serve returned.
func (l *Listener) Done() {
	l.mu.Lock()
	l.stop, l.serving = nil, false
	l.mu.Unlock()
}

// Close stops a running Serve at once and releases a listener Serve never
// took. Safe to call more than once.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.stop != nil {
		l.stop()
	}
	if l.lis != nil {
		err := l.lis.Close()
		l.lis = nil
		return err
	}
	return nil
}
