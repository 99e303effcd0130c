package broker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// The group calls against a broker on the memory store: a group is listed
// and described from its commits and its live members, a reset moves its
// committed offsets (refused while members live unless forced, and outside a
// queue's range), and a delete removes its offsets once no member lives.
func TestGroupAdminCalls(t *testing.T) {
	ctx := context.Background()
	b := newBroker(t, newSource(newMemory(t)))
	produce(t, b, 0, "a", "b", "c", "d")
	produce(t, b, 1, "e")
	if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 3}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "billing", Member: "m1", Topics: []string{"orders"},
		Queues: []*ferryv1.QueueRef{{Topic: "orders", Queue: 1}}}); err != nil {
		t.Fatal(err)
	}

	l, err := b.ListGroups(ctx, &sdk.ListGroupsRequest{})
	if err != nil || len(l.Groups) != 1 {
		t.Fatalf("ListGroups = %v, %v", l, err)
	}
	if g := l.Groups[0]; g.Name != "billing" || g.Members != 1 || strings.Join(g.Topics, ",") != "orders" || g.Lag != 1+1 {
		t.Errorf("ListGroups: %v, want billing, 1 member, orders, lag 2", g)
	}
	d, err := b.DescribeGroup(ctx, &sdk.DescribeGroupRequest{Group: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Members) != 1 || d.Members[0].Id != "m1" || len(d.Members[0].Queues) != 1 || d.Members[0].LastHeartbeatUnixNano == 0 {
		t.Errorf("members: %v", d.Members)
	}
	if len(d.Queues) != 2 || d.Queues[0].Committed != 3 || d.Queues[0].End != 4 || d.Queues[0].Lag != 1 ||
		d.Queues[1].Committed != -1 || d.Queues[1].Lag != 1 || d.Queues[1].Member != "m1" {
		t.Errorf("queues: %v", d.Queues)
	}
	if len(d.Internal) != 2 || d.Internal[0].Topic != "%RETRY%billing" || d.Internal[1].Topic != "%DLQ%billing" {
		t.Errorf("internal: %v", d.Internal)
	}

	reset := func(to ferryv1.ResetTo, off int64, force bool, queues ...int32) (*sdk.ResetOffsetsResponse, error) {
		return b.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "billing", Topic: "orders", To: to, Offset: off, Force: force, Queues: queues})
	}
	for _, c := range []struct {
		name string
		err  error
		is   error
		want string
	}{
		{"live members", second(reset(ferryv1.ResetTo_RESET_TO_EARLIEST, 0, false)), sdk.ErrInvalidArgument, `group "billing" has 1 live members (m1)`},
		{"past the end", second(reset(ferryv1.ResetTo_RESET_TO_OFFSET, 5, true, 0)), sdk.ErrInvalidArgument, `offset 5 is outside queue orders/0, which holds offsets 0 to 3`},
		{"unknown queue", second(reset(ferryv1.ResetTo_RESET_TO_LATEST, 0, true, 2)), sdk.ErrInvalidArgument, `topic "orders" has queues 0..1, got queue 2`},
		{"unknown group", second(b.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "nobody", Topic: "orders", To: ferryv1.ResetTo_RESET_TO_LATEST})), sdk.ErrNotFound, `unknown group "nobody"`},
		{"internal topic", second(b.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "billing", Topic: "%RETRY%billing", To: ferryv1.ResetTo_RESET_TO_LATEST, Force: true})), sdk.ErrInvalidArgument, `internal topic`},
		{"describe unknown", second(b.DescribeGroup(ctx, &sdk.DescribeGroupRequest{Group: "nobody"})), sdk.ErrNotFound, `unknown group`},
		{"delete live", second(b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"})), sdk.ErrInvalidArgument, `stop them before you delete it`},
	} {
		if !errors.Is(c.err, c.is) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want %v with %q", c.name, c.err, c.is, c.want)
		}
	}
	if _, err := b.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "billing", Topic: "nope", To: ferryv1.ResetTo_RESET_TO_LATEST, Force: true}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("reset of an unknown topic: %v", err)
	}

	r, err := reset(ferryv1.ResetTo_RESET_TO_OFFSET, 1, true, 0)
	if err != nil || len(r.Queues) != 1 || r.Queues[0].Previous != 3 || r.Queues[0].Committed != 1 {
		t.Fatalf("forced reset = %v, %v", r, err)
	}
	if got := committed(t, b, "billing", 0); got != 1 {
		t.Errorf("after the reset the group's offset is %d, want 1", got)
	}
	if r, err = reset(ferryv1.ResetTo_RESET_TO_LATEST, 0, true); err != nil || len(r.Queues) != 2 || r.Queues[1].Committed != 1 {
		t.Errorf("reset to latest = %v, %v", r, err)
	}

	// By time: before everything is each queue's start, after
	// everything its end; a dry run changes nothing.
	byTime := func(ts int64, dry bool) *sdk.ResetOffsetsResponse {
		t.Helper()
		r, err := b.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "billing", Topic: "orders", To: ferryv1.ResetTo_RESET_TO_TIME, TimestampUnixNano: ts, Force: true, DryRun: dry})
		if err != nil || len(r.Queues) != 2 {
			t.Fatalf("reset to time %d = %v, %v", ts, r, err)
		}
		return r
	}
	if r := byTime(0, false); r.Queues[0].Committed != 0 || r.Queues[1].Committed != 0 {
		t.Errorf("reset to a time before everything = %v, want 0 and 0", r.Queues)
	}
	if r := byTime(time.Now().Add(time.Hour).UnixNano(), true); r.Queues[0].Committed != 4 || r.Queues[1].Committed != 1 {
		t.Errorf("dry run of a reset to a time after everything = %v, want 4 and 1", r.Queues)
	}
	if got := committed(t, b, "billing", 0); got != 0 {
		t.Errorf("after a dry run the group's offset is %d, want 0", got)
	}

	if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "billing", Member: "m1", Leave: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"}); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, b, "billing", 0); got != -1 {
		t.Errorf("after the delete the group's offset is %d, want -1", got)
	}
	if l, err := b.ListGroups(ctx, &sdk.ListGroupsRequest{}); err != nil || len(l.Groups) != 0 {
		t.Errorf("ListGroups after the delete = %v, %v", l, err)
	}
	if _, err := b.DescribeGroup(ctx, &sdk.DescribeGroupRequest{Group: "billing"}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("DescribeGroup after the delete: %v", err)
	}

	rb := newReplBroker(t, sdk.RoleMaster, &fakeRepl{status: ferryv1.Status_STATUS_OK})
	if _, err := rb.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"}); !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "does not replicate group deletions") {
		t.Errorf("DeleteGroup on a node whose plugin does not replicate deletions: %v", err)
	}
	sb := newReplBroker(t, sdk.RoleSlave, &fakeRepl{status: ferryv1.Status_STATUS_OK})
	if _, err := sb.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "billing", Topic: "orders", To: ferryv1.ResetTo_RESET_TO_LATEST}); !errors.Is(err, sdk.ErrNotLeader) {
		t.Errorf("ResetOffsets on a slave: %v", err)
	}
}

