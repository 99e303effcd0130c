package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
)

// The replication plugin's data plane. Ring Down (host → plugin) carries the
// broker's Replicate requests and the core's answers to the plugin's calls;
// ring Up carries the Replicate answers and the plugin's calls (Apply, Read,
// NodeInfo, SetRole, CommitOffsets, ApplyTopics). Status, ReplicateOffsets
// and ReplicateTopics stay on gRPC: they are control calls, rare and not on
// a message's path.

// useRing moves the Replicate stream and the plugin's calls to the core onto
// conn (plugin side, at Configure, before the host opens Connect).
func (s *replicationServer) useRing(conn *ring.Conn) {
	core := &replicaCoreClient{calls: newPending[*ferryv1.ReplicaCoreFrame]()}
	core.sendFrame = func(f *ferryv1.ReplicationFrame) error { return ringWrite(conn, KindReplicationFrame, f.Id, f) }
	s.ring = core
	// The ring's one reader is the Replicate loop: it starts each batch in
	// ring order, exactly as on the gRPC stream, and resolves the core's
	// answers inline as they come between batches.
	go func() {
		frames := 0
		recv := func() (*ferryv1.ReplicateRequest, error) {
			for {
				kind, id, p, err := conn.Read()
				if err != nil {
					core.calls.fail(fmt.Errorf("core data plane: %w", err))
					if errors.Is(err, ring.ErrClosed) {
						return nil, io.EOF
					}
					pluginLog().Error("data plane: host broke the ring protocol; stopping", "error", err)
					return nil, err
				}
				countFrame(conn, KindReplication, &frames)
				switch kind {
				case KindReplicaCoreFrame:
					f := &ferryv1.ReplicaCoreFrame{}
					if err := unmarshalFrame(p, f); err != nil {
						core.calls.fail(fmt.Errorf("core data plane: answer %d does not decode: %v", id, err))
						return nil, fmt.Errorf("%w: core answer %d: %v", ring.ErrCorrupt, id, err)
					}
					core.calls.resolve(id, f, nil)
				case KindReplicate:
					req := &ferryv1.ReplicateRequest{}
					if err := unmarshalFrame(p, req); err != nil {
						_ = ringWrite(conn, KindReplicate, id, &ferryv1.ReplicateResponse{Seq: id,
							Error: ErrorToProto(fmt.Errorf("%w: replicate request: %v", ErrInvalidArgument, err))})
						continue
					}
					req.Seq = id
					return req, nil
				default:
					err := fmt.Errorf("%w: record kind %d is not a replication call", ring.ErrCorrupt, kind)
					core.calls.fail(fmt.Errorf("core data plane: %w", err))
					pluginLog().Error("data plane: host broke the ring protocol; stopping", "error", err)
					return nil, err
				}
			}
		}
		send := func(r *ferryv1.ReplicateResponse) error {
			err := ringWrite(conn, KindReplicate, r.Seq, r)
			if err != nil {
				pluginLog().Error("data plane: answer lost", "kind", KindReplicate, "id", r.Seq, "error", err)
			}
			return err
		}
		_ = serveOrdered(context.Background(), recv, send, s.startReplicate)
	}()
}

// startRing moves Replicate and the plugin's calls to conn (host side) and
// starts the one reader of the plugin's ring.
func (c *ReplicationClient) startRing(conn *ring.Conn) {
	c.reps.once.Do(func() {
		c.reps.send = func(r *ferryv1.ReplicateRequest) error { return c.dp.write(KindReplicate, r.Seq, r) }
		c.reps.close = func() error { return nil }
	})
	c.calls = make(chan *ferryv1.ReplicationFrame, 64)
	go c.ringAnswers(conn)
}

