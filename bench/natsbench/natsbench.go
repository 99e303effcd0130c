// Package natsbench runs core/bench workloads against NATS JetStream: an
// embedded nats-server with JetStream (one replica, file storage) and a
// bench.System that speaks to it with nats.go, so that the harness can put
// the same workloads side by side on Ferry and on JetStream.
//
// The mapping of a workload: a topic is the subject "bench.<topic>" of one
// stream; a sync send is js.Publish (waits for the PubAck); an async send is
// js.PublishAsync with the workload's window as its max pending; a consumer
// group is a durable pull consumer with explicit acks, read with Messages
// (pull) or Consume (push), each message acked with Ack.
package natsbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrymq/ferry/core/bench"
)

// StreamName is the one stream of the benchmark; it holds "bench.>".
const StreamName = "BENCH"

// Server is an embedded nats-server with JetStream on a free loopback port.
type Server struct {
	srv *server.Server
	dir string
	tmp bool
}

// ServerOptions configure StartServer.
type ServerOptions struct {
	// SyncAlways fsyncs every write before the ack (sync_interval:
	// always). Default: JetStream's default, an fsync every 2 minutes.
	SyncAlways bool
	// StoreDir holds the file store; "" means a temporary directory,
	// removed by Close.
	StoreDir string
}

// StartServer starts a JetStream server and waits until it takes clients.
func StartServer(o ServerOptions) (*Server, error) {
	s := &Server{dir: o.StoreDir}
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "natsbench-")
		if err != nil {
			return nil, err
		}
		s.dir, s.tmp = dir, true
	}
	opts := &server.Options{
		ServerName: "natsbench",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   s.dir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	if o.SyncAlways {
		opts.SyncAlways = true
		opts.SyncInterval = 2 * time.Minute // what "sync_interval: always" sets next to it
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		s.cleanup()
		return nil, fmt.Errorf("natsbench: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		s.cleanup()
		return nil, errors.New("natsbench: server not ready after 30s")
	}
	s.srv = srv
	return s, nil
}

// URL is where clients connect.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Close shuts the server down and removes a temporary store.
func (s *Server) Close() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.cleanup()
}

func (s *Server) cleanup() {
	if s.tmp {
		_ = os.RemoveAll(s.dir)
	}
}

// System runs workloads on a JetStream server through one connection.
type System struct {
	label string
	nc    *nats.Conn
	js    jetstream.JetStream
	st    jetstream.Stream
}

var _ bench.System = (*System)(nil)

// Connect connects to url and creates (or updates) the benchmark's stream:
// file storage, one replica.
func Connect(ctx context.Context, label, url string) (*System, error) {
	nc, err := nats.Connect(url, nats.Name("natsbench"))
	if err != nil {
		return nil, fmt.Errorf("natsbench: connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: StreamName, Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("natsbench: create stream: %w", err)
	}
	return &System{label: label, nc: nc, js: js, st: st}, nil
}

// Close closes the connection.
func (s *System) Close() { s.nc.Close() }

// Name is the label given to Connect.
func (s *System) Name() string { return s.label }

func subject(topic string) string { return "bench." + topic }

// statusOf names a publish error the way Ferry's statuses do where they
// match.
func statusOf(err error) string {
	switch {
	case err == nil:
		return bench.StatusOK
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return "DEADLINE_EXCEEDED"
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrNoStreamResponse):
		return "UNAVAILABLE"
	case errors.Is(err, context.Canceled):
		return "CANCELED"
	}
	return "ERROR"
}

// Run runs w; see bench.System.
func (s *System) Run(ctx context.Context, w bench.Workload, rec *bench.Recorder) (*bench.Result, error) {
	w = w.WithDefaults()
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("natsbench: %w", err)
	}
	switch w.Kind {
	case bench.Produce:
		if w.Mode == bench.Oneway {
			return nil, errors.New("natsbench: JetStream has no oneway publish to compare")
		}
		body := bench.Body(w.Size)
		rec.SetPhase("run")
		start := time.Now()
		s.send(ctx, w, rec, start, func() []byte { return body })
		return rec.Result(s.Name(), w, time.Since(start)), nil
	case bench.Consume:
		return s.consume(ctx, w, rec)
	default:
		return s.endToEnd(ctx, w, rec)
	}
}

// send runs w's producers until its budget is spent: Count messages in all,
// or Duration.
func (s *System) send(ctx context.Context, w bench.Workload, rec *bench.Recorder, start time.Time, body func() []byte) {
	var left atomic.Int64
	left.Store(w.Count)
	deadline := start.Add(w.Duration)
	take := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if w.Duration > 0 {
			return time.Now().Before(deadline)
		}
		return left.Add(-1) >= 0
	}
	subj := subject(w.Topic)
	var wg sync.WaitGroup
	for range w.Producers {
		wg.Go(func() {
			switch w.Mode {
			case bench.Sync:
				for take() {
					t0 := time.Now()
					_, err := s.js.Publish(ctx, subj, body())
					rec.Record(statusOf(err), w.Size, time.Since(t0))
				}
			case bench.Async:
				s.sendAsync(ctx, w, rec, subj, take, body)
			}
		})
	}
	wg.Wait()
}

