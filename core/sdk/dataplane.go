package sdk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
)

// The shared-memory data plane (package ring, docs/ring-protocol.md).
//
// The host creates a segment for each storage, transport and replication plugin process
// it starts, hands it to the process as the file descriptor named by
// EnvRingFD, and offers DataPlaneRing in ConfigureRequest.data_plane. A
// plugin served by this SDK maps the segment, answers with the same string
// and from then on gets the calls below on the ring; a plugin that does not
// (another language, an older SDK) ignores both and is served over gRPC.
const (
	DataPlaneRing = "ring/1"
	// EnvRingFD names the environment variable holding the inherited file
	// descriptors of the ring segment: the shared memory, then the bells
	// (eventfds) of ring Down and ring Up, comma-separated ("3,4,5").
	EnvRingFD = "FERRY_RING_FD"
)

// Record kinds of the data plane. A record's payload is the protobuf
// encoding of the message named; its id is the call it belongs to.
const (
	// Storage: requests down (host → plugin), answers up.
	KindAppend        uint16 = 1  // AppendRequest / AppendResponse; id = seq
	KindRead          uint16 = 2  // ReadRequest / ReadResponse; id = ReadRequest.id
	KindCommitOffsets uint16 = 3  // CommitOffsetsRequest / CommitOffsetsResponse
	KindGetOffsets    uint16 = 4  // GetOffsetsRequest / GetOffsetsResponse
	KindError         uint16 = 15 // Error, up: the unary call with this id failed
	// Transport: the plugin's requests to the core go up, answers down.
	KindTransportFrame uint16 = 16 // TransportFrame, up; id = TransportFrame.id
	KindCoreFrame      uint16 = 17 // CoreFrame, down; id = CoreFrame.id
	// Replication: the broker's Replicate down, its answer up; the plugin's
	// calls to the core up, their answers down.
	KindReplicate        uint16 = 32 // ReplicateRequest / ReplicateResponse; id = seq
	KindReplicationFrame uint16 = 33 // ReplicationFrame, up; id = ReplicationFrame.id
	KindReplicaCoreFrame uint16 = 34 // ReplicaCoreFrame, down; id = ReplicaCoreFrame.id
)

// RingUser is implemented by host-side plugin clients that can move their
// hot calls to a ring data plane: the plugin host hands them the segment it
// gave the plugin process before it calls Configure, which offers it.
type RingUser interface {
	// UseRing gives the client seg (the client owns it from now on and
	// releases it when closed or when the plugin declines). broken is
	// called once if the plugin breaks the ring protocol; the host then
	// replaces the process.
	UseRing(seg *ring.Segment, broken func(error))
}

// ringHost is the host side of one plugin's data plane, embedded in the
// StorageClient and TransportClient.
type ringHost struct {
	seg    *ring.Segment
	broken func(error)
	conn   *ring.Conn // set once the plugin took the offer
	once   sync.Once
}

func (h *ringHost) UseRing(seg *ring.Segment, broken func(error)) {
	h.seg, h.broken = seg, broken
}

// offer is the data plane to offer at Configure.
func (h *ringHost) offer() string {
	if h.seg == nil {
		return ""
	}
	return DataPlaneRing
}

// accepted starts the data plane if the plugin took the offer, and releases
// the segment otherwise. It returns the connection, or nil for gRPC.
func (h *ringHost) accepted(answer string) (*ring.Conn, error) {
	if h.seg == nil {
		return nil, nil
	}
	if answer != DataPlaneRing {
		_ = h.seg.Close()
		h.seg = nil
		return nil, nil
	}
	o := ringOptions()
	conn, err := ring.NewConn(h.seg, ring.Host, o)
	if err != nil {
		// The plugin took the offer and will wait on rings this side
		// cannot serve: fail its calls rather than fall back silently.
		_ = h.seg.Close()
		h.seg = nil
		return nil, err
	}
	h.conn = conn
	h.conn.Watch(cmp.Or(o.Stall, ring.DefaultStall), func() {
		h.fault(fmt.Errorf("%w: the plugin left its ring unread for %v", ring.ErrStalled, cmp.Or(o.Stall, ring.DefaultStall)))
	})
	return h.conn, nil
}

// release ends the data plane: every blocked Read and Write returns, and the
// mapping goes once nothing touches it.
func (h *ringHost) release() {
	h.once.Do(func() {
		switch {
		case h.conn != nil:
			h.conn.Close()
			go func() { _ = h.conn.Release() }()
		case h.seg != nil:
			_ = h.seg.Close()
		}
	})
}

// write sends m on the data plane; a write the plugin made fail (it stopped
// reading, or moved its ring's head where it cannot be) is reported as a
// fault.
func (h *ringHost) write(kind uint16, id uint64, m proto.Message) error {
	err := ringWrite(h.conn, kind, id, m)
	if err != nil && (errors.Is(err, ring.ErrStalled) || errors.Is(err, ring.ErrCorrupt)) {
		h.fault(err)
	}
	return err
}

