package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// gatedStore is a store that tells offsets early (sdk.EarlyOffsets) and whose
// flush waits until the test releases it, then ends as the test said: OK,
// FLUSH_TIMEOUT, an error, or the store process dying (ErrUnavailable).
type gatedStore struct {
	sdk.Storage // memory: offsets, de-dup, reads
	release     chan struct{}
	flushed     chan struct{} // closed when a flush was released and answered
	mu          sync.Mutex
	outcome     error
	appends     int
}

func newGated(t *testing.T, outcome error) *gatedStore {
	return &gatedStore{Storage: newMemory(t), release: make(chan struct{}), flushed: make(chan struct{}), outcome: outcome}
}

func (g *gatedStore) AppendEarly(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWritten, sdk.AppendWait, error) {
	wait, err := g.Storage.Append(ctx, msgs)
	if err != nil {
		return nil, nil, err
	}
	offs, err := wait(ctx)
	if err != nil {
		return nil, nil, err
	}
	g.mu.Lock()
	g.appends++
	outcome := g.outcome
	g.mu.Unlock()
	return sdk.Written(offs), func(ctx context.Context) ([]int64, error) {
		select {
		case <-g.release:
		case <-ctx.Done():
			return offs, sdk.ErrFlushTimeout
		}
		switch {
		case outcome == nil:
			return offs, nil
		case errors.Is(outcome, sdk.ErrFlushTimeout):
			return offs, outcome
		default:
			return nil, outcome
		}
	}, nil
}

func (g *gatedStore) Append(ctx context.Context, msgs []*sdk.Message) (sdk.AppendWait, error) {
	_, wait, err := g.AppendEarly(ctx, msgs)
	return wait, err
}

// writtenMode is a replication plugin in mode apply_written (a master–slave
// plugin with replicate_before_flush).
type writtenMode struct{ sdk.Replication }

func (writtenMode) Mode() string { return sdk.ModeApplyWritten }

func newEarlyBroker(t *testing.T, r sdk.Replication, stores ...sdk.Storage) *Broker {
	t.Helper()
	return newModeBroker(t, writtenMode{r}, stores...)
}

func newModeBroker(t *testing.T, r sdk.Replication, stores ...sdk.Storage) *Broker {
	t.Helper()
	b := New(Options{Node: "n1", Address: "127.0.0.1:1", Role: sdk.RoleMaster, Topics: []Topic{{Name: "orders", Queues: 2}},
		Replication: replSource{r}}, newSource(stores...))
	b.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return b
}

func (f *fakeRepl) got() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.batches)
}

// With a store that tells offsets early, a master hands the batch to
// replication while its flush is still running, and answers the producer
// only once both are done, with the weaker status; a flush that fails is
// never answered OK, even though the replica confirmed.
func TestReplicateOverlapsFlush(t *testing.T) {
	for _, tc := range []struct {
		name    string
		outcome error
		want    sdk.Status
		wantErr bool
	}{
		{"flush ok", nil, ferryv1.Status_STATUS_OK, false},
		{"flush timeout", fmt.Errorf("%w: slow disk", sdk.ErrFlushTimeout), ferryv1.Status_STATUS_FLUSH_TIMEOUT, false},
		{"flush failed", errors.New("disk on fire"), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newGated(t, tc.outcome)
			f := &fakeRepl{status: ferryv1.Status_STATUS_OK}
			b := newEarlyBroker(t, f, store)
			type answer struct {
				resp *sdk.ProduceResponse
				err  error
			}
			done := make(chan answer, 1)
			go func() {
				resp, err := produceStatus(t, b, 1, "a", "b")
				done <- answer{resp, err}
			}()
			// The replica gets the batch, with its offsets, while the
			// flush is held.
			deadline := time.Now().Add(10 * time.Second)
			for f.got() == "[]" {
				if time.Now().After(deadline) {
					t.Fatal("batch not handed to replication while its flush was running")
				}
				time.Sleep(time.Millisecond)
			}
			if got := f.got(); got != "[[a@1/0 b@1/1]]" {
				t.Fatalf("replicated %s", got)
			}
			select {
			case a := <-done:
				t.Fatalf("produce answered (%v, %v) before the flush was done", a.resp, a.err)
			case <-time.After(100 * time.Millisecond):
			}
			close(store.release)
			var a answer
			select {
			case a = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("produce not answered after the flush")
			}
			if tc.wantErr {
				if a.err == nil {
					t.Fatalf("flush failed, replica confirmed: answered %v, want an error", a.resp.Status)
				}
				return
			}
			if a.err != nil {
				t.Fatal(a.err)
			}
			if a.resp.Status != tc.want || fmt.Sprint(a.resp.Offsets) != "[0 1]" {
				t.Fatalf("answered %v %v, want %v [0 1]", a.resp.Status, a.resp.Offsets, tc.want)
			}
		})
	}
}

