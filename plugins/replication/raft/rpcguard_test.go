package raft

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	hraft "github.com/hashicorp/raft"
)

// encodeRPC writes a request as hashicorp/raft's NetworkTransport sends
// it (sendRPC): its type byte, then the request in msgpack; for an
// InstallSnapshot, then the snapshot's bytes.
func encodeRPC(t testing.TB, typ uint8, req any, snapshot []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteByte(typ)
	if err := codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(req); err != nil {
		t.Fatal(err)
	}
	b.Write(snapshot)
	return b.Bytes()
}

func header(id, addr string) hraft.RPCHeader {
	return hraft.RPCHeader{ProtocolVersion: hraft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
}

// requests are one of each of raft's requests, sent by node id from
// raft address addr, as raft fills them in.
func requests(t testing.TB, id, addr string) [][]byte {
	snap := bytes.Repeat([]byte("snapshot data "), 100)
	return [][]byte{
		encodeRPC(t, rpcAppendEntries, &hraft.AppendEntriesRequest{RPCHeader: header(id, addr), Term: 7, PrevLogEntry: 41, PrevLogTerm: 7, LeaderCommitIndex: 40,
			Entries: []*hraft.Log{{Index: 42, Term: 7, Type: hraft.LogCommand, Data: bytes.Repeat([]byte{0xc1, 0xde, 0xad}, 300), AppendedAt: time.Now()}, {Index: 43, Term: 7, Data: []byte("x")}}}, nil),
		encodeRPC(t, rpcAppendEntries, &hraft.AppendEntriesRequest{RPCHeader: header(id, addr), Term: 7}, nil), // a heartbeat
		encodeRPC(t, rpcRequestVote, &hraft.RequestVoteRequest{RPCHeader: header(id, addr), Term: 8, LastLogIndex: 43, LastLogTerm: 7}, nil),
		encodeRPC(t, rpcRequestPreVote, &hraft.RequestPreVoteRequest{RPCHeader: header(id, addr), Term: 8, LastLogIndex: 43, LastLogTerm: 7}, nil),
		encodeRPC(t, rpcInstallSnapshot, &hraft.InstallSnapshotRequest{RPCHeader: header(id, addr), SnapshotVersion: 1, Term: 8, LastLogIndex: 40, LastLogTerm: 7,
			Configuration: []byte("configuration"), ConfigurationIndex: 3, Size: int64(len(snap))}, snap),
		encodeRPC(t, rpcTimeoutNow, &hraft.TimeoutNowRequest{RPCHeader: header(id, addr)}, nil),
	}
}

var members = map[string]string{"10.0.0.1:7000": "r1", "10.0.0.2:7000": "r2", "10.0.0.3:7000": "r3"}

func newGuard(node string) *rpcGuard {
	return &rpcGuard{node: node, owner: func(a string) (string, bool) { id, ok := members[a]; return id, ok }}
}

// feedIn feeds b to g in pieces of n bytes, and says after how many bytes
// it failed (-1: it did not).
func feedIn(g *rpcGuard, b []byte, n int) (int, error) {
	for i := 0; i < len(b); i += n {
		if err := g.feed(b[i:min(i+n, len(b))]); err != nil {
			return min(i+n, len(b)), err
		}
	}
	return -1, nil
}

// Every request raft sends, claiming the link's node id and its own
// address, passes, in pieces of any size; and the guard ends each one
// where it ends (the next request is read from its type byte).
func TestRPCGuardTakesRaftsRequests(t *testing.T) {
	stream := bytes.Join(requests(t, "r1", "10.0.0.1:7000"), nil)
	stream = append(stream, bytes.Join(requests(t, "r1", "10.9.9.9:7000"), nil)...) // an address no member has (it moved)
	for _, n := range []int{1, 2, 3, 5, 8, 13, 100, 4096, len(stream)} {
		g := newGuard("r1")
		if at, err := feedIn(g, stream, n); err != nil {
			t.Fatalf("pieces of %d: refused after %d of %d bytes: %v", n, at, len(stream), err)
		}
		if g.st != gType || len(g.tok) != 0 {
			t.Errorf("pieces of %d: after the last request the guard is in state %d with %d bytes gathered; want at the next type byte", n, g.st, len(g.tok))
		}
	}
}

// A request that claims another node's id, no id, or another member's
// address is refused by the feed that holds its last byte, never
// before and never after: raft cannot have decoded it. The message
// names both ids.
func TestRPCGuardRefusesAnotherNodesClaims(t *testing.T) {
	good := bytes.Join(requests(t, "r1", "10.0.0.1:7000"), nil)
	for _, c := range []struct {
		name, id, addr, want string
	}{
		{"another id", "r2", "10.0.0.2:7000", `node "r1" (the id bound to its link at the handshake) sent a raft %s claiming node id "r2"`},
		{"another id from its own address", "r2", "10.0.0.1:7000", `claiming node id "r2"`},
		{"no id", "", "10.0.0.1:7000", `sent a raft %s that claims no node id`},
		{"another member's address", "r1", "10.0.0.2:7000", `sent a raft %s claiming raft address 10.0.0.2:7000, which is node "r2"'s`},
	} {
		for i, bad := range requests(t, c.id, c.addr) {
			name := rpcNames[bad[0]]
			stream := append(append([]byte{}, good...), bad...)
			for _, n := range []int{1, 7, len(stream)} {
				g := newGuard("r1")
				at, err := feedIn(g, stream, n)
				want := c.want
				if strings.Contains(want, "%s") {
					want = strings.Replace(want, "%s", name, 1)
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%s, request %d (%s), pieces of %d: %v; want refused: %s", c.name, i, name, n, err, want)
					continue
				}
				end := len(good) + len(bad)
				if bad[0] == rpcInstallSnapshot {
					end -= 1400 // the snapshot's bytes follow the request
				}
				if at < end || at-n >= end {
					t.Errorf("%s, %s, pieces of %d: refused by the feed ending at byte %d; want the one holding the request's last byte, %d", c.name, name, n, at, end)
				}
				if err2 := g.feed([]byte{0}); err2 == nil {
					t.Errorf("%s: a refused link took more bytes", c.name)
				}
			}
		}
	}
}

// Encodings raft never sends but its decoder takes, each of which would
// carry another node's id past a guard that only knew raft's own: all
// refused (the header as a map of its own raft would ignore: refused as
// nothing raft sends). Each logs the id raft's decoder reads from it.
func TestRPCGuardRefusesOtherEncodings(t *testing.T) {
	mh := &codec.MsgpackHandle{}
	enc := func(v any) []byte {
		var b bytes.Buffer
		if err := codec.NewEncoder(&b, mh).Encode(v); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	str := func(s string) []byte { return enc(s) }
	arrayOfBytes := func(s string) []byte { // a []byte as an array of uint8
		b := []byte{0x90 | byte(len(s))}
		for _, c := range []byte(s) {
			b = append(b, c) // positive fixints
		}
		return b
	}
	m := func(pairs ...[]byte) []byte {
		b := []byte{0x80 | byte(len(pairs)/2)}
		return append(b, bytes.Join(pairs, nil)...)
	}
	cases := []struct {
		name string
		body []byte
		want string
	}{
		{"the request as an array (struct to array)", append([]byte{0x95}, append(append(enc(uint64(3)), str("r2")...), append(str("10.0.0.2:7000"), enc(uint64(9))...)...)...), "not a msgpack map"},
		{"a key as an array of bytes", m(arrayOfBytes("ID"), str("r2"), str("Term"), enc(uint64(9))), "key that is not a string"},
		{"the id as an array of bytes", m(str("ID"), arrayOfBytes("r2"), str("Term"), enc(uint64(9))), "ID is not what raft sends"},
		{"the id twice", m(str("ID"), str("r1"), str("ID"), str("r2")), "key ID twice"},
		{"the header as a map", m(str("RPCHeader"), m(str("ID"), str("r2")), str("ID"), str("r1")), "RPCHeader as a map"},
	}
	for _, c := range cases {
		frame := append([]byte{rpcRequestVote}, c.body...)
		// What raft's decoder reads from it (handleCommand).
		var req hraft.RequestVoteRequest
		derr := codec.NewDecoder(bytes.NewReader(c.body), mh).Decode(&req)
		t.Logf("%s: raft decodes id %q (%v)", c.name, req.ID, derr)
		g := newGuard("r1")
		if _, err := feedIn(g, frame, 1); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want refused: %s", c.name, err, c.want)
		}
	}
}

// FuzzRPCGuard: no input panics the guard, and whatever it lets through
// whole decodes, as raft's NetworkTransport decodes it, into requests
// that claim the link's node id.
func FuzzRPCGuard(f *testing.F) {
	for _, r := range requests(f, "r1", "10.0.0.1:7000") {
		f.Add(r)
	}
	for _, r := range requests(f, "r2", "10.0.0.2:7000") {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g := newGuard("r1")
		if err := g.feed(b); err != nil {
			return
		}
		// Complete requests only: what raft could have dispatched.
		r := bufio.NewReader(bytes.NewReader(b))
		dec := codec.NewDecoder(r, &codec.MsgpackHandle{})
		for {
			typ, err := r.ReadByte()
			if err != nil {
				return
			}
			var hdr hraft.RPCHeader
			var snap int64
			switch typ {
			case rpcAppendEntries:
				var req hraft.AppendEntriesRequest
				err, hdr = dec.Decode(&req), req.RPCHeader
			case rpcRequestVote:
				var req hraft.RequestVoteRequest
				err, hdr = dec.Decode(&req), req.RPCHeader
			case rpcRequestPreVote:
				var req hraft.RequestPreVoteRequest
				err, hdr = dec.Decode(&req), req.RPCHeader
			case rpcInstallSnapshot:
				var req hraft.InstallSnapshotRequest
				err, hdr, snap = dec.Decode(&req), req.RPCHeader, req.Size
			case rpcTimeoutNow:
				var req hraft.TimeoutNowRequest
				err, hdr = dec.Decode(&req), req.RPCHeader
			default:
				return
			}
			if err != nil {
				return // incomplete (or raft would refuse it too)
			}
			if string(hdr.ID) != "r1" {
				t.Fatalf("the guard let through a %s claiming node id %q", rpcNames[typ], hdr.ID)
			}
			if id, ok := members[string(hdr.Addr)]; ok && id != "r1" {
				t.Fatalf("the guard let through a %s claiming %s's address", rpcNames[typ], id)
			}
			if snap > 0 {
				if _, err := io.CopyN(io.Discard, r, snap); err != nil {
					return
				}
			}
		}
	})
}