// writeAppend is write of an append whose messages are in their wire form
// (writeAppendFrame).
func (h *ringHost) writeAppend(f appendFrame) error {
	err := writeAppendFrame(h.conn, f)
	if err != nil && (errors.Is(err, ring.ErrStalled) || errors.Is(err, ring.ErrCorrupt)) {
		h.fault(err)
	}
	return err
}

// writeFetch is write of a fetch answer (writeFetchFrame).
func (h *ringHost) writeFetch(kind uint16, f *fetchFrame) error {
	err := writeFetchFrame(h.conn, kind, f)
	if err != nil && (errors.Is(err, ring.ErrStalled) || errors.Is(err, ring.ErrCorrupt)) {
		h.fault(err)
	}
	return err
}

// fault reports a broken ring: the plugin wrote what the protocol forbids,
// or stopped reading.
func (h *ringHost) fault(err error) {
	if errors.Is(err, ring.ErrClosed) || h.broken == nil {
		return
	}
	h.broken(err)
}

// configure runs the Plugin service's Configure with the data plane offer.
func (h *ringHost) configure(ctx context.Context, pc pluginClient, config []byte, env *Environment) (*ring.Conn, error) {
	resp, err := pc.rpc.Configure(ctx, &ferryv1.ConfigureRequest{ConfigJson: config, Env: env, DataPlane: h.offer()})
	if err != nil {
		h.release()
		return nil, err
	}
	conn, err := h.accepted(resp.GetDataPlane())
	if err != nil {
		return nil, fmt.Errorf("%w: data plane: %v", ErrUnavailable, err)
	}
	return conn, nil
}

// configureAndStart is configure, then start with the connection when the
// plugin took the rings (start may be nil).
func (h *ringHost) configureAndStart(ctx context.Context, pc pluginClient, config []byte, env *Environment, start func(*ring.Conn)) error {
	conn, err := h.configure(ctx, pc, config, env)
	if err != nil {
		return err
	}
	if conn != nil && start != nil {
		start(conn)
	}
	return nil
}

// dataPlane names the data plane the client's hot calls use: DataPlaneRing
// or "grpc".
func (h *ringHost) dataPlane() string {
	if h.conn != nil {
		return DataPlaneRing
	}
	return "grpc"
}

// ringWrite writes m as one frame: encoded in the ring itself when it fits
// one record (no copy), else into a pooled buffer that is copied in.
func ringWrite(c *ring.Conn, kind uint16, id uint64, m proto.Message) error {
	if vt, ok := m.(vtMessage); ok {
		if size := vt.SizeVT(); size <= c.MaxInPlace() {
			return c.WriteFunc(kind, id, size, func(b []byte) error {
				if n, err := vt.MarshalToSizedBufferVT(b); err != nil || n != len(b) {
					return fmt.Errorf("%w: encode ring frame: %d of %d bytes: %v", ErrInvalidArgument, n, len(b), err)
				}
				return nil
			})
		}
	}
	b, buf, err := encodeFrame(m)
	if buf != nil {
		defer sharedBufferPool.Put(buf)
	}
	if err != nil {
		return err
	}
	return c.Write(kind, id, b)
}

// vtMessage is what vtprotobuf generates for every message of core/proto
// (its *_vtproto.pb.go): reflection-free size, encoding and decoding, 3 to 4
// times faster than protobuf-go's on Ferry's frames (BenchmarkFrameCodec).
type vtMessage interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVTUnsafe([]byte) error
}

// encodeFrame encodes m into a buffer of the shared pool (returned, for the
// caller to put back once the bytes are used).
func encodeFrame(m proto.Message) ([]byte, *[]byte, error) {
	if vt, ok := m.(vtMessage); ok {
		size := vt.SizeVT()
		buf := sharedBufferPool.Get(size)
		b := (*buf)[:size]
		if _, err := vt.MarshalToSizedBufferVT(b); err != nil {
			return nil, buf, fmt.Errorf("%w: encode ring frame: %v", ErrInvalidArgument, err)
		}
		return b, buf, nil
	}
	size := proto.Size(m)
	buf := sharedBufferPool.Get(size)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		return nil, buf, fmt.Errorf("%w: encode ring frame: %v", ErrInvalidArgument, err)
	}
	return b, buf, nil
}

