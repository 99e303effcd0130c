package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// newGenBroker is newGateBroker with a data dir (where the generations are
// kept).
func newGenBroker(t *testing.T, store sdk.Storage, r sdk.Replication, dir string) *Broker {
	t.Helper()
	opts := Options{Node: "n1", Address: "127.0.0.1:1", DataDir: dir, Topics: []Topic{{Name: "orders", Queues: 2}}}
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

// A commit a member sent before its group's deletion and that reaches the
// node after it (the race the gate leaves open) carries the generation the
// member learned from its heartbeat; it is refused, naming the group and
// both generations, and the group does not come back: on a single node, on
// a master (the plugin is handed no offset after the deletion) and on a
// raft-like node (the deletion applied through ReplicaCore). The member
// learns the new generation from its next heartbeat, and its commits are
// taken again; a commit without a generation is refused while the group
// has a live member and taken once it has none. The generation survives a
// restart.
func TestCommitSentBeforeDeleteDoesNotBringTheGroupBack(t *testing.T) {
	for _, kind := range []string{"single", "master", "log"} {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			var repl *eventRepl
			var r sdk.Replication
			var lr *logRepl
			switch kind {
			case "master":
				repl = &eventRepl{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}}
				r = repl
			case "log":
				lr = &logRepl{eventRepl: eventRepl{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}}}
				repl, r = &lr.eventRepl, lr
			}
			b := newGenBroker(t, newMemory(t), r, dir)
			if lr != nil {
				lr.b = b
			}
			// A raft-like node's fake takes no produce: its queue stays
			// empty, and the commits are of offset 0.
			at := func(off int64) int64 { return off }
			if kind == "log" {
				at = func(int64) int64 { return 0 }
			} else {
				produce(t, b, 0, "a", "b", "c")
			}
			join := func(b *Broker, leave bool) uint64 {
				t.Helper()
				resp, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "billing", Member: "m1", Topics: []string{"orders"}, Leave: leave})
				if err != nil {
					t.Fatalf("heartbeat: %v", err)
				}
				return resp.Generation
			}
			commit := func(b *Broker, gen uint64, off int64) error {
				return b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Generation: gen,
					Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: at(off)}}})
			}
			gen := join(b, false)
			if gen != 1 {
				t.Fatalf("a group never deleted is at generation %d, want 1", gen)
			}
			if err := commit(b, gen, 1); err != nil {
				t.Fatal(err)
			}
			join(b, true) // the member leaves; its last commit is on its way
			if _, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"}); err != nil {
				t.Fatalf("delete: %v", err)
			}
			// The commit sent before the deletion arrives now.
			err := commit(b, gen, 2)
			if !errors.Is(err, sdk.ErrStaleGeneration) || !strings.Contains(err.Error(), `group "billing"`) ||
				!strings.Contains(err.Error(), "generation 1") || !strings.Contains(err.Error(), "generation 2") {
				t.Errorf("a commit of generation 1 after the deletion: %v, want ErrStaleGeneration naming the group and generations 1 and 2", err)
			}
			if got := committed(t, b, "billing", 0); got != -1 {
				t.Errorf("after the deletion and the late commit the group's offset is %d, want -1 (the late commit brought the group back)", got)
			}
			if repl != nil {
				waitFor(t, "the deletion to reach the plugin", func() bool { _, ok := afterDelete(repl.got(), "billing"); return ok })
				if after, _ := afterDelete(repl.got(), "billing"); len(after) > 0 {
					t.Errorf("the plugin was handed %v after the group's deletion (all: %v)", after, repl.got())
				}
			}
			// A member that joins now learns generation 2 and commits.
			if gen2 := join(b, false); gen2 != 2 {
				t.Errorf("after one deletion a heartbeat says generation %d, want 2", gen2)
			}
			if err := commit(b, 2, 3); err != nil {
				t.Errorf("a commit of the new generation: %v", err)
			}
			if got := committed(t, b, "billing", 0); got != at(3) {
				t.Errorf("after a commit of the new generation the offset is %d, want %d", got, at(3))
			}
			// Without a generation (a simple consumer, the CLI, an
			// older client): refused while the group has a live member,
			// taken once it has none.
			if err := commit(b, 0, 2); !errors.Is(err, sdk.ErrStaleGeneration) || !strings.Contains(err.Error(), "carries no generation") ||
				!strings.Contains(err.Error(), "(m1)") {
				t.Errorf("a commit without a generation while m1 is live: %v, want ErrStaleGeneration naming the member", err)
			}
			if got := committed(t, b, "billing", 0); got != at(3) {
				t.Errorf("after a refused commit without a generation the offset is %d, want %d", got, at(3))
			}
			join(b, true)
			if err := commit(b, 0, 2); err != nil {
				t.Errorf("a commit without a generation to a group without live members: %v", err)
			}
			if got := committed(t, b, "billing", 0); got != at(2) {
				t.Errorf("after a commit without a generation to a group without members the offset is %d, want %d", got, at(2))
			}
			if kind != "single" {
				return
			}
			// Restarted on the same data dir: still generation 2.
			b2 := newGenBroker(t, newMemory(t), nil, dir)
			produce(t, b2, 0, "a", "b", "c")
			if g := join(b2, false); g != 2 {
				t.Errorf("after a restart a heartbeat says generation %d, want 2", g)
			}
			if err := commit(b2, 1, 1); !errors.Is(err, sdk.ErrStaleGeneration) {
				t.Errorf("after a restart a commit of generation 1: %v, want ErrStaleGeneration", err)
			}
		})
	}
}

