package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/sink"
	"github.com/ferrymq/ferry/core/stage"
)

// FlowResult reports one flow.
type FlowResult struct {
	Name, Group, Topic string
	Orderly            bool // the flow keeps each queue's order
	Delivered          int  // handler calls, retries and redeliveries included
	Unique             int  // distinct message ids
	Missing            int  // acknowledged by the broker but never delivered
	Retried            int  // attempts that failed and were scheduled again
	DeadLettered       int  // messages sent to the group's dead-letter queue
	// Consumed are the messages the flow's handler was given, each
	// position (queue and offset of the original) once, in the order of
	// their first delivery; kept only with Options.Record.
	Consumed []ConsumedMessage
}

// ConsumedMessage is a message a flow consumed, named by its original's id
// and position (a retry's too).
type ConsumedMessage struct {
	ID     string
	Queue  int32
	Offset int64
}

// flow feeds a consumer group's messages through its stage chain to its
// sink.
type flow struct {
	cfg     config.Flow
	cons    *client.Consumer
	sink    sink.Sink
	handler client.DeliveryHandler

	mu        sync.Mutex
	seen      map[string]bool
	delivered int
	record    bool
	at        map[ConsumedMessage]bool // with record: positions delivered
	consumed  []ConsumedMessage
}

// newFlow builds a flow's chain, sink and consumer; it fails on what the
// config check cannot see (a command that is not installed). Its stage
// plugins are started with stageOpts.Plugins (the node's plugin host).
func newFlow(cl *client.Client, f config.Flow, dataDir string, out io.Writer, stageOpts stage.Options, record bool) (*flow, error) {
	specs := make([]stage.Spec, len(f.Stages))
	for i, s := range f.Stages {
		specs[i] = stage.Spec{Type: s.Type, Config: s.Config}
	}
	chain, err := stage.Build(specs, stageOpts)
	if err != nil {
		return nil, err
	}
	sk, err := sink.New(f.Sink, sink.Options{Flow: f.Name, Out: out, DataDir: dataDir})
	if err != nil {
		return nil, err
	}
	onCorrupt, err := client.ParseCorruptPolicy(f.OnCorrupt)
	if err != nil {
		sk.Close()
		return nil, err
	}
	cons, err := cl.NewConsumer(client.ConsumerOptions{
		Topic: f.Topic, Group: f.Group, Orderly: f.Orderly, Concurrency: f.Concurrency, MaxInflight: f.MaxInflight,
		OnCorrupt: onCorrupt,
	})
	if err != nil {
		sk.Close()
		return nil, err
	}
	fl := &flow{cfg: f, cons: cons, sink: sk, seen: map[string]bool{}, record: record}
	if record {
		fl.at = map[ConsumedMessage]bool{}
	}
	inner := chain(func(ctx context.Context, d *client.Delivery) error { return sk.Deliver(ctx, d) })
	fl.handler = func(ctx context.Context, d *client.Delivery) error {
		fl.mu.Lock()
		fl.delivered++
		fl.seen[d.ID] = true
		if fl.record {
			if m := (ConsumedMessage{ID: d.ID, Queue: d.Queue, Offset: d.Offset}); !fl.at[m] {
				fl.at[m] = true
				fl.consumed = append(fl.consumed, m)
			}
		}
		fl.mu.Unlock()
		return inner(ctx, d)
	}
	return fl, nil
}

// run consumes until ctx ends.
func (f *flow) run(ctx context.Context) error {
	defer f.sink.Close()
	if f.cfg.Delivery == "pull" {
		return f.pull(ctx)
	}
	return f.cons.Consume(ctx, f.handler)
}

// pull long-polls batches and processes each delivery (up to the flow's
// concurrency at once), settling what the chain left unsettled as the
// consumer's push mode does.
func (f *flow) pull(ctx context.Context) error {
	if err := f.cons.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer func() { _ = f.cons.Close() }() // after the handlers (defers run last first)
	slots := make(chan struct{}, f.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		ds, err := f.cons.Fetch(ctx, 0)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			wg.Wait()
			return err
		}
		for _, d := range ds {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Go(func() {
				defer func() { <-slots }()
				err := f.handler(ctx, d)
				switch {
				case d.Settled():
				case err == nil:
					d.Ack()
				case ctx.Err() == nil:
					_ = d.Fail(err)
				}
			})
		}
	}
	return nil
}

func (f *flow) result() FlowResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.cons.Stats()
	return FlowResult{Name: f.cfg.Name, Group: f.cfg.Group, Topic: f.cfg.Topic, Orderly: f.cfg.Orderly, Delivered: f.delivered, Unique: len(f.seen),
		Retried: int(st.Retried), DeadLettered: int(st.DeadLettered), Consumed: append([]ConsumedMessage(nil), f.consumed...)}
}

func (r FlowResult) String() string {
	s := fmt.Sprintf("group %s consumed %d (%d unique, %d redelivered), %d missing", r.Group, r.Delivered, r.Unique, r.Delivered-r.Unique, r.Missing)
	if r.Retried > 0 || r.DeadLettered > 0 {
		s += fmt.Sprintf(", %d retried, %d dead-lettered", r.Retried, r.DeadLettered)
	}
	return s
}
