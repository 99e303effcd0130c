package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"

	"github.com/ferrymq/ferry/core/security"
)

// hashicorp/raft's requests carry the sender's node id and raft address
// (RPCHeader.ID and Addr; the older Leader and Candidate fields hold an
// address too), and raft believes them: a vote is cast for the id and
// address a RequestVote names, a follower takes the AppendEntries' sender
// for its leader. The peer handshake binds each link to the node id its
// certificate names (security.PeerNode), so a node of the cluster could
// still speak raft as another node on its own link. rpcGuard closes that:
// it reads every request on an accepted link as raft's NetworkTransport
// does (one byte of RPC type, one msgpack map, and for InstallSnapshot
// the snapshot's Size bytes), and refuses the link unless each request
// claims the node id of the handshake and no raft address another member
// of the group's configuration has.
//
// It checks the bytes as they are handed to raft, in the same Read: a
// request is complete only with its last byte, and a Read that completes
// a request that fails returns an error in place of its bytes, so raft
// never decodes it (raft then closes the link). Nothing is copied but the
// few small values it checks; payloads (the entries' data, the snapshot)
// are only counted.

// The RPC types of hashicorp/raft's NetworkTransport (net_transport.go).
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

var rpcNames = [...]string{"AppendEntries", "RequestVote", "InstallSnapshot", "TimeoutNow", "RequestPreVote"}

// Bounds on what the guard reads whole: a map key, and a checked value.
const (
	maxGuardKey   = 64
	maxGuardValue = 1024
)

// guardState is where the guard is in the stream of requests.
type guardState uint8

const (
	gType     guardState = iota // the next request's RPC type byte
	gMap                        // its map header
	gKey                        // a key of the map
	gValue                      // a checked key's value
	gSkip                       // skipping values (pending) and payload bytes (skip)
	gSnapshot                   // the snapshot data after an InstallSnapshot
	gFailed                     // refused: every Read fails
)

// guardField is a key of a request the guard checks.
type guardField uint8

const (
	fNone guardField = iota
	fID
	fAddr
	fLeader
	fCandidate
	fSize
	fHeader // "RPCHeader": the embedded header as a map of its own
)

var guardKeys = map[string]guardField{
	"ID": fID, "Addr": fAddr, "Leader": fLeader, "Candidate": fCandidate, "Size": fSize, "RPCHeader": fHeader,
}

// rpcGuard checks the raft requests of one link, fed the bytes in order.
// Not safe for concurrent use: raft reads a link from one goroutine.
type rpcGuard struct {
	node string // the node id bound at the handshake
	// owner, when set, names the member of the group's latest
	// configuration whose raft address is addr.
	owner func(addr string) (id string, ok bool)

	st      guardState
	tok     []byte // the current token's bytes, gathered across feeds
	rpc     uint8
	pairs   uint64     // keys left in the request's map
	field   guardField // the key whose value is next (gValue)
	pending uint64     // values left to skip (gSkip)
	skip    uint64     // payload bytes left to skip (gSkip), or snapshot bytes (gSnapshot)
	seen    [fHeader + 1]bool
	id      string
	addrs   []string // Addr, Leader, Candidate as sent
	passed  []string // the addrs of the last request, checked
	size    int64
	err     error
}

// guardError is a refused request: the link is closed.
type guardError struct{ reason string }

func (e *guardError) Error() string { return "raft request refused: " + e.reason }

func (g *rpcGuard) fail(format string, args ...any) error {
	g.st = gFailed
	g.err = &guardError{reason: fmt.Sprintf(format, args...)}
	return g.err
}

// gather appends to g.tok from in until it holds n bytes; it returns the
// rest of in and whether the token is complete.
func (g *rpcGuard) gather(in []byte, n int) ([]byte, bool) {
	k := min(n-len(g.tok), len(in))
	if k > 0 {
		g.tok = append(g.tok, in[:k]...)
		in = in[k:]
	}
	return in, len(g.tok) >= n
}

// msgpack value kinds, as the guard tells them apart.
type mpKind uint8

const (
	mpScalar mpKind = iota // nil, bool, numbers: payload bytes, no children
	mpNil
	mpInt
	mpBytes // str or bin: payload bytes
	mpExt   // ext: payload bytes (type byte included)
	mpMap
	mpArray
)

// mpHeaderLen is the length of the header of a msgpack value that starts
// with byte m: the marker and any length that follows it.
func mpHeaderLen(m byte) (int, error) {
	switch {
	case m <= 0x7f || m >= 0xe0, m >= 0x80 && m <= 0xbf:
		return 1, nil
	}
	switch m {
	case 0xc0, 0xc2, 0xc3, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return 1, nil
	case 0xc4, 0xc7, 0xd9:
		return 2, nil
	case 0xc5, 0xc8, 0xda, 0xdc, 0xde:
		return 3, nil
	case 0xc6, 0xc9, 0xdb, 0xdd, 0xdf:
		return 5, nil
	}
	return 0, fmt.Errorf("byte 0x%02x starts no msgpack value", m)
}