// A replicated deletion gives the group the generation it carries, or keeps
// a higher one; one without a generation (an older master or log entry)
// leaves it.
func TestReplicatedDeletionRaisesTheGeneration(t *testing.T) {
	ctx := context.Background()
	b := newGenBroker(t, newMemory(t), nil, t.TempDir())
	rc := b.ReplicaCore()
	for _, c := range []struct {
		gen, want uint64
	}{{0, 1}, {3, 3}, {2, 3}, {0, 3}, {4, 4}} {
		if err := rc.DeleteGroupOffsets(ctx, "billing", c.gen); err != nil {
			t.Fatal(err)
		}
		got, err := b.gens.get("billing")
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("after a replicated deletion with generation %d the group is at %d, want %d", c.gen, got, c.want)
		}
	}
}

// group-generations.json keeps the generations of the groups deleted last,
// up to its bound: deleting more groups than that through the broker drops
// the one deleted longest ago (it is at generation 1 again), keeps the
// others with their generations, and a restart reads the same table back.
// A group deleted again moves to the end of the order. A file written
// before the bound (no order) is read, its groups taken in name order.
// Control: with a bound above the number of groups deleted, every one stays
// in the file (the check of the file's size would fail without the bound).
func TestGenerationsFileIsBounded(t *testing.T) {
	ctx := context.Background()
	const bound, groups = 5, 8
	run := func(t *testing.T, limit int) (file generationsFile, b *Broker, dir string) {
		dir = t.TempDir()
		b = newGenBroker(t, newMemory(t), nil, dir)
		b.gens.max = limit
		for i := range groups {
			g := fmt.Sprintf("g%d", i)
			if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: g, Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: g}); err != nil {
				t.Fatalf("delete %s: %v", g, err)
			}
		}
		// g5 deleted again: generation 3, last in the order.
		if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "g5", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "g5"}); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, GenerationsFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &file); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		return file, b, dir
	}
	t.Run("bounded", func(t *testing.T) {
		file, b, dir := run(t, bound)
		want := []string{"g3", "g4", "g6", "g7", "g5"}
		if len(file.Groups) != bound || !slices.Equal(file.Order, want) {
			t.Fatalf("after %d groups deleted with a bound of %d the file holds %v in order %v, want %d groups in order %v", groups, bound, file.Groups, file.Order, bound, want)
		}
		if file.Groups["g5"] != 3 || file.Groups["g7"] != 2 {
			t.Errorf("generations %v: want g5 at 3 (deleted twice), g7 at 2", file.Groups)
		}
		for _, c := range []struct {
			group string
			gen   uint64
		}{{"g0", 1}, {"g2", 1}, {"g3", 2}, {"g5", 3}} {
			if got, _ := b.gens.get(c.group); got != c.gen {
				t.Errorf("%s at generation %d, want %d", c.group, got, c.gen)
			}
		}
		// Read back after a restart: the same table, still bounded.
		b2 := newGenBroker(t, newMemory(t), nil, dir)
		b2.gens.max = bound
		for _, g := range want {
			if got, _ := b2.gens.get(g); got != file.Groups[g] {
				t.Errorf("after a restart %s is at generation %d, want %d", g, got, file.Groups[g])
			}
		}
		if err := b2.gens.raise("g9", 2); err != nil {
			t.Fatal(err)
		}
		if got, _ := b2.gens.get("g3"); got != 1 {
			t.Errorf("after one more deletion past the bound, the oldest (g3) is at %d, want 1 (dropped)", got)
		}
	})
	t.Run("control: no bound", func(t *testing.T) {
		file, _, _ := run(t, 1<<30)
		if len(file.Groups) != groups {
			t.Errorf("with a bound above %d the file holds %d groups, want all %d (the check above could not fail)", groups, len(file.Groups), groups)
		}
	})
	t.Run("file without order", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, GenerationsFile), []byte(`{"groups":{"b":2,"a":4,"c":3}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		g := &groupGens{dir: dir, max: 3}
		if err := g.raise("d", 2); err != nil {
			t.Fatal(err)
		}
		for grp, want := range map[string]uint64{"a": 1, "b": 2, "c": 3, "d": 2} {
			if got, _ := g.get(grp); got != want {
				t.Errorf("%s at %d, want %d (a dropped first: the oldest in name order)", grp, got, want)
			}
		}
	})
}

// On a raft follower a deletion applied from the log waits for the commits
// of the follower's own clients under way: a commit checked against the
// group's old generation just before the deletion arrived, and held in the
// store, is stored before the deletion, which then removes it, so the
// follower does not keep the deleted group's offsets (the leader refuses
// the commit's forward as stale). A commit arriving while the deletion
// waits is refused. (Negative control, run by hand: with the gate taken
// out of replicaCore.DeleteGroupOffsets the deletion returns at once and
// the held commit then leaves offset 0 in the store.)
func TestReplicatedDeletionWaitsForFollowerCommit(t *testing.T) {
	ctx := context.Background()
	store := &heldStore{Store: newMemory(t)}
	lr := &logRepl{eventRepl: eventRepl{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}}}
	b := New(Options{Node: "n2", Address: "127.0.0.1:1", DataDir: t.TempDir(), Topics: []Topic{{Name: "orders", Queues: 2}},
		Role: sdk.RoleFollower, Replication: replSource{lr}}, newSource(store))
	b.Start()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(cctx); err != nil {
			t.Error(err)
		}
	})
	lr.b = b
	if err := b.ReplicaCore().CommitOffsets(ctx, "billing", []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}); err != nil {
		t.Fatal(err)
	}
	entered, release := store.arm("billing")
	commitErr := make(chan error, 1)
	go func() {
		commitErr <- b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Generation: 1,
			Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}})
	}()
	<-entered
	delErr := make(chan error, 1)
	go func() { delErr <- b.ReplicaCore().DeleteGroupOffsets(ctx, "billing", 2) }()
	returned := false
	var early error
	waitFor(t, "the replicated deletion to wait for the commit or to return", func() bool {
		select {
		case early = <-delErr:
			returned = true
			return true
		default:
			return b.gates.waiting("billing")
		}
	})
	if returned {
		t.Errorf("the replicated deletion returned (%v) while a commit of the follower's client was still in flight", early)
	} else {
		err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Generation: 1, Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}})
		if !errors.Is(err, sdk.ErrUnavailable) || !strings.Contains(err.Error(), "is being deleted") {
			t.Errorf("a commit while the replicated deletion waits: %v, want unavailable, being deleted", err)
		}
	}
	close(release)
	if err := <-commitErr; err != nil {
		t.Errorf("the held commit: %v", err)
	}
	if !returned {
		if err := <-delErr; err != nil {
			t.Fatalf("the replicated deletion: %v", err)
		}
	}
	if got := committed(t, b, "billing", 0); got != -1 {
		t.Errorf("after the replicated deletion the follower holds offset %d of the deleted group, want none (-1)", got)
	}
}
