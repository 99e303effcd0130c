package masterslave_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

func brokerRPC(t *testing.T, addr string) ferryv1.BrokerClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return ferryv1.NewBrokerClient(cc)
}

// committed reads a group's committed offsets of orders/0 and orders/1, and
// the queues' ends, as "c0 c1 / e0 e1".
func committed(t *testing.T, rpc ferryv1.BrokerClient, group string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Group: group,
		Queues: []*ferryv1.QueueRef{{Topic: "orders", Queue: 0}, {Topic: "orders", Queue: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d %d / %d %d", r.Offsets[0].Committed, r.Offsets[1].Committed, r.Offsets[0].End, r.Offsets[1].End)
}

func commit(t *testing.T, rpc ferryv1.BrokerClient, group string, q0, q1 int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := rpc.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: group, Offsets: []*ferryv1.GroupOffset{
		{Topic: "orders", Queue: 0, Offset: q0}, {Topic: "orders", Queue: 1, Offset: q1}}}); err != nil {
		t.Fatal(err)
	}
}

// Groups' offsets committed on the master reach its slave: those committed
// before the slave connected (sent when the link opens), then each new
// commit, a rewind included (the master's offsets rule); a client's offset
// beyond the queue's end is refused by the master (so none reaches the
// slave), and a promoted slave hands on what it stored.
func TestGroupOffsetsReplicated(t *testing.T) {
	mRepl, sRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	mAddr, sAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := startEngine(t, pipeline(t, "m", "master", "async", t.TempDir(), mRepl, mAddr, []string{sRepl}, nil))
	masterClosed := false
	defer func() {
		if !masterClosed {
			closeEngine(t, master)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, mAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produce(t, c, 40, "m")
	m := brokerRPC(t, mAddr)
	ends := committed(t, m, "none")[len("-1 -1 / "):]
	commit(t, m, "g1", 3, 4)
	commit(t, m, "g2", 1, 0)

	slave := startEngine(t, pipeline(t, "s", "slave", "async", t.TempDir(), sRepl, sAddr, []string{mRepl}, nil))
	defer closeEngine(t, slave)
	s := brokerRPC(t, sAddr)
	wait := func(group, want string) {
		t.Helper()
		got := committed(t, s, group)
		for deadline := time.Now().Add(10 * time.Second); got != want; got = committed(t, s, group) {
			if time.Now().After(deadline) {
				t.Fatalf("slave's %s: committed / ends %s, want %s", group, got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Known before the slave came.
	wait("g1", "3 4 / "+ends)
	wait("g2", "1 0 / "+ends)
	// Live, and a rewind.
	commit(t, m, "g1", 10, 12)
	wait("g1", "10 12 / "+ends)
	commit(t, m, "g1", 2, 12)
	wait("g1", "2 12 / "+ends)
	// Beyond the queue's end: the master refuses it (issue 13.4), so a
	// slave never gets an offset beyond its master's log from a client;
	// one at the end reaches it.
	var e0 int64
	if _, err := fmt.Sscanf(ends, "%d", &e0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CommitOffsets(ctx, &ferryv1.CommitOffsetsRequest{Group: "g3", Offsets: []*ferryv1.GroupOffset{
		{Topic: "orders", Queue: 0, Offset: e0 + 30}, {Topic: "orders", Queue: 1, Offset: 5}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("commit beyond the end on the master: %v, want InvalidArgument", err)
	}
	commit(t, m, "g3", e0, 5)
	wait("g3", fmt.Sprintf("%d 5 / %s", e0, ends))

	// Promoted, the slave ships what it stored (not its old master's
	// offset beyond its log) to a new slave, whose log grows past it.
	closeEngine(t, master)
	masterClosed = true
	waitFor(t, 10*time.Second, "slave sees its master gone", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && !st.LeaderConnected
	})
	if _, err := link(t, sRepl).Promote(ctx, &ferryv1.PromoteRequest{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "promoted", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && st.Role == "master"
	})
	sc, err := client.Dial(ctx, sAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	produce(t, sc, 120, "s")
	newEnds := committed(t, s, "none")[len("-1 -1 / "):]
	var n0 int64
	if _, err := fmt.Sscanf(newEnds, "%d", &n0); err != nil || n0 <= e0 {
		t.Fatalf("queue 0 ends at %d after producing on the promoted slave, want beyond %d (%v)", n0, e0, err)
	}
	tRepl, tAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	third := startEngine(t, pipeline(t, "t", "slave", "async", t.TempDir(), tRepl, tAddr, []string{sRepl}, nil))
	defer closeEngine(t, third)
	s = brokerRPC(t, tAddr)
	wait("g3", fmt.Sprintf("%d 5 / %s", e0, newEnds))
	wait("g1", "2 12 / "+newEnds)
}
