package sdk

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/internal/gopool"
)

// serveStorageRing serves the Storage calls that arrive on conn (plugin
// side) until the connection ends. Appends are started in ring order, which
// fixes their offsets, exactly as on the gRPC Append stream; everything else
// runs on its own goroutine.
func serveStorageRing(s *storageServer, conn *ring.Conn) {
	var finishing sync.WaitGroup
	defer finishing.Wait()
	reply := func(kind uint16, id uint64, m proto.Message) {
		if err := ringWrite(conn, kind, id, m); err != nil {
			pluginLog().Error("data plane: answer lost", "kind", kind, "id", id, "error", err)
		}
	}
	fail := func(id uint64, err error) { reply(KindError, id, ErrorToProto(err)) }
	frames := 0
	var scratch []WireAppend // reused by the appends' wire forms (ringAppend)
	for {
		kind, id, p, err := conn.Read()
		if err != nil {
			if err != ring.ErrClosed {
				pluginLog().Error("data plane: host broke the ring protocol; stopping", "error", err)
			}
			return
		}
		countFrame(conn, KindStorage, &frames)
		switch kind {
		case KindAppend:
			req, wires, err := ringAppend(s.impl, p, scratch[:0])
			if err != nil {
				reply(KindAppend, id, &ferryv1.AppendResponse{Seq: id, Error: ErrorToProto(err)})
				continue
			}
			req.Seq = id
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if t := req.TimeoutNanos; t > 0 {
				ctx, cancel = context.WithTimeout(ctx, time.Duration(t))
			}
			finish := s.startAppendOf(ctx, req, wires, func(r *ferryv1.AppendResponse) error {
				return ringWrite(conn, KindAppend, r.Seq, r)
			})
			if cap(wires) > 0 && cap(wires) <= maxScratchWires {
				// AppendWire is done with them: the next frame's go here
				// (cleared, so as not to keep this frame's bytes).
				clear(wires)
				scratch = wires
			}
			finishing.Add(1)
			gopool.Go(func() { // a parked goroutine: its stack is grown already
				defer finishing.Done()
				defer cancel()
				reply(KindAppend, id, finish())
			})
		case KindRead:
			req := &ferryv1.ReadRequest{}
			if err := unmarshalFrame(p, req); err != nil {
				reply(KindRead, id, &ferryv1.ReadResponse{Id: id, Error: ErrorToProto(fmt.Errorf("%w: read request: %v", ErrInvalidArgument, err))})
				continue
			}
			finishing.Add(1)
			gopool.Go(func() { // a parked goroutine: its stack is grown already
				defer finishing.Done()
				// While tracing, a retry topic's read is decoded: which of
				// its messages are due (and traced) is in their headers.
				if wr, ok := s.impl.(WireReader); ok && !(telemetry.Enabled() && strings.HasPrefix(req.Topic, retryPrefix)) {
					start := time.Now()
					resp, msgs, err := wr.ReadWire(context.Background(), req)
					if err == nil && telemetry.Enabled() {
						err = traceWireRead(context.Background(), req, resp, msgs, start)
					}
					if err != nil {
						reply(KindRead, id, &ferryv1.ReadResponse{Id: id, Error: ErrorToProto(err)})
						return
					}
					resp.Id = id
					if err := writeWireRead(conn, id, wireRead{resp, msgs}); err != nil {
						pluginLog().Error("data plane: answer lost", "kind", KindRead, "id", id, "error", err)
					}
					return
				}
				resp := s.read(context.Background(), req)
				resp.Id = id
				reply(KindRead, id, resp)
			})
		case KindCommitOffsets:
			req := &ferryv1.CommitOffsetsRequest{}
			if err := unmarshalFrame(p, req); err != nil {
				fail(id, fmt.Errorf("%w: commit request: %v", ErrInvalidArgument, err))
				continue
			}
			finishing.Add(1)
			gopool.Go(func() { // a parked goroutine: its stack is grown already
				defer finishing.Done()
				if err := s.impl.CommitOffsets(context.Background(), req.Group, req.Offsets); err != nil {
					fail(id, err)
					return
				}
				reply(KindCommitOffsets, id, &ferryv1.CommitOffsetsResponse{})
			})
		case KindGetOffsets:
			req := &ferryv1.GetOffsetsRequest{}
			if err := unmarshalFrame(p, req); err != nil {
				fail(id, fmt.Errorf("%w: offsets request: %v", ErrInvalidArgument, err))
				continue
			}
			finishing.Add(1)
			gopool.Go(func() { // a parked goroutine: its stack is grown already
				defer finishing.Done()
				offs, err := s.impl.GetOffsets(context.Background(), req.Group, req.Queues)
				if err != nil {
					fail(id, err)
					return
				}
				reply(KindGetOffsets, id, &ferryv1.GetOffsetsResponse{Offsets: offs})
			})
		default:
			fail(id, fmt.Errorf("%w: record kind %d is not a storage call", ErrInvalidArgument, kind))
		}
	}
}

// maxScratchWires bounds the slice of wire forms the store's side keeps
// for the next append frame: a batch of the broker's largest.
const maxScratchWires = 4096

