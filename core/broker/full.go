package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// fullProbeInterval is how often the broker asks a full store whether it
// takes appends again.
const fullProbeInterval = 500 * time.Millisecond

// fullState tracks whether the storage answers appends with ErrFull (its disk
// is full). The store recovers by itself once there is space; while it is
// full, the node is not ready (StorageFull) and a metric says so. The state
// ends at the next append the store takes: a producer's, or the broker's
// empty probe append, sent every fullProbeInterval while full, so that the
// state ends even when no producer sends (a node that is not ready may get
// no traffic).
type fullState struct {
	mu      sync.Mutex
	since   time.Time
	err     error
	probing bool
	done    chan struct{} // closed by Close: the probe stops
}

// noteAppend updates the full state from the outcome of a storage append.
// Called by the appender for every answered batch, and by the probe.
func (b *Broker) noteAppend(err error) {
	full := errors.Is(err, sdk.ErrFull)
	if err != nil && !full {
		return // other failures tell nothing about space
	}
	f := &b.full
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case full:
		if f.since.IsZero() {
			f.since = time.Now()
			b.log.Error("storage is full: appends are refused until it has space again (the node is not ready meanwhile)", "error", err)
			b.opts.Metrics.SetStorageFull(true)
		}
		f.err = err
		if !f.probing {
			f.probing = true
			go b.probeFull()
		}
	case !f.since.IsZero():
		b.log.Info("storage takes appends again after being full", "full_for", time.Since(f.since).Round(time.Millisecond).String())
		f.since, f.err = time.Time{}, nil
		b.opts.Metrics.SetStorageFull(false)
	}
}

// probeFull sends an empty append to the storage every fullProbeInterval
// until the store takes it or the broker closes.
func (b *Broker) probeFull() {
	t := time.NewTicker(fullProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-b.full.done:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := b.storageCall(ctx, func(s sdk.Storage) error {
			w, err := s.Append(ctx, nil)
			if err == nil {
				_, err = w(ctx)
			}
			return err
		})
		cancel()
		if err == nil || errors.Is(err, sdk.ErrFull) {
			b.full.mu.Lock()
			if err == nil {
				b.full.probing = false
			}
			b.full.mu.Unlock()
			b.noteAppend(err)
			if err == nil {
				return
			}
		}
	}
}

// StorageFull tells, for the node's readiness, whether the storage refuses
// appends because it is full: nil when it takes them.
func (b *Broker) StorageFull() error {
	b.full.mu.Lock()
	defer b.full.mu.Unlock()
	if f := &b.full; !f.since.IsZero() {
		return fmt.Errorf("storage full since %s (%s ago): %v", f.since.UTC().Format(time.RFC3339), time.Since(f.since).Round(time.Second), f.err)
	}
	return nil
}