// sendAsync publishes with a window of w.Inflight unacked messages; a
// collector waits for the acks in order and records each one's latency.
func (s *System) sendAsync(ctx context.Context, w bench.Workload, rec *bench.Recorder, subj string, take func() bool, body func() []byte) {
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncMaxPending(w.Inflight))
	if err != nil {
		rec.Record(statusOf(err), w.Size, 0)
		return
	}
	type pending struct {
		f  jetstream.PubAckFuture
		t0 time.Time
	}
	futures := make(chan pending, w.Inflight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range futures {
			select {
			case <-p.f.Ok():
				rec.Record(bench.StatusOK, w.Size, time.Since(p.t0))
			case err := <-p.f.Err():
				rec.Record(statusOf(err), w.Size, 0)
			}
		}
	}()
	for take() {
		t0 := time.Now()
		f, err := js.PublishAsync(subj, body(), jetstream.WithStallWait(30*time.Second))
		if err != nil {
			rec.Record(statusOf(err), w.Size, 0)
			continue
		}
		futures <- pending{f, t0}
	}
	close(futures)
	<-done
}

// stored is how many messages of topic the stream holds.
func (s *System) stored(ctx context.Context, topic string) (uint64, error) {
	info, err := s.st.Info(ctx, jetstream.WithSubjectFilter(subject(topic)))
	if err != nil {
		return 0, fmt.Errorf("natsbench: stream info: %w", err)
	}
	return info.State.Subjects[subject(topic)], nil
}

// preload publishes, untimed, what topic lacks to hold want messages.
func (s *System) preload(ctx context.Context, w bench.Workload, rec *bench.Recorder, want int64) error {
	have, err := s.stored(ctx, w.Topic)
	if err != nil {
		return err
	}
	if int64(have) >= want {
		return nil
	}
	if !w.Preload {
		return fmt.Errorf("natsbench: %s holds %d messages, fewer than the %d to consume (preload them)", subject(w.Topic), have, want)
	}
	rec.SetPhase("preload")
	pre := bench.NewRecorder()
	pw := w
	pw.Kind, pw.Mode, pw.Producers, pw.Inflight, pw.Count, pw.Duration = bench.Produce, bench.Async, 1, 4096, want-int64(have), 0
	body := bench.Body(w.Size)
	s.send(ctx, pw, pre, time.Now(), func() []byte { rec.Tick(1); return body })
	if r := pre.Result("", pw, time.Second); r.Failed() > 0 {
		return fmt.Errorf("natsbench: preload: %s", r.Errors())
	}
	return nil
}

var consumerSeq atomic.Int64

// consumer creates a durable pull consumer of w's topic with explicit acks.
func (s *System) consumer(ctx context.Context, w bench.Workload, policy jetstream.DeliverPolicy) (jetstream.Consumer, func(), error) {
	name := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), consumerSeq.Add(1))
	c, err := s.st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: policy,
		FilterSubject: subject(w.Topic),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("natsbench: create consumer: %w", err)
	}
	remove := func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.st.DeleteConsumer(cctx, name)
	}
	return c, remove, nil
}

