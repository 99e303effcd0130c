package netfault

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The checks below run over real loopback sockets: an echo server, the
// proxy in front of it, and a client that talks through the proxy. Each
// check returns an error instead of failing the test, so that the same check
// runs against a proxy that does nothing when told to fault (noop): the
// control that proves the check can fail.

// faulty is what a check drives: a Proxy, or the control.
type faulty interface {
	Addr() string
	Cut()
	Blackhole()
	Heal()
	SetDelay(time.Duration)
	Close()
}

var _ faulty = (*Proxy)(nil)

// noop forwards like a Proxy but ignores every fault: the control.
type noop struct{ p *Proxy }

func (n noop) Addr() string           { return n.p.Addr() }
func (n noop) Cut()                   {}
func (n noop) Blackhole()             {}
func (n noop) Heal()                  {}
func (n noop) SetDelay(time.Duration) {}
func (n noop) Close()                 { n.p.Close() }

// echo is a line echo server on 127.0.0.1 that counts the connections it
// accepted and the lines it received.
type echo struct {
	lis      net.Listener
	accepted atomic.Int64
	lines    atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func newEcho(t *testing.T) *echo {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{lis: lis}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			go func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					e.lines.Add(1)
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
	})
	return e
}

// deadline is how long a check waits for something that must happen: long,
// for a loaded machine. quiet is how long it watches for something that
// must not happen (nothing may arrive through a partition).
const (
	deadline = 30 * time.Second
	quiet    = 1500 * time.Millisecond
	// closing is how long a cut connection may take to end on loopback.
	closing = 15 * time.Second
)

// conn is a client connection through the proxy.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: bufio.NewReader(c)}, nil
}

// roundTrip sends line and waits up to d for its echo.
func (c *conn) roundTrip(line string, d time.Duration) error {
	c.c.SetDeadline(time.Now().Add(d))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		return fmt.Errorf("write %q: %w", line, err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("echo of %q: %w", line, err)
	}
	if got != line+"\n" {
		return fmt.Errorf("echo of %q: got %q", line, got)
	}
	return nil
}

// closedWithin says whether the connection ends (EOF or reset) within d
// without a byte arriving.
func (c *conn) closedWithin(d time.Duration) error {
	c.c.SetReadDeadline(time.Now().Add(d))
	defer c.c.SetReadDeadline(time.Time{})
	b, err := c.r.ReadByte()
	switch {
	case err == nil:
		return fmt.Errorf("read byte %q, want the connection closed", b)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("the connection was still open after %s", d)
	}
	return nil // EOF or reset: closed
}

// working waits until a new connection through addr echoes a line.
func working(addr string) error {
	var last error
	for end := time.Now().Add(deadline); time.Now().Before(end); {
		c, err := dial(addr)
		if err == nil {
			err = c.roundTrip("hello", deadline)
			c.c.Close()
			if err == nil {
				return nil
			}
		}
		last = err
	}
	return fmt.Errorf("no connection through the proxy worked within %s: %v", deadline, last)
}

// checkPartition: while black-holed, an open connection carries nothing
// either way and stays open; a new connection is taken but never reaches
// the target. After Heal the held connections are closed and new ones work.
func checkPartition(e *echo, p faulty) error {
	c, err := dial(p.Addr())
	if err != nil {
		return err
	}
	defer c.c.Close()
	if err := c.roundTrip("before", deadline); err != nil {
		return fmt.Errorf("before the partition: %w", err)
	}
	p.Blackhole()
	accepted, lines := e.accepted.Load(), e.lines.Load()
	fresh, err := dial(p.Addr())
	if err != nil {
		return fmt.Errorf("a new connection during the partition: %w (want it taken and held)", err)
	}
	defer fresh.c.Close()
	if err := c.roundTrip("during", quiet); err == nil {
		return fmt.Errorf("a line crossed the partition and was echoed")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("during the partition: %w (want silence, not a closed connection)", err)
	}
	if err := fresh.roundTrip("fresh", quiet); err == nil {
		return fmt.Errorf("a new connection's line crossed the partition")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("a new connection during the partition: %w (want silence)", err)
	}
	if n := e.lines.Load() - lines; n != 0 {
		return fmt.Errorf("the target received %d line(s) during the partition", n)
	}
	if n := e.accepted.Load() - accepted; n != 0 {
		return fmt.Errorf("the target accepted %d connection(s) during the partition", n)
	}
	p.Heal()
	if err := c.closedWithin(deadline); err != nil {
		return fmt.Errorf("a black-holed connection after the heal: %w", err)
	}
	if err := working(p.Addr()); err != nil {
		return fmt.Errorf("after the heal: %w", err)
	}
	return nil
}