// ringAppend decodes an append frame: its messages kept in their wire form
// (wires) for a store that takes them so (WireAppender) while this process
// does not trace, decoded otherwise (wires nil).
//
// scratch is a slice the wire forms may be appended to (reused).
func ringAppend(impl Storage, p []byte, scratch []WireAppend) (*ferryv1.AppendRequest, []WireAppend, error) {
	if _, ok := impl.(WireAppender); ok && !telemetry.Enabled() {
		req, wires, ok, err := splitAppendInto(p, scratch)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			if wires == nil {
				wires = []WireAppend{}
			}
			wireAppendsTaken.Add(1)
			return req, wires, nil
		}
	}
	req := &ferryv1.AppendRequest{}
	if err := unmarshalFrame(p, req); err != nil {
		return nil, nil, fmt.Errorf("%w: append request: %v", ErrInvalidArgument, err)
	}
	return req, nil, nil
}

// ringReply is an answer to a unary call on the data plane: its kind and
// its payload.
type ringReply struct {
	kind    uint16
	payload []byte
}

// startRing moves the client's calls to conn (host side) and starts the
// goroutine that matches answers to calls.
func (c *StorageClient) startRing(conn *ring.Conn) {
	c.unary = newPending[ringReply]()
	c.appends.once.Do(func() {
		c.appends.send = func(r *ferryv1.AppendRequest) error {
			wires := c.sendWires
			c.sendWires = nil
			var err error
			if wires != nil {
				if err = c.dp.writeAppend(appendFrame{req: r, wires: wires}); err == nil {
					wireAppendsSent.Add(1)
				}
			} else {
				err = c.dp.write(KindAppend, r.Seq, r)
			}
			if err != nil {
				return err
			}
			// The store answers an append (its write, or an early
			// "written") within tens of microseconds: wait for it
			// awake, unless its answers come later than that (a store
			// that fsyncs first; a loaded machine).
			c.appendPace.sent(r.Seq)
			if c.appendPace.worthSpinning(appendExpect) {
				conn.Expect(appendExpect)
			}
			return nil
		}
		c.appends.close = func() error { return nil }
	})
	c.reads.once.Do(func() {
		c.reads.send = func(r *ferryv1.ReadRequest) error {
			if err := c.dp.write(KindRead, r.Id, r); err != nil {
				return err
			}
			conn.Expect(appendExpect) // a read is answered as fast
			return nil
		}
		c.reads.close = func() error { return nil }
	})
	go c.ringAnswers(conn)
}

// ringAnswers is the one reader of the plugin's ring. When the ring ends
// (closed, or broken by the plugin) every waiting call fails with
// ErrUnavailable, as when a gRPC stream breaks.
func (c *StorageClient) ringAnswers(conn *ring.Conn) {
	err := func() error {
		for {
			kind, id, p, err := conn.Read()
			if err != nil {
				return err
			}
			switch kind {
			case KindAppend:
				r := &ferryv1.AppendResponse{}
				if err := unmarshalFrame(p, r); err != nil {
					return fmt.Errorf("%w: append answer %d: %v", ring.ErrCorrupt, id, err)
				}
				r.Seq = id
				c.appendPace.answered(id)
				if seq := c.answerSeq(r); seq != 0 {
					tok := conn.Expecting()
					c.appends.calls.resolve(seq, r, nil)
					c.settle(conn, tok)
				}
			case KindRead:
				r := &ferryv1.ReadResponse{}
				if err := splitRead(p, r); err != nil { // the messages are decoded by Read
					return fmt.Errorf("%w: read answer %d: %v", ring.ErrCorrupt, id, err)
				}
				r.Id = id
				tok := conn.Expecting()
				c.reads.calls.resolve(id, r, nil)
				c.settle(conn, tok)
			case KindCommitOffsets, KindGetOffsets, KindError:
				c.unary.resolve(id, ringReply{kind: kind, payload: p}, nil)
			default:
				return fmt.Errorf("%w: record kind %d is not a storage answer", ring.ErrCorrupt, kind)
			}
		}
	}()
	c.dp.fault(err)
	ferr := errRing(err)
	c.appends.calls.fail(ferr)
	c.reads.calls.fail(ferr)
	c.unary.fail(ferr)
}

// settle ends the reader's spin for answers (Expect) once no append or
// read waits for one: the spin is for an answer on its way, and spinning on
// after it came only takes a processor from the node's other processes.
// tok is what conn.Expecting said before the answer was handed over.
func (c *StorageClient) settle(conn *ring.Conn, tok int64) {
	if c.appends.calls.idle() && c.reads.calls.idle() {
		conn.Settle(tok)
	}
}

// ringCall makes a unary call on the data plane and decodes its answer into
// out, which must be of kind want.
func (c *StorageClient) ringCall(ctx context.Context, kind uint16, req proto.Message, out proto.Message) error {
	id, ch, err := c.unary.add()
	if err != nil {
		return err
	}
	if err := c.dp.write(kind, id, req); err != nil {
		c.unary.drop(id)
		return errRing(err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if r.v.kind == KindError {
			e := &ferryv1.Error{}
			if err := unmarshalFrame(r.v.payload, e); err != nil {
				return fmt.Errorf("%w: storage plugin answered an undecodable error", ErrUnavailable)
			}
			return ErrorFromProto(e)
		}
		if r.v.kind != kind {
			return fmt.Errorf("%w: storage plugin answered kind %d to a call of kind %d", ErrUnavailable, r.v.kind, kind)
		}
		if err := unmarshalFrame(r.v.payload, out); err != nil {
			return fmt.Errorf("%w: storage plugin's answer: %v", ErrUnavailable, err)
		}
		return nil
	case <-ctx.Done():
		c.unary.drop(id)
		return ctx.Err()
	}
}
