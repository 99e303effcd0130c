// Package netfault makes network faults between processes on one machine:
// a TCP proxy on each link that can be cut, black-holed, delayed and healed.
// ferry verify puts one on every link between the nodes it runs, and the
// fault tests in cmd/ferry use it through ferrytest.NewProxy.
package netfault

import (
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 to one target address that a test can
// cut, black-hole, heal and delay, to make network faults between processes
// on one machine. Point a client (or a peer list) at Addr instead of the
// target.
type Proxy struct {
	lis    net.Listener
	target string

	mu     sync.Mutex
	mode   proxyMode
	delay  time.Duration
	links  map[*link]bool
	closed bool
}

type proxyMode int

const (
	passing   proxyMode = iota
	cut                 // links closed, new connections closed at once
	blackhole           // connections held open, every byte dropped
)

// link is one proxied connection: the accepted one and the one to the
// target (nil while black-holed).
type link struct{ down, up net.Conn }

func (l *link) close() {
	l.down.Close()
	if l.up != nil {
		l.up.Close()
	}
}

// New starts a proxy on a free port of 127.0.0.1 to target; Close stops it.
func New(target string) (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{lis: lis, target: target, links: map[*link]bool{}}
	go p.accept()
	return p, nil
}

// Addr is where to connect instead of the target.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Target is the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Cut closes every link and closes new connections at once (the peer sees
// a reset or EOF, as when a process or a host's port is gone).
func (p *Proxy) Cut() { p.setMode(cut) }

// Blackhole keeps connections open but drops every byte both ways, and
// takes new connections without forwarding them (the peer sees silence and
// times out, as in a network partition).
func (p *Proxy) Blackhole() { p.setMode(blackhole) }

// Heal lets traffic through again. Black-holed connections are closed (what
// they carried is lost), so peers reconnect.
func (p *Proxy) Heal() { p.setMode(passing) }

// SetDelay holds every chunk of data d before it is passed on, each way.
// It adds latency, not a bandwidth limit: chunks read meanwhile queue behind
// it in order.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Close stops the proxy and closes its links.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.lis.Close()
	p.setMode(cut)
}

func (p *Proxy) setMode(m proxyMode) {
	p.mu.Lock()
	old := p.mode
	p.mode = m
	var drop []*link
	if m != old && old != passing || m == cut {
		// Leaving a black hole or cutting: every link goes.
		for l := range p.links {
			drop = append(drop, l)
		}
		clear(p.links)
	}
	p.mu.Unlock()
	for _, l := range drop {
		l.close()
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		switch mode {
		case cut:
			c.Close()
			continue
		case blackhole:
			l := &link{down: c}
			if !p.add(l, blackhole) {
				continue
			}
			go p.discard(l, c)
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{down: c, up: up}
		if !p.add(l, passing) {
			continue
		}
		go p.pipe(l, up, c)
		go p.pipe(l, c, up)
	}
}

// add registers a link made in mode m, unless the mode changed meanwhile.
func (p *Proxy) add(l *link, m proxyMode) bool {
	p.mu.Lock()
	ok := p.mode == m && !p.closed
	if ok {
		p.links[l] = true
	}
	p.mu.Unlock()
	if !ok {
		l.close()
	}
	return ok
}

func (p *Proxy) remove(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
	l.close()
}

// discard reads and drops what a black-holed connection sends.
func (p *Proxy) discard(l *link, c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			p.remove(l)
			return
		}
	}
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst: a reader stamps each chunk with when it is due
// (now + the delay), a writer passes it on then. While the proxy black-holes,
// chunks are dropped.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				p.mu.Lock()
				d, mode := p.delay, p.mode
				p.mu.Unlock()
				if mode == passing {
					q <- chunk{buf[:n], time.Now().Add(d)}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if w := time.Until(c.due); w > 0 {
			time.Sleep(w)
		}
		p.mu.Lock()
		mode := p.mode
		p.mu.Unlock()
		if mode != passing {
			continue
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	p.remove(l)
	for range q { // let the reader end
	}
}
