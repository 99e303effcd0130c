package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// offRepl is a replication plugin that replicates offsets: it records each
// report as "group:topic/queue=offset,…" and fails while err is set.
type offRepl struct {
	fakeRepl
	omu     sync.Mutex
	reports []string
	err     error
}

func (f *offRepl) ReplicateOffsets(_ context.Context, group string, offs []*sdk.GroupOffset) error {
	f.omu.Lock()
	defer f.omu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.reports = append(f.reports, offsetsString(group, offs))
	return nil
}

func (f *offRepl) last(group string) string {
	f.omu.Lock()
	defer f.omu.Unlock()
	for i := len(f.reports) - 1; i >= 0; i-- {
		if strings.HasPrefix(f.reports[i], group+":") {
			return f.reports[i]
		}
	}
	return ""
}

func (f *offRepl) count() int {
	f.omu.Lock()
	defer f.omu.Unlock()
	return len(f.reports)
}

func offsetsString(group string, offs []*sdk.GroupOffset) string {
	var s []string
	for _, o := range offs {
		s = append(s, fmt.Sprintf("%s/%d=%d", o.Topic, o.Queue, o.Offset))
	}
	sort.Strings(s)
	return group + ":" + strings.Join(s, ",")
}

// genSource is a StorageSource whose plugin can be replaced (a restart).
type genSource struct {
	mu  sync.Mutex
	r   sdk.Replication
	gen uint64
}

func (s *genSource) Current() (sdk.Plugin, uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r, s.gen, nil
}
func (s *genSource) Next(ctx context.Context, _ uint64) (sdk.Plugin, uint64, error) {
	<-ctx.Done()
	return nil, 0, ctx.Err()
}
func (s *genSource) Broken(uint64) {}

func (s *genSource) replace(r sdk.Replication) {
	s.mu.Lock()
	s.r = r
	s.gen++
	s.mu.Unlock()
}

func commitGroup(t *testing.T, b *Broker, group string, q0, q1 int64) {
	t.Helper()
	// A client's commit must be within its queue's end: store messages up
	// to the offsets first (straight into the store: a slave takes no
	// produce).
	for q, want := range []int64{q0, q1} {
		err := b.storageCall(context.Background(), func(s sdk.Storage) error {
			o, err := s.GetOffsets(context.Background(), "", []*sdk.QueueRef{{Topic: "orders", Queue: int32(q)}})
			if err != nil {
				return err
			}
			var msgs []*sdk.Message
			for i := o[0].End; i < want; i++ {
				msgs = append(msgs, &sdk.Message{Topic: "orders", Queue: int32(q), Body: []byte("x")})
			}
			if len(msgs) == 0 {
				return nil
			}
			w, err := s.Append(context.Background(), msgs)
			if err == nil {
				_, err = w(context.Background())
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := b.CommitOffsets(context.Background(), &sdk.CommitOffsetsRequest{Group: group, Offsets: []*sdk.GroupOffset{
		{Topic: "orders", Queue: 0, Offset: q0}, {Topic: "orders", Queue: 1, Offset: q1}}})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func committedOffsets(t *testing.T, b *Broker, group string) string {
	t.Helper()
	r, err := b.GetOffsets(context.Background(), &sdk.GetOffsetsRequest{Group: group,
		Queues: []*sdk.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d %d", r.Offsets[0].Committed, r.Offsets[1].Committed)
}

// A master reports each commit to its plugin, latest per queue; a failing
// plugin never fails the commit and gets the offsets once it works again; a
// new plugin process gets every group's latest.
func TestCommitOffsetsReported(t *testing.T) {
	r := &offRepl{}
	src := &genSource{r: r, gen: 1}
	b := New(Options{Node: "n1", Role: sdk.RoleMaster, Topics: []Topic{{Name: "orders", Queues: 2}}, Replication: src}, newSource(newMemory(t)))
	b.Start()
	defer b.Close(context.Background())

	commitGroup(t, b, "g1", 3, 4)
	waitUntil(t, "g1 reported", func() bool { return r.last("g1") == "g1:orders/0=3,orders/1=4" })

	r.omu.Lock()
	r.err = errors.New("plugin trouble")
	r.omu.Unlock()
	commitGroup(t, b, "g2", 1, 2)
	commitGroup(t, b, "g1", 5, 4)
	if got := committedOffsets(t, b, "g1"); got != "5 4" {
		t.Fatalf("g1 committed %s while its report failed, want 5 4", got)
	}
	r.omu.Lock()
	r.err = nil
	r.omu.Unlock()
	waitUntil(t, "the failed reports retried", func() bool {
		return r.last("g1") == "g1:orders/0=5,orders/1=4" && r.last("g2") == "g2:orders/0=1,orders/1=2"
	})

	fresh := &offRepl{}
	src.replace(fresh)
	commitGroup(t, b, "g3", 7, 0)
	waitUntil(t, "every group sent to the new plugin", func() bool {
		return fresh.last("g1") == "g1:orders/0=5,orders/1=4" && fresh.last("g2") == "g2:orders/0=1,orders/1=2" &&
			fresh.last("g3") == "g3:orders/0=7,orders/1=0"
	})
}

// A slave does not report its consumers' commits, offsets stored through
// ReplicaCore.CommitOffsets are never reported back, and a plugin without
// OffsetReplication is not asked.
func TestCommitOffsetsNotReported(t *testing.T) {
	r := &offRepl{}
	b := newReplBroker(t, sdk.RoleSlave, r)
	commitGroup(t, b, "g", 1, 1)
	if err := b.ReplicaCore().CommitOffsets(context.Background(), "g", []*sdk.GroupOffset{{Topic: "orders", Queue: 1, Offset: 9}}); err != nil {
		t.Fatal(err)
	}
	if got := committedOffsets(t, b, "g"); got != "1 9" {
		t.Fatalf("committed %s, want 1 9", got)
	}
	if err := b.ReplicaCore().CommitOffsets(context.Background(), "g", []*sdk.GroupOffset{{Topic: "nope", Queue: 0, Offset: 1}}); !errors.Is(err, sdk.ErrNotFound) {
		t.Fatalf("unknown topic: %v", err)
	}

	m := newReplBroker(t, sdk.RoleMaster, r)
	if err := m.ReplicaCore().CommitOffsets(context.Background(), "g", []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 2}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := r.count(); n != 0 {
		t.Fatalf("%d reports, want none", n)
	}

	plain := newReplBroker(t, sdk.RoleMaster, &fakeRepl{status: 0})
	commitGroup(t, plain, "g", 1, 1)
	commitGroup(t, plain, "g", 2, 2)
	if got := committedOffsets(t, plain, "g"); got != "2 2" {
		t.Fatalf("committed %s, want 2 2", got)
	}
}
