package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/logging"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/stage"
)

// GeneratorResult reports one generator.
type GeneratorResult struct {
	Name, Topic string
	Mode        string
	Sent        int           // acknowledged by the broker (oneway: written to it)
	NotOK       int           // acknowledged with a status weaker than OK
	Errors      int           // failed after retries
	Elapsed     time.Duration // from first send to last ack
	// Messages are the generator's sends in the order it made them, with
	// what each was told; kept only with Options.Record.
	Messages []SentMessage
}

// SentMessage is one generated message and what its producer was told.
type SentMessage struct {
	ID     string // empty if the send failed before the message got one
	Seq    int    // the generator's count when it sent the message
	Err    string // the send's error; then Status, Queue and Offset are unset
	Status ferryv1.Status
	Queue  int32 // where the ack says it was stored (-1 for oneway or an error)
	Offset int64
}

// Run runs the pipeline's generators and flows. With generators, it returns
// once they are done and every flow has consumed and committed everything
// stored; without, it runs until ctx ends. Progress and the summary go to out.
func (e *Engine) Run(ctx context.Context, out io.Writer) (*Summary, error) {
	cfg := e.cfg
	start := time.Now()
	if len(cfg.Generators) == 0 && len(cfg.Flows) == 0 {
		<-ctx.Done()
		return &Summary{Elapsed: time.Since(start)}, nil
	}
	// The flows' consumers log through the node's logger: one stream, one
	// format (they would use slog's default otherwise).
	cl, err := client.Dial(ctx, e.address, append(e.self, client.WithLogger(logging.Slog(e.log.Named("client"))))...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", e.address, err)
	}
	defer cl.Close()

	fctx, stopFlows := context.WithCancel(ctx)
	defer stopFlows()
	flows := make([]*flow, len(cfg.Flows))
	for i, f := range cfg.Flows {
		fl, err := newFlow(cl, f, cfg.Node.DataDir, out, stage.Options{Plugins: e.host.Start}, e.record)
		if err != nil {
			for _, prev := range flows[:i] {
				prev.sink.Close()
			}
			return nil, fmt.Errorf("flow %q: %w", f.Name, err)
		}
		flows[i] = fl
	}
	var flowWG sync.WaitGroup
	flowErrs := make([]error, len(flows))
	flowFailed := make(chan struct{}) // closed when a flow stops on an error
	var failOnce sync.Once
	for i, fl := range flows {
		flowWG.Add(1)
		go func() {
			defer flowWG.Done()
			if flowErrs[i] = fl.run(fctx); flowErrs[i] != nil && fctx.Err() == nil {
				failOnce.Do(func() { close(flowFailed) })
			}
		}()
	}
	defer func() {
		stopFlows()
		flowWG.Wait()
	}()
	flowsErr := func() error {
		for i, err := range flowErrs {
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("flow %q: %w", cfg.Flows[i].Name, err)
			}
		}
		return nil
	}

	if len(cfg.Generators) == 0 {
		<-ctx.Done()
		stopFlows()
		flowWG.Wait()
		return e.summary(start, nil, flows), nil
	}

	gens := make([]*generator, len(cfg.Generators))
	err = runAll(func() error {
		var errs []func() error
		for i, g := range cfg.Generators {
			gens[i] = &generator{cfg: g, mode: g.Mode, acked: map[string]bool{}, record: e.record}
			if gens[i].mode == "" {
				gens[i].mode = cfg.Producer.Mode
			}
			retries := cfg.Producer.Retries
			if retries == 0 {
				retries = client.NoRetries
			}
			p := cl.NewProducer(client.ProducerOptions{
				Retries: retries, Timeout: cfg.Producer.Timeout, RetryOnTimeout: cfg.Producer.RetryOnTimeout,
				RequireDurable: cfg.Producer.RequireDurable, Linger: cfg.Producer.Linger, MaxInflight: cfg.Producer.MaxInflight,
			})
			errs = append(errs, func() error { return gens[i].run(ctx, p) })
		}
		return runAll(errs...)
	})
	if err != nil {
		return nil, err
	}

	// Wait until every flow's group has committed up to the end of its
	// topic and of its retry topic.
	if err := e.waitCaughtUp(ctx, cl, flowFailed); err != nil {
		stopFlows()
		flowWG.Wait()
		if ferr := flowsErr(); ferr != nil {
			return nil, ferr
		}
		return e.summary(start, gens, flows), err
	}
	if cfg.KeepRunning {
		s := e.summary(start, gens, flows)
		dead := 0
		for _, f := range s.Flows {
			dead += f.DeadLettered
		}
		fmt.Fprintf(out, "pipeline %s: generators done and flows caught up after %s (%d dead-lettered); running until interrupted\n",
			cfg.Name, s.Elapsed.Round(time.Millisecond), dead)
		<-ctx.Done()
	}
	stopFlows()
	flowWG.Wait()
	if err := flowsErr(); err != nil {
		return nil, err
	}
	return e.summary(start, gens, flows), nil
}

