package raft

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/ferrymq/ferry/core/sdk"
)

// gateCore is a store whose appends are held until the test releases them
// (a flush that has not finished), and that can crash: the appends not yet
// answered are lost (a store that dies holds a prefix of what it was sent)
// and their waits fail, and the core refuses the next Apply (the storage
// restarting) before it takes appends again.
type gateCore struct {
	sdk.ReplicaCore
	mu       sync.Mutex
	log      []string // stored message ids in offset order
	started  []string // ids of accepted Apply calls, in call order
	open     []*gatedAppend
	released bool // appends are answered at once
	down     bool
	refused  int
}

type gatedAppend struct {
	ids  []string
	gate chan struct{}
	fail bool
	offs []int64
}

func (c *gateCore) NodeInfo(context.Context) (*sdk.NodeInfo, error) { return &sdk.NodeInfo{}, nil }

func (c *gateCore) Apply(_ context.Context, msgs []*sdk.Message) (sdk.ApplyWait, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		if c.refused == 0 {
			c.refused++
			return nil, fmt.Errorf("%w: storage restarting", sdk.ErrUnavailable)
		}
		c.down = false // back after one refusal
	}
	ga := &gatedAppend{gate: make(chan struct{})}
	for _, m := range msgs {
		ga.ids = append(ga.ids, m.Id)
		at := slices.Index(c.log, m.Id) // de-duplicated by id
		if at < 0 {
			c.log = append(c.log, m.Id)
			at = len(c.log) - 1
		}
		ga.offs = append(ga.offs, int64(at))
	}
	c.started = append(c.started, ga.ids...)
	if c.released {
		close(ga.gate)
	} else {
		c.open = append(c.open, ga)
	}
	return func(ctx context.Context) ([]int64, error) {
		select {
		case <-ga.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if ga.fail {
			return nil, fmt.Errorf("%w: storage plugin died", sdk.ErrUnavailable)
		}
		return ga.offs, nil
	}, nil
}

// release answers every held append, and every later one at once.
func (c *gateCore) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ga := range c.open {
		close(ga.gate)
	}
	c.open, c.released = nil, true
}

// crash loses every held append (their waits fail once released) and
// refuses the next Apply.
func (c *gateCore) crash() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ga := range c.open {
		ga.fail = true
		c.log = slices.DeleteFunc(c.log, func(id string) bool { return slices.Contains(ga.ids, id) })
	}
	c.down = true
}

func (c *gateCore) startedIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.started)
}

func (c *gateCore) stored() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