// readAll runs w.Consumers readers of c until ctx ends, calling handle for
// each message and acking it.
func readAll(ctx context.Context, w bench.Workload, c jetstream.Consumer, handle func(jetstream.Msg)) error {
	var batch []jetstream.PullMessagesOpt // JetStream's default batch unless the workload sets one
	if w.FetchMax > 0 {
		batch = append(batch, jetstream.PullMaxMessages(w.FetchMax))
	}
	errs := make([]error, w.Consumers)
	var wg sync.WaitGroup
	for i := range w.Consumers {
		wg.Go(func() {
			switch w.Delivery {
			case bench.Push:
				cc, err := c.Consume(func(m jetstream.Msg) {
					handle(m)
					_ = m.Ack()
				}, consumeOpts(batch)...)
				if err != nil {
					errs[i] = err
					return
				}
				<-ctx.Done()
				cc.Stop()
			case bench.Pull:
				it, err := c.Messages(batch...)
				if err != nil {
					errs[i] = err
					return
				}
				stop := context.AfterFunc(ctx, it.Stop)
				defer stop()
				for {
					m, err := it.Next()
					if errors.Is(err, jetstream.ErrNoHeartbeat) && ctx.Err() == nil {
						// A heartbeat missed on a loaded machine: the
						// iterator stays usable (nats.go re-issues its pull);
						// a consumer that really stops ends by the drain
						// timeout.
						continue
					}
					if err != nil {
						if ctx.Err() == nil && !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
							errs[i] = err
						}
						return
					}
					handle(m)
					_ = m.Ack()
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *System) consume(ctx context.Context, w bench.Workload, rec *bench.Recorder) (*bench.Result, error) {
	if err := s.preload(ctx, w, rec, w.Count); err != nil {
		return nil, err
	}
	c, remove, err := s.consumer(ctx, w, jetstream.DeliverAllPolicy)
	if err != nil {
		return nil, err
	}
	defer remove()
	rec.SetPhase("run")
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		got     atomic.Int64
		last    atomic.Int64 // when the latest counted message came, Unix ns
		endOnce sync.Once
		end     time.Time
	)
	start := time.Now()
	stopWatch := bench.WatchStall(rctx, w.DrainTimeout, got.Load, stop)
	err = readAll(rctx, w, c, func(m jetstream.Msg) {
		if n := got.Add(1); n <= w.Count {
			last.Store(time.Now().UnixNano())
			rec.Record(bench.StatusOK, len(m.Data()), 0)
			if n == w.Count {
				endOnce.Do(func() { end = time.Now() })
				stop()
			}
		}
	})
	stopWatch()
	endOnce.Do(func() { // stalled: the rate is up to the last message
		end = time.Now()
		if l := last.Load(); l > 0 {
			end = time.Unix(0, l)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("natsbench: consume: %w", err)
	}
	res := rec.Result(s.Name(), w, end.Sub(start))
	if missing := w.Count - res.Messages; missing > 0 {
		res.Statuses["NOT_CONSUMED"] = missing
	}
	return res, nil
}

// endToEnd is bench's end-to-end workload: readers of a new consumer that
// starts at the stream's end, then producers of stamped messages; the
// latency is from the send to the reader's handler.
func (s *System) endToEnd(ctx context.Context, w bench.Workload, rec *bench.Recorder) (*bench.Result, error) {
	c, remove, err := s.consumer(ctx, w, jetstream.DeliverNewPolicy)
	if err != nil {
		return nil, err
	}
	defer remove()
	run := bench.RunID()
	rctx, stopReaders := context.WithCancel(ctx)
	defer stopReaders()
	var (
		consumed atomic.Int64
		target   atomic.Int64
		mu       sync.Mutex
		lastSeen time.Time
		allSeen  = make(chan struct{})
		seenOnce sync.Once
	)
	target.Store(-1)
	readErr := make(chan error, 1)
	go func() {
		readErr <- readAll(rctx, w, c, func(m jetstream.Msg) {
			sent, ok := bench.ReadStamp(m.Data(), run)
			if !ok {
				return
			}
			now := time.Now()
			rec.Latency(now.Sub(sent))
			rec.Tick(1)
			n := consumed.Add(1)
			mu.Lock()
			lastSeen = now
			mu.Unlock()
			if t := target.Load(); t >= 0 && n >= t {
				seenOnce.Do(func() { close(allSeen) })
			}
		})
	}()
	prod := bench.NewRecorder()
	body := bench.Body(w.Size)
	rec.SetPhase("run")
	start := time.Now()
	s.send(ctx, w, prod, start, func() []byte { return bench.Stamp(body, run) })
	sent := prod.Counted()
	target.Store(sent)
	if consumed.Load() >= sent {
		seenOnce.Do(func() { close(allSeen) })
	}
	rec.SetPhase("drain")
	select {
	case <-allSeen:
	case <-time.After(w.DrainTimeout):
	case <-ctx.Done():
	}
	stopReaders()
	if err := <-readErr; err != nil {
		return nil, fmt.Errorf("natsbench: e2e: %w", err)
	}
	mu.Lock()
	end := lastSeen
	mu.Unlock()
	res := rec.Result(s.Name(), w, end.Sub(start))
	res.Statuses = prod.Result("", w, time.Second).Statuses
	got := min(consumed.Load(), sent)
	if missing := sent - got; missing > 0 {
		res.Statuses["NOT_CONSUMED"] = missing
	}
	res.Messages, res.Bytes = got, got*int64(w.Size)
	if secs := res.Elapsed.Seconds(); secs > 0 {
		res.Rate, res.MBps = float64(got)/secs, float64(res.Bytes)/secs/1e6
	}
	return res, nil
}

// consumeOpts turns Messages options into Consume options (PullMaxMessages
// is both).
func consumeOpts(opts []jetstream.PullMessagesOpt) []jetstream.PullConsumeOpt {
	var out []jetstream.PullConsumeOpt
	for _, o := range opts {
		if c, ok := o.(jetstream.PullConsumeOpt); ok {
			out = append(out, c)
		}
	}
	return out
}