// mpHeader reads a value's header (h, mpHeaderLen bytes): its kind, the
// payload bytes that follow the header, and the values it contains.
func mpHeader(h []byte) (kind mpKind, payload, children uint64) {
	m := h[0]
	switch {
	case m <= 0x7f || m >= 0xe0:
		return mpInt, 0, 0
	case m <= 0x8f:
		return mpMap, 0, 2 * uint64(m&0x0f)
	case m <= 0x9f:
		return mpArray, 0, uint64(m & 0x0f)
	case m <= 0xbf:
		return mpBytes, uint64(m & 0x1f), 0
	}
	be := func() uint64 {
		switch len(h) {
		case 2:
			return uint64(h[1])
		case 3:
			return uint64(binary.BigEndian.Uint16(h[1:]))
		default:
			return uint64(binary.BigEndian.Uint32(h[1:]))
		}
	}
	switch m {
	case 0xc0:
		return mpNil, 0, 0
	case 0xc2, 0xc3:
		return mpScalar, 0, 0
	case 0xca:
		return mpScalar, 4, 0
	case 0xcb:
		return mpScalar, 8, 0
	case 0xcc, 0xd0:
		return mpInt, 1, 0
	case 0xcd, 0xd1:
		return mpInt, 2, 0
	case 0xce, 0xd2:
		return mpInt, 4, 0
	case 0xcf, 0xd3:
		return mpInt, 8, 0
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return mpExt, 1 + 1<<(m-0xd4), 0
	case 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb:
		return mpBytes, be(), 0
	case 0xc7, 0xc8, 0xc9:
		return mpExt, be() + 1, 0
	case 0xdc, 0xdd:
		return mpArray, 0, be()
	}
	return mpMap, 0, 2 * be() // 0xde, 0xdf
}

// mpInt64 decodes a whole msgpack integer value (tok).
func mpInt64(tok []byte) (int64, bool) {
	m := tok[0]
	switch {
	case m <= 0x7f:
		return int64(m), true
	case m >= 0xe0:
		return int64(int8(m)), true
	}
	b := tok[1:]
	switch m {
	case 0xcc:
		return int64(b[0]), true
	case 0xcd:
		return int64(binary.BigEndian.Uint16(b)), true
	case 0xce:
		return int64(binary.BigEndian.Uint32(b)), true
	case 0xcf:
		u := binary.BigEndian.Uint64(b)
		if u > math.MaxInt64 {
			return 0, false
		}
		return int64(u), true
	case 0xd0:
		return int64(int8(b[0])), true
	case 0xd1:
		return int64(int16(binary.BigEndian.Uint16(b))), true
	case 0xd2:
		return int64(int32(binary.BigEndian.Uint32(b))), true
	case 0xd3:
		return int64(binary.BigEndian.Uint64(b)), true
	}
	return 0, false
}

// feed checks in, the next bytes of the link, as raft is about to read
// them; an error refuses the link (and every later feed fails). A
// request whose last byte in holds is judged before feed returns.
func (g *rpcGuard) feed(in []byte) error {
	for len(in) > 0 {
		if g.st == gFailed {
			return g.err
		}
		if g.st == gType {
			t := in[0]
			in = in[1:]
			if int(t) >= len(rpcNames) {
				return g.fail("unknown raft RPC type %d", t)
			}
			g.rpc, g.st = t, gMap
			g.seen, g.id, g.addrs, g.size = [fHeader + 1]bool{}, "", g.addrs[:0], 0
			continue
		}
		if g.st == gSnapshot {
			n := min(g.skip, uint64(len(in)))
			g.skip -= n
			in = in[n:]
			if g.skip == 0 {
				g.st = gType
			}
			continue
		}
		if g.st == gSkip && g.skip > 0 {
			n := min(g.skip, uint64(len(in)))
			g.skip -= n
			in = in[n:]
			if g.skip == 0 && g.pending == 0 {
				if err := g.nextKey(); err != nil {
					return err
				}
			}
			continue
		}
		// A value's header, gathered into g.tok.
		if len(g.tok) == 0 {
			if _, err := mpHeaderLen(in[0]); err != nil {
				return g.fail("a raft %s that is not msgpack: %v", rpcNames[g.rpc], err)
			}
		}
		hl := g.headerLen(in)
		var ok bool
		if in, ok = g.gather(in, hl); !ok {
			continue
		}
		kind, payload, children := mpHeader(g.tok[:hl])
		switch g.st {
		case gMap:
			g.tok = g.tok[:0]
			if kind != mpMap {
				return g.fail("a raft %s that is not a msgpack map", rpcNames[g.rpc])
			}
			g.pairs = children / 2
			if err := g.nextKey(); err != nil {
				return err
			}
		case gKey:
			if kind != mpBytes {
				return g.fail("a raft %s whose map has a key that is not a string", rpcNames[g.rpc])
			}
			if payload > maxGuardKey {
				// No checked key is that long: skip it, then its value.
				g.tok = g.tok[:0]
				g.st, g.skip, g.pending, g.field = gSkip, payload, 1, fNone
				continue
			}
			if in, ok = g.gather(in, hl+int(payload)); !ok {
				continue
			}
			g.field = guardKeys[string(g.tok[hl:])]
			g.tok = g.tok[:0]
			if g.field == fNone {
				g.st, g.skip, g.pending = gSkip, 0, 1
				continue
			}
			if g.seen[g.field] {
				return g.fail("a raft %s with key %s twice", rpcNames[g.rpc], fieldName(g.field))
			}
			g.seen[g.field] = true
			if g.field == fHeader {
				return g.fail("a raft %s with its RPCHeader as a map of its own (raft sends its fields inline)", rpcNames[g.rpc])
			}
			g.st = gValue
		case gValue:
			switch {
			case kind == mpNil:
			case g.field == fSize && kind == mpInt:
			case g.field != fSize && kind == mpBytes && payload <= maxGuardValue:
			default:
				return g.fail("a raft %s whose %s is not what raft sends (msgpack 0x%02x, %d bytes)", rpcNames[g.rpc], fieldName(g.field), g.tok[0], payload)
			}
			if in, ok = g.gather(in, hl+int(payload)); !ok {
				continue
			}
			err := g.value(kind, g.tok[hl:])
			g.tok = g.tok[:0]
			if err != nil {
				return err
			}
			if err := g.nextKey(); err != nil {
				return err
			}
		case gSkip:
			g.tok = g.tok[:0]
			g.pending = g.pending - 1 + children
			g.skip = payload
			if g.skip == 0 && g.pending == 0 {
				if err := g.nextKey(); err != nil {
					return err
				}
			}
		}
	}
	if g.st == gFailed {
		return g.err
	}
	return nil
}