// unmarshalFrame decodes a data plane frame into m, its bytes and string
// fields (message bodies, ids, keys) aliasing b instead of copying it: a
// frame is memory of its own, copied out of the ring (ring.Reader.Read), and
// never reused or changed. Strings are checked for valid UTF-8, as
// protobuf-go's decoder would (vtprotobuf's does not).
func unmarshalFrame(b []byte, m proto.Message) error {
	if vt, ok := m.(vtMessage); ok {
		if err := vt.UnmarshalVTUnsafe(b); err != nil {
			return err
		}
		return ownFrameStrings(m)
	}
	return proto.Unmarshal(b, m)
}

// errRing is how a call learns that the data plane it waits on is gone.
func errRing(err error) error {
	return fmt.Errorf("%w: plugin data plane: %v", ErrUnavailable, err)
}

// pluginRing opens, on the plugin side, the segment the host handed over:
// fds, or those EnvRingFD names. It is called once, at Configure.
func pluginRing(fds []int) (*ring.Conn, error) {
	if fds == nil {
		v := os.Getenv(EnvRingFD)
		if v == "" {
			return nil, fmt.Errorf("the host offered the ring data plane but %s is not set", EnvRingFD)
		}
		for _, f := range strings.Split(v, ",") {
			fd, err := strconv.Atoi(f)
			if err != nil || fd < 3 {
				return nil, fmt.Errorf("%s=%q: not a list of file descriptors", EnvRingFD, v)
			}
			fds = append(fds, fd)
		}
	}
	seg, err := ring.Open(fds)
	if err != nil {
		return nil, err
	}
	conn, err := ring.NewConn(seg, ring.Plugin, ringOptions())
	if err != nil {
		_ = seg.Close()
		return nil, err
	}
	return conn, nil
}

// EnvRingSpin, when set to a duration, replaces the rings' longest spin
// before a reader sleeps (ring.Options.Spin; "-1ns" never spins). For
// measuring; the default is ring.DefaultSpin.
const EnvRingSpin = "FERRY_RING_SPIN"

// EnvRingPoke, when set to a duration, replaces how long a reader woken
// ahead of a record (ring.Conn.Poke) spins for it (ring.Options.PokeSpin;
// "-1ns": not at all, and the host does not poke its storage plugin). For
// measuring; the default is ring.DefaultPokeSpin.
const EnvRingPoke = "FERRY_RING_POKE"

// pokeOff: EnvRingPoke turned the poke off (StorageClient.Poke).
var pokeOff = ringOptions().PokeSpin < 0

// EnvRingStall, when set to a duration, replaces how long a write waits for
// room before the peer counts as stopped (ring.Options.Stall); for tests.
const EnvRingStall = "FERRY_RING_STALL"

// EnvRingExpect, when set to a duration, replaces how long the host's
// reader of a storage plugin's ring spins for an append's answer
// (ring.Conn.Expect) instead of sleeping; "0s" turns it off. For measuring;
// the default is appendExpect.
const EnvRingExpect = "FERRY_RING_EXPECT"

// EnvRingProduceExpect, when set to a duration, replaces how long a
// transport plugin's reader of the core's ring spins for a produce's answer
// (ring.Conn.Expect) instead of sleeping; "0s" turns it off. For measuring;
// the default is produceExpect.
const EnvRingProduceExpect = "FERRY_RING_PRODUCE_EXPECT"

// produceExpect is how long a transport plugin spins for a produce's answer.
var produceExpect = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(EnvRingProduceExpect)); err == nil {
		return d
	}
	return 0
}()

// appendExpect is how long the host spins for a storage append's answer.
var appendExpect = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(EnvRingExpect)); err == nil {
		return d
	}
	return 100 * time.Microsecond
}()

func ringOptions() ring.Options {
	var o ring.Options
	if d, err := time.ParseDuration(os.Getenv(EnvRingSpin)); err == nil {
		o.Spin = d
	}
	if d, err := time.ParseDuration(os.Getenv(EnvRingStall)); err == nil {
		o.Stall = d
	}
	if d, err := time.ParseDuration(os.Getenv(EnvRingPoke)); err == nil {
		o.PokeSpin = d
	}
	return o
}

// ringFault, set only in fault-injection builds (faults_on.go), is called
// by a plugin's data plane reader after each frame it read, with the
// plugin's kind and the number of frames so far.
var ringFault func(conn *ring.Conn, kind string, frames int)

// countFrame counts a frame read by a plugin's data plane reader.
func countFrame(conn *ring.Conn, kind string, n *int) {
	*n++
	if ringFault != nil {
		ringFault(conn, kind, *n)
	}
}

// pluginLogger is the plugin process's logger, for the data plane's
// messages: the latest NewServeConfig's (a test process serves several
// plugins at once, one goroutine each).
var pluginLogger atomic.Pointer[hclog.Logger]

// pluginLog returns pluginLogger's logger (a null one before any).
func pluginLog() hclog.Logger {
	if l := pluginLogger.Load(); l != nil {
		return *l
	}
	return hclog.NewNullLogger()
}