// The flush done first, the producer still waits for the replication, and
// gets the weaker status.
func TestReplicateOverlapWaitsForReplica(t *testing.T) {
	store := newGated(t, nil)
	close(store.release)
	f := &fakeRepl{status: ferryv1.Status_STATUS_REPLICA_TIMEOUT, hold: make(chan struct{})}
	b := newEarlyBroker(t, f, store)
	done := make(chan *sdk.ProduceResponse, 1)
	go func() {
		resp, err := produceStatus(t, b, 0, "x")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	select {
	case <-done:
		t.Fatal("produce answered before the replication level was known")
	case <-time.After(200 * time.Millisecond):
	}
	close(f.hold)
	select {
	case resp := <-done:
		if resp != nil && resp.Status != ferryv1.Status_STATUS_REPLICA_TIMEOUT {
			t.Fatalf("status %v, want REPLICA_TIMEOUT", resp.Status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("produce not answered after the replication")
	}
}

// Batches told early keep their seq order on the way to replication, also
// when many are in flight, and every producer gets the offsets replicated.
func TestReplicateOverlapKeepsOrder(t *testing.T) {
	store := newGated(t, nil)
	close(store.release)
	f := &fakeRepl{status: ferryv1.Status_STATUS_OK}
	b := newEarlyBroker(t, f, store)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := produceStatus(t, b, 0, fmt.Sprintf("m%d", i))
			if err != nil || resp.Status != ferryv1.Status_STATUS_OK {
				t.Errorf("m%d: %v %v", i, resp, err)
			}
		}()
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	next := 0
	for _, batch := range f.batches {
		for _, m := range batch {
			_, off, _ := strings.Cut(m, "/")
			if off != strconv.Itoa(next) {
				t.Fatalf("replicated %v: offsets out of order at %s (want offset %d)", f.batches, m, next)
			}
			next++
		}
	}
	if next != 50 {
		t.Fatalf("replicated %d messages, want 50", next)
	}
}

// A batch replicated early whose store process then dies before the flush
// (outcome unknown) is appended again to the restarted store, which
// de-duplicates it at the same offsets: it is not replicated a second time,
// and the producer is answered OK once the new process flushed it.
func TestReplicateOverlapStorageCrash(t *testing.T) {
	first := newGated(t, fmt.Errorf("%w: plugin died", sdk.ErrUnavailable))
	second := &gatedStore{Storage: first.Storage, release: make(chan struct{}), outcome: nil} // the same data: it survived
	f := &fakeRepl{status: ferryv1.Status_STATUS_OK}
	b := newEarlyBroker(t, f, first, second)
	done := make(chan *sdk.ProduceResponse, 1)
	go func() {
		resp, err := produceStatus(t, b, 1, "a", "b")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	deadline := time.Now().Add(10 * time.Second)
	for f.got() == "[]" {
		if time.Now().After(deadline) {
			t.Fatal("batch not handed to replication while its flush was running")
		}
		time.Sleep(time.Millisecond)
	}
	close(first.release) // the first process dies: the batch is replayed
	deadline = time.Now().Add(10 * time.Second)
	for {
		second.mu.Lock()
		n := second.appends
		second.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("batch not appended again to the restarted store")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case resp := <-done:
		t.Fatalf("answered %v before the restarted store flushed", resp)
	case <-time.After(100 * time.Millisecond):
	}
	close(second.release)
	select {
	case resp := <-done:
		if resp == nil || resp.Status != ferryv1.Status_STATUS_OK || fmt.Sprint(resp.Offsets) != "[0 1]" {
			t.Fatalf("answered %v, want OK [0 1]", resp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("produce not answered after the replay")
	}
	if got := f.got(); got != "[[a@1/0 b@1/1]]" {
		t.Fatalf("replicated %s, want the batch once", got)
	}
}

// A batch replicated early whose replay (after a store crash) gets other
// offsets — a store that broke its contract — is answered an error, never
// OK: the replicas hold it at the offsets they were told.
func TestReplicateOverlapOffsetsMoved(t *testing.T) {
	first := newGated(t, fmt.Errorf("%w: plugin died", sdk.ErrUnavailable))
	second := newGated(t, nil) // lost everything, and holds another message
	close(second.release)
	if _, err := appendWaitFor(second, &sdk.Message{Id: "other", Topic: "orders", Queue: 1}); err != nil {
		t.Fatal(err)
	}
	f := &fakeRepl{status: ferryv1.Status_STATUS_OK}
	b := newEarlyBroker(t, f, first, second)
	done := make(chan error, 1)
	go func() {
		resp, err := produceStatus(t, b, 1, "a", "b")
		t.Logf("answered %v, %v", resp, err)
		if err == nil && resp.Status == ferryv1.Status_STATUS_OK {
			err = fmt.Errorf("answered OK at %v", resp.Offsets)
		} else {
			err = nil
		}
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for f.got() == "[]" {
		if time.Now().After(deadline) {
			t.Fatal("batch not handed to replication")
		}
		time.Sleep(time.Millisecond)
	}
	close(first.release) // dies: replayed to second, at offsets [1 2]
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("offsets moved after replication: %v, want no OK", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("produce not answered after the replay")
	}
	if got := f.got(); got != "[[a@1/0 b@1/1]]" {
		t.Fatalf("replicated %s, want the batch once", got)
	}
}

func appendWaitFor(s sdk.Storage, msgs ...*sdk.Message) ([]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wait, err := s.Append(ctx, msgs)
	if err != nil {
		return nil, err
	}
	return wait(ctx)
}

// In mode apply_first (master–slave without replicate_before_flush, the
// default) a store that tells offsets early is still replicated only once the
// batch is durable: a slave never holds what its master has not flushed.
func TestApplyFirstReplicatesAfterFlush(t *testing.T) {
	store := newGated(t, nil)
	f := &fakeRepl{status: ferryv1.Status_STATUS_OK}
	b := newModeBroker(t, f, store) // fakeRepl tells no mode: apply_first
	done := make(chan error, 1)
	go func() {
		_, err := produceStatus(t, b, 1, "a")
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if got := f.got(); got != "[]" {
		t.Fatalf("replicated %s before the flush was done", got)
	}
	close(store.release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("produce not answered after the flush")
	}
	if got := f.got(); got != "[[a@1/0]]" {
		t.Fatalf("replicated %s", got)
	}
}