func (e *Engine) summary(start time.Time, gens []*generator, flows []*flow) *Summary {
	s := &Summary{Elapsed: time.Since(start)}
	acked := map[string]map[string]bool{} // topic → ids
	for _, g := range gens {
		s.Generators = append(s.Generators, g.result())
		if acked[g.cfg.Topic] == nil {
			acked[g.cfg.Topic] = map[string]bool{}
		}
		g.mu.Lock()
		for id := range g.acked {
			acked[g.cfg.Topic][id] = true
		}
		g.mu.Unlock()
	}
	for _, f := range flows {
		r := f.result()
		f.mu.Lock()
		for id := range acked[f.cfg.Topic] {
			if !f.seen[id] {
				r.Missing++
			}
		}
		f.mu.Unlock()
		s.Flows = append(s.Flows, r)
	}
	return s
}

// waitCaughtUp polls the flows' committed offsets until each group has
// committed its topic up to the end it has now (the generators are done) and
// its retry topic up to its current end, twice in a row (a retry is stored
// before its original is committed, so a clean poll after another means
// nothing is pending).
func (e *Engine) waitCaughtUp(ctx context.Context, cl *client.Client, flowFailed <-chan struct{}) error {
	type target struct {
		group  string
		queues []*ferryv1.QueueRef
		ends   []int64 // of the topic's queues; the retry topic's are re-read
	}
	var targets []target
	seen := map[string]bool{}
	for _, f := range e.cfg.Flows {
		if seen[f.Group] {
			continue
		}
		seen[f.Group] = true
		t := target{group: f.Group}
		for _, top := range e.cfg.Topics {
			if top.Name != f.Topic {
				continue
			}
			for q := 0; q < top.Queues; q++ {
				t.queues = append(t.queues, &ferryv1.QueueRef{Topic: f.Topic, Queue: int32(q)})
			}
		}
		offs, err := cl.GetOffsets(ctx, "", t.queues)
		if err != nil {
			return err
		}
		for _, o := range offs {
			t.ends = append(t.ends, o.End)
		}
		for q := range len(sdk.DelayLevels) {
			t.queues = append(t.queues, &ferryv1.QueueRef{Topic: sdk.RetryTopic(f.Group), Queue: int32(q)})
		}
		targets = append(targets, t)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	clean := 0
	for {
		done := true
		for _, t := range targets {
			offs, err := cl.GetOffsets(ctx, t.group, t.queues)
			if err != nil {
				e.log.Warn("checking flow progress", "error", err)
				done = false
				break
			}
			for i, o := range offs {
				end := o.End
				if i < len(t.ends) {
					end = t.ends[i]
				}
				if max(o.Committed, o.Start) < end {
					done = false
				}
			}
		}
		if done {
			clean++
		} else {
			clean = 0
		}
		if clean >= 2 {
			return nil
		}
		select {
		case <-tick.C:
		case <-flowFailed:
			return errors.New("a flow stopped")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// generator produces its configured messages.
type generator struct {
	cfg    config.Generator
	mode   string
	record bool

	mu      sync.Mutex
	acked   map[string]bool
	sent    int
	notOK   int
	errors  int
	elapsed time.Duration
	msgs    []SentMessage
}

func (g *generator) run(ctx context.Context, p *client.Producer) error {
	body := make([]byte, g.cfg.Size)
	_, _ = rand.Read(body)
	var interval time.Duration
	if g.cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) / g.cfg.Rate)
	}
	// Without Options.Record one callback serves every async send: no
	// closure per message.
	shared := func(res client.Result, err error) { g.done(-1, res, err) }
	record := func(seq int) func(client.Result, error) {
		if !g.record {
			return shared
		}
		return func(res client.Result, err error) { g.done(seq, res, err) }
	}
	start := time.Now()
	next := start
	for n := 0; n < g.cfg.Count && ctx.Err() == nil; n++ {
		m := client.Message{Topic: g.cfg.Topic, Body: body, Headers: map[string]string{"ferry-generator": g.cfg.Name}}
		switch g.mode {
		case "async":
			if err := p.SendAsync(ctx, m, record(n)); err != nil {
				g.done(n, client.Result{}, err)
			}
		case "oneway":
			record(n)(p.SendOneway(ctx, m))
		default:
			record(n)(p.SendSync(ctx, m))
		}
		if interval > 0 {
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
	}
	// Close waits for every async callback.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	closeErr := p.Close(cctx)
	g.mu.Lock()
	g.elapsed = time.Since(start)
	g.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return closeErr
}

// done counts send seq's outcome (and, with Options.Record, keeps it).
func (g *generator) done(seq int, res client.Result, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.record {
		m := SentMessage{ID: res.ID, Seq: seq, Queue: -1, Offset: -1}
		switch {
		case err != nil:
			m.Err = err.Error()
		case g.mode != "oneway":
			m.Status, m.Queue, m.Offset = res.Status, res.Queue, res.Offset
		}
		g.msgs = append(g.msgs, m)
	}
	switch {
	case err != nil:
		g.errors++
	case g.mode == "oneway":
		g.sent++ // written to the broker; no ack to count on
	default:
		g.sent++
		g.acked[res.ID] = true
		if res.Status != ferryv1.Status_STATUS_OK {
			g.notOK++
		}
	}
}

func (g *generator) result() GeneratorResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	return GeneratorResult{Name: g.cfg.Name, Topic: g.cfg.Topic, Mode: g.mode, Sent: g.sent, NotOK: g.notOK, Errors: g.errors, Elapsed: g.elapsed,
		Messages: append([]SentMessage(nil), g.msgs...)}
}

// Print writes the summary a person reads at the end of `ferry run`.
func (s *Summary) Print(w io.Writer, pipeline string) {
	fmt.Fprintf(w, "pipeline %s finished in %s\n", pipeline, s.Elapsed.Round(time.Millisecond))
	for _, g := range s.Generators {
		rate := 0.0
		if g.Elapsed > 0 {
			rate = float64(g.Sent) / g.Elapsed.Seconds()
		}
		what := "sent"
		if g.Mode == "oneway" {
			what = "sent oneway (not acknowledged)"
		}
		fmt.Fprintf(w, "  generator %-16s %s %d to %s (%.0f msgs/s), %d not OK, %d failed\n", g.Name, what, g.Sent, g.Topic, rate, g.NotOK, g.Errors)
	}
	for _, f := range s.Flows {
		fmt.Fprintf(w, "  flow      %-16s %s\n", f.Name, f)
	}
}

// OK reports whether every generated message was acknowledged and delivered.
func (s *Summary) OK() bool {
	for _, g := range s.Generators {
		if g.Errors > 0 {
			return false
		}
	}
	for _, f := range s.Flows {
		if f.Missing > 0 {
			return false
		}
	}
	return true
}
