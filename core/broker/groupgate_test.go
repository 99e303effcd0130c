package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/storage/memory"
)

// heldStore is a memory store whose CommitOffsets of one group, once armed,
// signals entered and waits for release: a commit held in flight.
type heldStore struct {
	*memory.Store
	mu      sync.Mutex
	group   string
	entered chan struct{}
	release chan struct{}
}

func (h *heldStore) arm(group string) (entered, release chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.group, h.entered, h.release = group, make(chan struct{}), make(chan struct{})
	return h.entered, h.release
}

func (h *heldStore) CommitOffsets(ctx context.Context, group string, offs []*sdk.GroupOffset) error {
	h.mu.Lock()
	var entered, release chan struct{}
	if group == h.group && h.entered != nil {
		entered, release = h.entered, h.release
		h.group, h.entered = "", nil // once
	}
	h.mu.Unlock()
	if entered != nil {
		close(entered)
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.Store.CommitOffsets(ctx, group, offs)
}

// eventRepl is a master–slave plugin that replicates offsets and group
// deletions and records, in order, when each took effect; a report of one
// group's offsets, once armed, signals entered and waits for release.
type eventRepl struct {
	fakeRepl
	mu      sync.Mutex
	events  []string
	group   string
	entered chan struct{}
	release chan struct{}
}

func (e *eventRepl) arm(group string) (entered, release chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.group, e.entered, e.release = group, make(chan struct{}), make(chan struct{})
	return e.entered, e.release
}

func (e *eventRepl) ReplicateOffsets(ctx context.Context, group string, offs []*sdk.GroupOffset) error {
	e.mu.Lock()
	var entered, release chan struct{}
	if group == e.group && e.entered != nil {
		entered, release = e.entered, e.release
		e.group, e.entered = "", nil
	}
	e.mu.Unlock()
	if entered != nil {
		close(entered)
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, o := range offs {
		e.events = append(e.events, fmt.Sprintf("offset %s %s/%d=%d", group, o.Topic, o.Queue, o.Offset))
	}
	return nil
}

func (e *eventRepl) ReplicateGroupDelete(_ context.Context, group string, _ uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, "delete "+group)
	return nil
}

func (e *eventRepl) ReplicatesGroupDeletes() bool { return true }

func (e *eventRepl) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.events...)
}

// afterDelete is what the plugin was handed for group after its deletion
// (nothing, if the deletion is ordered after every commit).
func afterDelete(events []string, group string) ([]string, bool) {
	for i, ev := range events {
		if ev == "delete "+group {
			return events[i+1:], true
		}
	}
	return nil, false
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newGateBroker(t *testing.T, store sdk.Storage, r sdk.Replication) *Broker {
	t.Helper()
	opts := Options{Node: "n1", Address: "127.0.0.1:1", Topics: []Topic{{Name: "orders", Queues: 2}}}
	if r != nil {
		opts.Role, opts.Replication = sdk.RoleMaster, replSource{r}
	}
	b := New(opts, newSource(store))
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

// A commit the broker took before a group's deletion, held in flight in the
// store, is ordered before the deletion: the deletion waits for it, a commit
// made meanwhile is refused naming the deletion, and once both are done the
// group has no offsets (on a single node, and on a master, where the plugin
// is handed no offset of the group after its deletion).
func TestDeleteGroupWaitsForCommitInFlight(t *testing.T) {
	for _, replicated := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicated=%v", replicated), func(t *testing.T) {
			ctx := context.Background()
			store := &heldStore{Store: newMemory(t)}
			var repl *eventRepl
			var r sdk.Replication
			if replicated {
				repl = &eventRepl{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}}
				r = repl
			}
			b := newGateBroker(t, store, r)
			produce(t, b, 0, "a", "b", "c")
			commit := func(off int64) error {
				return b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: off}}})
			}
			if err := commit(1); err != nil {
				t.Fatal(err)
			}
			entered, release := store.arm("billing")
			commitErr := make(chan error, 1)
			go func() { commitErr <- commit(2) }()
			<-entered
			delErr := make(chan error, 1)
			go func() {
				_, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"})
				delErr <- err
			}()
			var early error
			returned := false
			waitFor(t, "the deletion to wait for the commit or to return", func() bool {
				select {
				case early = <-delErr:
					returned = true
					return true
				default:
					return b.gates.waiting("billing")
				}
			})
			if returned {
				t.Errorf("the deletion returned (%v) while a commit it came after was still in flight", early)
			} else {
				err := commit(1)
				if !errors.Is(err, sdk.ErrUnavailable) || !strings.Contains(err.Error(), "is being deleted") {
					t.Errorf("a commit while the group is being deleted: %v, want ErrUnavailable saying it is being deleted", err)
				}
			}
			close(release)
			if err := <-commitErr; err != nil {
				t.Errorf("the commit admitted before the deletion: %v", err)
			}
			if !returned {
				if err := <-delErr; err != nil {
					t.Fatalf("delete: %v", err)
				}
			}
			if got := committed(t, b, "billing", 0); got != -1 {
				t.Errorf("after the deletion the group's offset is %d, want -1 (the commit in flight brought it back)", got)
			}
			if repl != nil {
				// The background report of an earlier commit may still
				// run; what matters is that none comes after the delete.
				waitFor(t, "the deletion to reach the plugin", func() bool { _, ok := afterDelete(repl.got(), "billing"); return ok })
				if after, _ := afterDelete(repl.got(), "billing"); len(after) > 0 {
					t.Errorf("the plugin was handed %v after the group's deletion (all: %v)", after, repl.got())
				}
			}
			// A commit after the deletion starts the group again.
			if err := commit(3); err != nil {
				t.Errorf("a commit after the deletion: %v", err)
			}
			if got := committed(t, b, "billing", 0); got != 3 {
				t.Errorf("after a commit following the deletion the offset is %d, want 3", got)
			}
		})
	}
}

