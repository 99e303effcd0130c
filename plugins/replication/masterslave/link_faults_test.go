package masterslave_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// Sync replication through a proxy that cuts and delays the slave's link:
// nothing is acked OK while the link is cut, a delayed link slows acks but
// they stay OK, and the slave catches up once the link heals.
func TestSyncLinkCutAndDelayed(t *testing.T) {
	mRepl, sRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	mAddr, sAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	px := ferrytest.NewProxy(t, mRepl)
	opts := map[string]any{"timeout": "1s"}
	master := startEngine(t, pipeline(t, "m", "master", "sync", t.TempDir(), mRepl, mAddr, []string{sRepl}, opts))
	defer closeEngine(t, master)
	slave := startEngine(t, pipeline(t, "s", "slave", "sync", t.TempDir(), sRepl, sAddr, []string{px.Addr()}, opts))
	defer closeEngine(t, slave)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	waitFor(t, 30*time.Second, "slave linked through the proxy", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && st.LeaderConnected
	})
	c, err := client.Dial(ctx, mAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, st := range produce(t, c, 20, "before") {
		if st != ferryv1.Status_STATUS_OK {
			t.Fatalf("linked: message %d status %v", i, st)
		}
	}

	px.Cut()
	// While cut: REPLICA_TIMEOUT until the master drops the silent link,
	// then REPLICA_NOT_AVAILABLE at once. Never OK.
	sawNotAvailable := false
	deadline := time.Now().Add(30 * time.Second)
	for !sawNotAvailable && time.Now().Before(deadline) {
		for _, st := range produce(t, c, 1, "cut") {
			switch st {
			case ferryv1.Status_STATUS_OK:
				t.Fatal("acked OK while the only slave was cut off")
			case ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE:
				sawNotAvailable = true
			}
		}
	}
	if !sawNotAvailable {
		t.Fatal("never REPLICA_NOT_AVAILABLE while the slave was cut off")
	}

	// Healed but slow: every chunk waits 100 ms each way.
	px.SetDelay(100 * time.Millisecond)
	px.Heal()
	waitFor(t, 30*time.Second, "slave linked again", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && st.LeaderConnected
	})
	// The slave's view is not the master's: wait until the master counts
	// the slave as connected and caught up (what it stored while the link
	// was cut crossed the slow link first), or the first sync send may
	// find no replica available yet.
	waitFor(t, 60*time.Second, "master sees its slave connected and caught up", func() bool {
		st, err := link(t, mRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		if err != nil {
			return false
		}
		for _, r := range st.Replicas {
			if r.Connected && r.Lag == 0 {
				return true
			}
		}
		return false
	})
	start := time.Now()
	for i, st := range produce(t, c, 3, "slow") {
		if st != ferryv1.Status_STATUS_OK {
			t.Fatalf("delayed link: message %d status %v", i, st)
		}
	}
	if d := time.Since(start); d < 3*200*time.Millisecond {
		t.Fatalf("3 sync sends over a link delayed 100 ms each way took %s", d)
	}
	px.SetDelay(0)
	// The slave caught up with what was stored while it was cut off.
	want := ends(t, mRepl)
	waitFor(t, 30*time.Second, "slave caught up", func() bool { return ends(t, sRepl) == want })
}