// groupDeleter is a master–slave plugin that replicates group deletions,
// or announces that it does not (ReplicatesGroupDeletes, as the SDK's gRPC
// client does for a plugin whose status lacks the flag).
type groupDeleter struct {
	fakeRepl
	announce bool
	mu       sync.Mutex
	deleted  []string
}

func (g *groupDeleter) ReplicateGroupDelete(_ context.Context, group string, _ uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.deleted = append(g.deleted, group)
	return nil
}

func (g *groupDeleter) ReplicatesGroupDeletes() bool { return g.announce }

// On a master, a group is deleted here and the deletion handed to the
// plugin; a plugin that does not announce the capability is refused before
// anything is deleted; a live member refuses the delete unless forced; a
// slave refuses, naming its role.
func TestDeleteGroupReplicated(t *testing.T) {
	ctx := context.Background()
	for _, announce := range []bool{false, true} {
		g := &groupDeleter{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}, announce: announce}
		b := newReplBroker(t, sdk.RoleMaster, g)
		if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 0}}}); err != nil {
			t.Fatal(err)
		}
		_, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"})
		if !announce {
			if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "replicates_group_deletes") {
				t.Errorf("a plugin that does not announce group deletions: %v, want ErrUnsupported naming the flag", err)
			}
			if got := committed(t, b, "billing", 0); got != 0 {
				t.Errorf("after a refused delete the group's offset is %d, want 0 (kept)", got)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := committed(t, b, "billing", 0); got != -1 {
			t.Errorf("after the delete the group's offset is %d, want -1", got)
		}
		if !slices.Equal(g.deleted, []string{"billing"}) {
			t.Errorf("the plugin was handed deletions %v, want [billing]", g.deleted)
		}
		if _, err := b.Heartbeat(ctx, &sdk.HeartbeatRequest{Group: "live", Member: "m1", Topics: []string{"orders"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "live"}); !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), "force the delete") {
			t.Errorf("delete of a group with a live member: %v", err)
		}
		if _, err := b.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "live", Force: true}); err != nil {
			t.Errorf("forced delete of a group with a live member: %v", err)
		}
	}
	sb := newReplBroker(t, sdk.RoleSlave, &groupDeleter{fakeRepl: fakeRepl{status: ferryv1.Status_STATUS_OK}, announce: true})
	if _, err := sb.DeleteGroup(ctx, &sdk.DeleteGroupRequest{Group: "billing"}); !errors.Is(err, sdk.ErrNotLeader) {
		t.Errorf("DeleteGroup on a slave: %v", err)
	}
}

// plainStore hides the memory store's optional capabilities.
type plainStore struct{ sdk.Storage }

// A store that cannot seek by time: a reset by time is refused, saying so.
func TestResetByTimeWithoutTimeSeeker(t *testing.T) {
	ctx := context.Background()
	b := newBroker(t, newSource(plainStore{newMemory(t)}))
	produce(t, b, 0, "a")
	if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, err := b.ResetOffsets(ctx, &sdk.ResetOffsetsRequest{Group: "billing", Topic: "orders", To: ferryv1.ResetTo_RESET_TO_TIME, TimestampUnixNano: 1})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "the store cannot seek by time") {
		t.Errorf("reset by time on a store without sdk.TimeSeeker: %v", err)
	}
}

func second[T any](_ T, err error) error { return err }

func committed(t *testing.T, b *Broker, group string, queue int32) int64 {
	t.Helper()
	r, err := b.GetOffsets(context.Background(), &sdk.GetOffsetsRequest{Group: group, Queues: []*sdk.QueueRef{{Topic: "orders", Queue: queue}}})
	if err != nil {
		t.Fatal(err)
	}
	return r.Offsets[0].Committed
}