// On a master, a background report of a group's offsets to the plugin that
// is under way when the group is deleted is finished before the deletion is
// handed to the plugin, and never made after it: the slaves would store the
// old offsets after deleting the group.
func TestDeleteGroupAfterOffsetReportInFlight(t *testing.T) {
	ctx := context.Background()
	repl := &eventRepl{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}}
	b := newGateBroker(t, newMemory(t), repl)
	produce(t, b, 0, "a", "b", "c")
	entered, release := repl.arm("billing")
	if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 2}}}); err != nil {
		t.Fatal(err)
	}
	<-entered // the report of offset 2 is in flight
	delErr := make(chan error, 1)
	go func() {
		_, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"})
		delErr <- err
	}()
	returned := false
	waitFor(t, "the deletion to wait for the report or to return", func() bool {
		select {
		case err := <-delErr:
			if err != nil {
				t.Fatalf("delete: %v", err)
			}
			returned = true
			return true
		default:
			return b.repl.offs.forgetWaits.Load() > 0
		}
	})
	close(release)
	if !returned {
		if err := <-delErr; err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	// The held report is answered by now (release, then the deletion
	// went on after it, or it was late and ends on its own).
	waitFor(t, "the held report to end", func() bool {
		for _, ev := range repl.got() {
			if strings.HasPrefix(ev, "offset billing") {
				return true
			}
		}
		return false
	})
	if after, ok := afterDelete(repl.got(), "billing"); !ok || len(after) > 0 {
		t.Errorf("the plugin saw %v: want the deletion after the offset report in flight, nothing after it", repl.got())
	}
	if got := committed(t, b, "billing", 0); got != -1 {
		t.Errorf("after the deletion the group's offset is %d, want -1", got)
	}
}

// logRepl is a raft-like plugin (replicate first): a commit goes through
// its log (sdk.OffsetCommitter), held in flight once armed, and a group's
// deletion is an entry it applies through the core; it records, in order,
// when each took effect.
type logRepl struct {
	eventRepl
	b *Broker
}

var _ sdk.OffsetCommitter = (*logRepl)(nil)

func (l *logRepl) Mode() string { return sdk.ModeReplicateFirst }

func (l *logRepl) CommitOffsets(ctx context.Context, group string, _ uint64, offs []*sdk.GroupOffset) error {
	return l.ReplicateOffsets(ctx, group, offs)
}

func (l *logRepl) ReplicateGroupDelete(ctx context.Context, group string, generation uint64) error {
	if err := l.b.ReplicaCore().DeleteGroupOffsets(ctx, group, generation); err != nil {
		return err
	}
	return l.eventRepl.ReplicateGroupDelete(ctx, group, generation)
}

// On a raft-like node, a commit held in flight in the log when the group is
// deleted is committed before the deletion's entry, never after it.
func TestDeleteGroupWaitsForCommitThroughLog(t *testing.T) {
	ctx := context.Background()
	repl := &logRepl{eventRepl: eventRepl{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}}}
	b := newGateBroker(t, newMemory(t), repl)
	repl.b = b
	commit := func() error {
		return b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}})
	}
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	entered, release := repl.arm("billing")
	commitErr := make(chan error, 1)
	go func() { commitErr <- commit() }()
	<-entered
	delErr := make(chan error, 1)
	go func() {
		_, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"})
		delErr <- err
	}()
	returned := false
	waitFor(t, "the deletion to wait for the commit or to return", func() bool {
		select {
		case err := <-delErr:
			if err != nil {
				t.Fatalf("delete: %v", err)
			}
			returned = true
			return true
		default:
			return b.gates.waiting("billing")
		}
	})
	if returned {
		t.Errorf("the deletion returned while a commit it came after was in flight in the log")
	}
	close(release)
	if err := <-commitErr; err != nil {
		t.Errorf("the commit admitted before the deletion: %v", err)
	}
	if !returned {
		if err := <-delErr; err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	if after, ok := afterDelete(repl.got(), "billing"); !ok || len(after) > 0 {
		t.Errorf("the log holds %v: want the commit in flight before the deletion, nothing of the group after it", repl.got())
	}
}