func pipelineFSM(t *testing.T, core sdk.ReplicaCore, depth int, inPlace bool) *fsm {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	f := newFSM(&Plugin{node: "n1", dir: dir, log: quietLog()}, ctx, core, dir)
	f.depth, f.inPlace = depth, inPlace
	// Registered after TempDir, so it runs before the directory's removal:
	// the background writer of the applied file (saveAppliedLater) may
	// still be writing when the test ends.
	t.Cleanup(func() {
		deadline := time.Now().Add(30 * time.Second)
		for {
			f.amu.Lock()
			running := f.backgroundRunning
			f.amu.Unlock()
			if !running {
				return
			}
			if time.Now().After(deadline) {
				t.Error("the applied file's background writer still runs after 30 s")
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	return f
}

// results waits for every pending answer ApplyBatch returned.
func results(t *testing.T, outs ...[]any) [][]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got [][]int64
	for _, out := range outs {
		for _, o := range out {
			pa, ok := o.(*pendingApply)
			if !ok {
				t.Fatalf("answer %T %v, want a pending apply", o, o)
			}
			offs, err := pa.result(ctx)
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			got = append(got, offs)
		}
	}
	return got
}

// overlapped reports whether the next batch's append starts while the
// previous batch's is held (its flush running), waiting up to wait.
func overlapped(t *testing.T, depth int, wait time.Duration) bool {
	core := &gateCore{}
	f := pipelineFSM(t, core, depth, false)
	out1 := f.ApplyBatch([]*hraft.Log{batchEntry(t, 1, "orders", 0, 1), batchEntry(t, 2, "orders", 0, 1)})
	done := make(chan []any, 1)
	go func() { done <- f.ApplyBatch([]*hraft.Log{batchEntry(t, 3, "orders", 0, 1)}) }()
	deadline := time.Now().Add(wait)
	overlap := false
	for !overlap && time.Now().Before(deadline) {
		overlap = slices.Contains(core.startedIDs(), "e3-0")
		if !overlap {
			time.Sleep(10 * time.Millisecond)
		}
	}
	core.release()
	got := results(t, out1, <-done)
	if want := [][]int64{{0}, {1}, {2}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("offsets %v, want %v (log order)", got, want)
	}
	f.drain()
	if f.applied != 3 {
		t.Errorf("applied %d, want 3", f.applied)
	}
	return overlap
}

// The next batch's appends start while the previous batch's are still
// held; answers and offsets stay in log order. Negative control: with a
// depth of 1 (no pipelining) they do not start before the release.
func TestApplyPipelineOverlaps(t *testing.T) {
	if !overlapped(t, pipelineDepth, 30*time.Second) {
		t.Error("the next batch's append did not start while the previous one's flush ran")
	}
	if overlapped(t, 1, 2*time.Second) {
		t.Error("negative control: with depth 1 the next batch's append started before the previous one was stored; the check cannot tell")
	}
}

// crashAndRecover: entries 1 and 2 are started and held, the store dies
// (they are lost) and refuses the next Apply (entry 3's, started by the
// next ApplyBatch), then takes appends again; then the held appends fail.
// It returns the store's log.
func crashAndRecover(t *testing.T, inPlace bool) ([]string, *fsm) {
	core := &gateCore{}
	f := pipelineFSM(t, core, pipelineDepth, inPlace)
	out1 := f.ApplyBatch([]*hraft.Log{batchEntry(t, 1, "orders", 0, 1), batchEntry(t, 2, "orders", 0, 1)})
	core.crash()
	out2 := f.ApplyBatch([]*hraft.Log{batchEntry(t, 3, "orders", 0, 1)})
	core.release() // entries 1 and 2 now fail: the completer sees it
	results(t, out1, out2)
	f.drain()
	return core.stored(), f
}

// A failed append is started again before any later entry is: the store
// ends with the log's order. Negative control: retrying a failed append
// alone, where it failed (the pipeline without recovery), stores entry 3
// before 1 and 2.
func TestApplyPipelineRecoversInLogOrder(t *testing.T) {
	want := []string{"e1-0", "e2-0", "e3-0"}
	got, f := crashAndRecover(t, false)
	if !slices.Equal(got, want) {
		t.Errorf("store holds %v, want %v", got, want)
	}
	if f.applied != 3 {
		t.Errorf("applied %d, want 3", f.applied)
	}
	if bad, _ := crashAndRecover(t, true); slices.Equal(bad, want) {
		t.Errorf("negative control: retried in place, the store holds %v in log order; the check cannot tell", bad)
	} else {
		t.Logf("negative control, retried in place: %s", strings.Join(bad, " "))
	}
}

// A barrier (a topic change) waits for the appends before it: they are
// stored when it is applied, and the entries after it start only then.
func TestApplyPipelineDrainsAtBarriers(t *testing.T) {
	core := &gateCore{}
	f := pipelineFSM(t, core, pipelineDepth, false)
	out := f.ApplyBatch([]*hraft.Log{batchEntry(t, 1, "orders", 0, 1)})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.ApplyBatch([]*hraft.Log{membersLog(t, 2, memberChange{Op: "add", Peer: Peer{ID: "n9"}}), batchEntry(t, 3, "orders", 0, 1)})
	}()
	select {
	case <-done:
		t.Fatal("a members entry was applied while an append before it was held")
	case <-time.After(200 * time.Millisecond):
	}
	if slices.Contains(core.startedIDs(), "e3-0") {
		t.Fatal("an entry after a barrier started before the barrier was applied")
	}
	core.release()
	results(t, out)
	<-done
	f.drain()
	if got := core.stored(); !slices.Equal(got, []string{"e1-0", "e3-0"}) {
		t.Errorf("store %v", got)
	}
}
