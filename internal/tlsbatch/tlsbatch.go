// Package tlsbatch makes one TLS write few socket writes.
//
// crypto/tls cuts a Write into records of at most 16 KiB of plaintext and
// hands each record to the socket on its own: a 256 KiB flush of gRPC's
// write buffer (the client's and the grpc transport's size) costs 16
// write(2) calls over TLS against one in plaintext. On a loaded 2-core
// machine those system calls were the largest cost TLS added to an async
// producer (docs/security.md, "What TLS and ACLs cost"). A conn of this
// package collects the records of one Write under the TLS conn and writes
// them to the socket 64 KiB at a time. Handshake messages, alerts and anything else the TLS conn
// writes outside a Write go straight through.
package tlsbatch

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// maxHeld is what one Write collects before it writes it out: four
// records. A 256 KiB Write is 4 socket writes instead of 16, and the peer
// can start decrypting the first 64 KiB while this side encrypts the rest
// (holding the whole Write was not better: docs/security.md).
const maxHeld = 64 << 10

// Raw is the socket under a TLS conn: while a Write of the conn Wrap
// returns is under way, the records it makes are held and written
// maxHeld at a time, the rest when it ends.
type Raw struct {
	net.Conn

	mu   sync.Mutex
	hold int    // Writes of the wrapped conn under way
	buf  []byte // records held for them
}

// NewRaw returns c ready to sit under a TLS conn (tls.Client(r, ...),
// tls.Server(r, ...)); Wrap that conn.
func NewRaw(c net.Conn) *Raw { return &Raw{Conn: c} }

// Write writes p now, or holds it while a Write of the wrapped conn is
// under way.
func (r *Raw) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hold == 0 {
		return r.Conn.Write(p)
	}
	r.buf = append(r.buf, p...)
	if len(r.buf) >= maxHeld {
		if err := r.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (r *Raw) begin() {
	r.mu.Lock()
	r.hold++
	r.mu.Unlock()
}

// end writes what was held once the last Write under way has ended.
func (r *Raw) end() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold--
	if r.hold > 0 {
		return nil
	}
	return r.flushLocked()
}

func (r *Raw) flushLocked() error {
	if len(r.buf) == 0 {
		return nil
	}
	_, err := r.Conn.Write(r.buf)
	if cap(r.buf) > 2*maxHeld {
		r.buf = nil
	} else {
		r.buf = r.buf[:0]
	}
	return err
}

// Conn is a TLS conn over a Raw whose every Write reaches the socket in
// pieces of maxHeld, not of a record. Everything else is the TLS conn's.
type Conn struct {
	net.Conn
	raw *Raw
}

// Wrap returns tc, a TLS conn over r, with its Writes batched.
func (r *Raw) Wrap(tc net.Conn) *Conn { return &Conn{Conn: tc, raw: r} }

// singleRecord is the most a Write can carry in one TLS record: no gain in
// holding it.
const singleRecord = 16 << 10

func (c *Conn) Write(p []byte) (int, error) {
	if len(p) <= singleRecord {
		return c.Conn.Write(p)
	}
	c.raw.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.end(); ferr != nil && err == nil {
		// The TLS conn took the records as written; they were not.
		n, err = 0, ferr
	}
	return n, err
}

// NetConn is the TLS conn under the batching (as tls.Conn.NetConn is the
// socket under it).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Credentials returns tc (TLS credentials, such as credentials.NewTLS
// makes) with every connection it secures batched.
func Credentials(tc credentials.TransportCredentials) credentials.TransportCredentials {
	return batched{tc}
}

type batched struct {
	credentials.TransportCredentials
}

func (b batched) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	r := NewRaw(raw)
	conn, info, err := b.TransportCredentials.ClientHandshake(ctx, authority, r)
	if err != nil {
		return nil, nil, err
	}
	return r.Wrap(conn), info, nil
}

func (b batched) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	r := NewRaw(raw)
	conn, info, err := b.TransportCredentials.ServerHandshake(r)
	if err != nil {
		return nil, nil, err
	}
	return r.Wrap(conn), info, nil
}

func (b batched) Clone() credentials.TransportCredentials {
	return batched{b.TransportCredentials.Clone()}
}