// ringAnswers reads the plugin's ring: Replicate answers resolve their calls;
// the plugin's calls to the core go, in ring order, to the Serve loop. When
// the ring ends every waiting Replicate fails with ErrUnavailable, as when
// the gRPC stream breaks, and Serve returns.
func (c *ReplicationClient) ringAnswers(conn *ring.Conn) {
	defer close(c.calls)
	err := func() error {
		for {
			kind, id, p, err := conn.Read()
			if err != nil {
				return err
			}
			switch kind {
			case KindReplicate:
				r := &ferryv1.ReplicateResponse{}
				if err := unmarshalFrame(p, r); err != nil {
					return fmt.Errorf("%w: replicate answer %d: %v", ring.ErrCorrupt, id, err)
				}
				r.Seq = id
				c.reps.calls.resolve(id, r, nil)
			case KindReplicationFrame:
				f := &ferryv1.ReplicationFrame{}
				if err := unmarshalFrame(p, f); err != nil {
					// A sound record whose payload does not decode: the
					// plugin's own call fails, the plugin is not killed.
					_ = c.dp.write(KindReplicaCoreFrame, id, &ferryv1.ReplicaCoreFrame{Id: id,
						Error: ErrorToProto(fmt.Errorf("%w: replication call does not decode: %v", ErrInvalidArgument, err))})
					continue
				}
				f.Id = id
				select {
				case c.calls <- f:
				case <-c.ctx.Done():
					return ring.ErrClosed
				}
			default:
				return fmt.Errorf("%w: record kind %d is not a replication answer or call", ring.ErrCorrupt, kind)
			}
		}
	}()
	c.dp.fault(err)
	c.reps.calls.fail(errRing(err))
}

// serveRing is Serve on the data plane: the plugin's calls arrive from the
// ring's reader; the Connect stream only tells when the plugin's side ended.
func (c *ReplicationClient) serveRing(parent context.Context, core ReplicaCore, stream ferryv1.Replication_ConnectClient) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	streamErr := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				streamErr <- err
				cancel()
				return
			}
		}
	}()
	reqs := newReplicaRequests(ctx, core, func(out *ferryv1.ReplicaCoreFrame) { _ = c.dp.write(KindReplicaCoreFrame, out.Id, out) })
	defer reqs.wait()
	for {
		select {
		case f, ok := <-c.calls:
			if !ok {
				if parent.Err() != nil {
					return nil
				}
				return fmt.Errorf("%w: replication data plane ended", ErrUnavailable)
			}
			reqs.handle(f)
		case <-ctx.Done():
			select {
			case err := <-streamErr:
				if !errors.Is(err, io.EOF) && parent.Err() == nil {
					return fmt.Errorf("%w: replication stream: %v", ErrUnavailable, err)
				}
			default:
			}
			return nil
		}
	}
}

// replicaRequests runs a replication plugin's calls against the core and
// sends each answer with send: Apply is started in the order received (which
// keeps the order of the log) and finished on its own goroutine; the other
// calls run on goroutines of their own. The gRPC stream and the ring data
// plane share it.
type replicaRequests struct {
	ctx  context.Context
	core ReplicaCore
	send func(*ferryv1.ReplicaCoreFrame)
	wg   sync.WaitGroup
}

func newReplicaRequests(ctx context.Context, core ReplicaCore, send func(*ferryv1.ReplicaCoreFrame)) *replicaRequests {
	return &replicaRequests{ctx: ctx, core: core, send: send}
}

// handle starts f; called from the one goroutine that receives the calls.
func (r *replicaRequests) handle(f *ferryv1.ReplicationFrame) {
	rctx, rcancel := context.WithCancel(r.ctx)
	if f.TimeoutNanos > 0 {
		rcancel()
		rctx, rcancel = context.WithTimeout(r.ctx, time.Duration(f.TimeoutNanos))
	}
	if a := f.GetApply(); a != nil {
		// Started here, in the order received.
		actx := rctx
		if a.LogDurable {
			actx = WithLogDurable(rctx)
		}
		wait, err := r.core.Apply(actx, a.Messages)
		if err != nil {
			rcancel()
			r.send(&ferryv1.ReplicaCoreFrame{Id: f.Id, Error: ErrorToProto(err)})
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer rcancel()
			offs, err := wait(rctx)
			out := &ferryv1.ReplicaCoreFrame{Id: f.Id, Error: ErrorToProto(err)}
			if err == nil {
				out.Response = &ferryv1.ReplicaCoreFrame_Apply{Apply: &ferryv1.ApplyResponse{Offsets: offs}}
			}
			r.send(out)
		}()
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer rcancel()
		r.send(handleReplicationFrame(rctx, r.core, f))
	}()
}

// wait waits for every call started to be answered.
func (r *replicaRequests) wait() { r.wg.Wait() }