// checkReset: Cut closes open connections at once and closes new ones
// without reaching the target; after Heal new connections work.
func checkReset(e *echo, p faulty) error {
	c, err := dial(p.Addr())
	if err != nil {
		return err
	}
	defer c.c.Close()
	if err := c.roundTrip("before", deadline); err != nil {
		return fmt.Errorf("before the reset: %w", err)
	}
	p.Cut()
	if err := c.closedWithin(closing); err != nil {
		return fmt.Errorf("an open connection after the cut: %w", err)
	}
	accepted := e.accepted.Load()
	fresh, err := dial(p.Addr())
	if err == nil { // the proxy's listener takes it, then closes it
		err = fresh.closedWithin(deadline)
		fresh.c.Close()
		if err != nil {
			return fmt.Errorf("a new connection while cut: %w", err)
		}
	}
	if n := e.accepted.Load() - accepted; n != 0 {
		return fmt.Errorf("the target accepted %d connection(s) while cut", n)
	}
	p.Heal()
	if err := working(p.Addr()); err != nil {
		return fmt.Errorf("after the heal: %w", err)
	}
	return nil
}

// checkDelay: with a delay d each way a round trip takes at least 2d (a
// lower bound only: a loaded machine makes it slower, never faster), lines
// keep their order, and after SetDelay(0) and a heal traffic still flows.
func checkDelay(_ *echo, p faulty) error {
	const d = 750 * time.Millisecond
	c, err := dial(p.Addr())
	if err != nil {
		return err
	}
	defer c.c.Close()
	if err := c.roundTrip("before", deadline); err != nil {
		return fmt.Errorf("before the delay: %w", err)
	}
	p.SetDelay(d)
	t0 := time.Now()
	if err := c.roundTrip("delayed", deadline); err != nil {
		return fmt.Errorf("delayed: %w", err)
	}
	if rtt := time.Since(t0); rtt < 2*d {
		return fmt.Errorf("a round trip took %s with %s of delay each way: want at least %s", rtt, d, 2*d)
	}
	// Several lines in one go come back whole and in order.
	var want strings.Builder
	for i := range 20 {
		fmt.Fprintf(&want, "line-%d\n", i)
	}
	c.c.SetDeadline(time.Now().Add(deadline))
	if _, err := io.WriteString(c.c, want.String()); err != nil {
		return err
	}
	var got strings.Builder
	for range 20 {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("delayed lines: %w", err)
		}
		got.WriteString(l)
	}
	c.c.SetDeadline(time.Time{})
	if got.String() != want.String() {
		return fmt.Errorf("delayed lines came back as %q, want %q", got.String(), want.String())
	}
	p.SetDelay(0)
	p.Heal()
	if err := c.roundTrip("after", deadline); err != nil {
		return fmt.Errorf("after the delay: %w", err)
	}
	return nil
}

func TestProxyFaults(t *testing.T) {
	checks := []struct {
		name  string
		check func(*echo, faulty) error
	}{
		{"partition", checkPartition},
		{"reset", checkReset},
		{"delay", checkDelay},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEcho(t)
			p, err := New(e.lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			if p.Target() != e.lis.Addr().String() {
				t.Fatalf("Target() = %s, want %s", p.Target(), e.lis.Addr())
			}
			if err := tc.check(e, p); err != nil {
				t.Fatal(err)
			}
		})
		// The control: a proxy that forwards but ignores the fault must
		// fail the same check.
		t.Run(tc.name+"/control", func(t *testing.T) {
			t.Parallel()
			e := newEcho(t)
			p, err := New(e.lis.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			n := noop{p}
			defer n.Close()
			err = tc.check(e, n)
			if err == nil {
				t.Fatalf("the %s check passed a proxy that does nothing", tc.name)
			}
			t.Logf("control failed as it must: %v", err)
		})
	}
}

// TestProxyClose: after Close the proxy's port takes no connections and its
// open links are closed.
func TestProxyClose(t *testing.T) {
	e := newEcho(t)
	p, err := New(e.lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	if err := c.roundTrip("hi", deadline); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := c.closedWithin(deadline); err != nil {
		t.Fatalf("an open link after Close: %v", err)
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Fatalf("a connection to %s was taken after Close", p.Addr())
	}
}