// headerLen is the header length of the value that starts with the
// current token (gathered in g.tok, or the first byte of in).
func (g *rpcGuard) headerLen(in []byte) int {
	m := byte(0)
	if len(g.tok) > 0 {
		m = g.tok[0]
	} else {
		m = in[0]
	}
	n, _ := mpHeaderLen(m)
	return n
}

// value records a checked key's value (v: its payload; nil for nil).
func (g *rpcGuard) value(kind mpKind, v []byte) error {
	switch g.field {
	case fID:
		g.id = string(v)
	case fAddr, fLeader, fCandidate:
		if len(v) > 0 {
			g.addrs = append(g.addrs, string(v))
		}
	case fSize:
		if kind == mpNil {
			return nil
		}
		n, ok := mpInt64(g.tok)
		if !ok {
			return g.fail("a raft %s whose Size does not fit an int64", rpcNames[g.rpc])
		}
		g.size = n
	}
	return nil
}

// nextKey moves to the request's next key, or, after its last, checks
// the request.
func (g *rpcGuard) nextKey() error {
	if g.pairs > 0 {
		g.pairs--
		g.st = gKey
		return nil
	}
	if err := g.check(); err != nil {
		return err
	}
	g.st = gType
	if g.rpc == rpcInstallSnapshot && g.size > 0 {
		g.st, g.skip = gSnapshot, uint64(g.size)
	}
	return nil
}

// check judges a complete request by the ids it claims.
func (g *rpcGuard) check() error {
	name := rpcNames[g.rpc]
	if g.id != g.node {
		if g.id == "" {
			return g.fail("node %q (the id bound to its link at the handshake) sent a raft %s that claims no node id", g.node, name)
		}
		return g.fail("node %q (the id bound to its link at the handshake) sent a raft %s claiming node id %q", g.node, name, g.id)
	}
	if g.owner != nil && !slices.Equal(g.addrs, g.passed) {
		for _, a := range g.addrs {
			if id, ok := g.owner(a); ok && id != g.node {
				return g.fail("node %q (the id bound to its link at the handshake) sent a raft %s claiming raft address %s, which is node %q's", g.node, name, a, id)
			}
		}
		g.passed = append(g.passed[:0], g.addrs...)
	}
	return nil
}

func fieldName(f guardField) string {
	for k, v := range guardKeys {
		if v == f {
			return k
		}
	}
	return "?"
}

// guardedConn is an accepted raft connection whose requests rpcGuard
// checks before raft reads them, once the handshake bound the link to a
// node id.
type guardedConn struct {
	net.Conn
	peers *security.Peers
	owner func(addr string) (string, bool)
	once  sync.Once
	guard *rpcGuard // nil: nothing to check (no node id claimed)
	err   error
}

func (c *guardedConn) Read(b []byte) (int, error) {
	c.once.Do(func() {
		node, _, err := security.PeerNode(c.Conn)
		if err != nil {
			c.err = err
			return
		}
		if node != "" && !noRPCCheck {
			c.guard = &rpcGuard{node: node, owner: c.owner}
		}
	})
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(b)
	if c.guard != nil && n > 0 {
		if gerr := c.guard.feed(b[:n]); gerr != nil {
			var ge *guardError
			if errors.As(gerr, &ge) {
				c.peers.Refused(c.Conn.RemoteAddr().String(), ge.reason)
			}
			c.err = gerr
			_ = c.Conn.Close()
			return 0, gerr
		}
	}
	return n, err
}
