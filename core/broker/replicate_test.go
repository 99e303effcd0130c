package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// fakeRepl is a replication plugin the test controls: it records what the
// broker hands it and answers with status.
type fakeRepl struct {
	mu      sync.Mutex
	batches [][]string // "id@queue/offset"
	status  sdk.Status
	err     error
	hold    chan struct{} // when set, answers wait for it
}

func (f *fakeRepl) Validate([]byte) sdk.Problems                              { return nil }
func (f *fakeRepl) Configure(context.Context, []byte, *sdk.Environment) error { return nil }
func (f *fakeRepl) Close() error                                              { return nil }
func (f *fakeRepl) Serve(ctx context.Context, _ sdk.ReplicaCore) error        { <-ctx.Done(); return nil }
func (f *fakeRepl) Status(context.Context) (*sdk.ReplicationStatus, error) {
	return &sdk.ReplicationStatus{}, nil
}
func (f *fakeRepl) Replicate(_ context.Context, msgs []*sdk.Message) (sdk.ReplicateWait, error) {
	var b []string
	for _, m := range msgs {
		b = append(b, fmt.Sprintf("%s@%d/%d", m.Id, m.Queue, m.Offset))
	}
	f.mu.Lock()
	f.batches = append(f.batches, b)
	st, err, hold := f.status, f.err, f.hold
	f.mu.Unlock()
	return func(ctx context.Context) (sdk.Status, []int64, error) {
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return 0, nil, ctx.Err()
			}
		}
		return st, nil, err
	}, nil
}

// replSource is a StorageSource with one fixed replication plugin.
type replSource struct{ r sdk.Replication }

func (s replSource) Current() (sdk.Plugin, uint64, <-chan struct{}) { return s.r, 1, nil }
func (s replSource) Next(ctx context.Context, _ uint64) (sdk.Plugin, uint64, error) {
	<-ctx.Done()
	return nil, 0, ctx.Err()
}
func (s replSource) Broken(uint64) {}

func newReplBroker(t *testing.T, role string, r sdk.Replication) *Broker {
	t.Helper()
	b := New(Options{Node: "n1", Address: "127.0.0.1:1", Role: role, Topics: []Topic{{Name: "orders", Queues: 2}},
		Replication: replSource{r}}, newSource(newMemory(t)))
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

func produceStatus(t *testing.T, b *Broker, queue int32, ids ...string) (*sdk.ProduceResponse, error) {
	t.Helper()
	req := &sdk.ProduceRequest{}
	for _, id := range ids {
		req.Messages = append(req.Messages, &sdk.Message{Id: id, Topic: "orders", Queue: queue, Body: []byte(id)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return b.Produce(ctx, req)
}

// A master hands each stored batch, offsets set, to the plugin, and the
// producer gets the weaker of the flush and replication statuses.
func TestReplicateHookStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status sdk.Status
		err    error
		want   sdk.Status
	}{
		{"ok", ferryv1.Status_STATUS_OK, nil, ferryv1.Status_STATUS_OK},
		{"timeout", ferryv1.Status_STATUS_REPLICA_TIMEOUT, nil, ferryv1.Status_STATUS_REPLICA_TIMEOUT},
		{"not available", ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE, nil, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE},
		{"timeout error", 0, sdk.ErrReplicaTimeout, ferryv1.Status_STATUS_REPLICA_TIMEOUT},
		{"plugin gone", 0, sdk.ErrUnavailable, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE},
		{"deposed", 0, sdk.ErrNotLeader, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE},
		{"no status", 0, nil, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeRepl{status: tc.status, err: tc.err}
			b := newReplBroker(t, sdk.RoleMaster, f)
			resp, err := produceStatus(t, b, 1, "a", "b")
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.want {
				t.Fatalf("status %v, want %v", resp.Status, tc.want)
			}
			resp, err = produceStatus(t, b, 1, "c")
			if err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if got := fmt.Sprint(f.batches); got != "[[a@1/0 b@1/1] [c@1/2]]" {
				t.Fatalf("replicated %s", got)
			}
		})
	}
}

func TestWorseStatusNeverUpgrades(t *testing.T) {
	ok, ft, rt, rna := ferryv1.Status_STATUS_OK, ferryv1.Status_STATUS_FLUSH_TIMEOUT, ferryv1.Status_STATUS_REPLICA_TIMEOUT, ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE
	for _, c := range [][3]sdk.Status{{ok, ok, ok}, {ft, ok, ft}, {ok, rt, rt}, {ft, rt, rt}, {rna, ok, rna}, {ft, rna, rna}} {
		if got := worse(c[0], c[1]); got != c[2] {
			t.Errorf("worse(%v, %v) = %v, want %v", c[0], c[1], got, c[2])
		}
	}
}

// Batches answered by the plugin out of order still reach it in order, and
// the producer waits for the plugin.
func TestReplicateWaitsForPlugin(t *testing.T) {
	f := &fakeRepl{status: ferryv1.Status_STATUS_OK, hold: make(chan struct{})}
	b := newReplBroker(t, sdk.RoleMaster, f)
	done := make(chan error, 1)
	go func() {
		_, err := produceStatus(t, b, 0, "x")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("produce answered (%v) before the replication level was met", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(f.hold)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("produce not answered after replication")
	}
}

// A slave rejects produce with ErrNotLeader, names its master in metadata,
// and applies its master's messages only at the master's offsets.
func TestSlaveRoleAndApply(t *testing.T) {
	f := &fakeRepl{status: ferryv1.Status_STATUS_OK}
	b := newReplBroker(t, sdk.RoleSlave, f)
	core := b.ReplicaCore()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := core.SetRole(ctx, &sdk.SetRoleRequest{Role: sdk.RoleSlave, LeaderNode: "m", LeaderAddress: "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := produceStatus(t, b, 0, "p"); !errors.Is(err, sdk.ErrNotLeader) {
		t.Fatalf("produce on a slave: %v, want ErrNotLeader", err)
	}
	md, err := b.Metadata(ctx, &sdk.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 2 || md.Brokers[1].Address != "127.0.0.1:2" || md.Topics[0].Leaders[0] != 1 {
		t.Fatalf("metadata %v", md)
	}
	apply := func(off int64, id string) error {
		w, err := core.Apply(ctx, []*sdk.Message{{Id: id, Topic: "orders", Queue: 0, Offset: off, Body: []byte(id)}})
		if err != nil {
			return err
		}
		_, err = w(ctx)
		return err
	}
	if err := apply(0, "m0"); err != nil {
		t.Fatal(err)
	}
	if err := apply(1, "m1"); err != nil {
		t.Fatal(err)
	}
	if err := apply(5, "m5"); !errors.Is(err, sdk.ErrCorrupt) {
		t.Fatalf("apply at a gap: %v, want ErrCorrupt", err)
	}
	f.mu.Lock()
	n := len(f.batches)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("a slave replicated %d batches", n)
	}
	info, err := core.NodeInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Role != sdk.RoleSlave || len(info.Offsets) != 2 {
		t.Fatalf("node info %v", info)
	}
	// Promotion: the node takes produce at once.
	if err := core.SetRole(ctx, &sdk.SetRoleRequest{Role: sdk.RoleMaster}); err != nil {
		t.Fatal(err)
	}
	if _, err := produceStatus(t, b, 1, "after"); err != nil {
		t.Fatal(err)
	}
}
