package masterslave_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/engine"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
	"github.com/ferrymq/ferry/plugins/replication/masterslave"
)

type node struct {
	cfg   *config.Pipeline
	eng   *engine.Engine
	repl  string // replication address
	addr  string // broker address
	count int
}

// pipeline is a node of a master–slave pair, plugins in-process.
func pipeline(t *testing.T, id, role, mode, dir, listen, brokerAddr string, peers []string, extra map[string]any) *config.Pipeline {
	t.Helper()
	cfg := config.Default()
	cfg.Name = "ms"
	cfg.Node.ID, cfg.Node.Role, cfg.Node.DataDir = id, role, dir
	cfg.Plugins.Mode = "inprocess"
	cfg.Plugins.Storage = config.PluginRef{Type: "memory"}
	cfg.Plugins.Transport = config.PluginRef{Type: "grpc", Config: map[string]any{"listen": brokerAddr}}
	rc := map[string]any{"listen": listen, "peers": peers}
	for k, v := range extra {
		rc[k] = v
	}
	cfg.Plugins.Replication = config.PluginRef{Type: mode, Config: rc}
	cfg.Topics = []config.Topic{{Name: "orders", Queues: 2}}
	return &cfg
}

func startEngine(t *testing.T, cfg *config.Pipeline) *engine.Engine {
	t.Helper()
	e, err := engine.Start(context.Background(), cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
		Logger: hclog.New(&hclog.LoggerOptions{Name: cfg.Node.ID, Level: hclog.Warn, Output: testWriter{t}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func closeEngine(t *testing.T, e *engine.Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Logf("close: %v", err)
	}
}

func link(t *testing.T, addr string) ferryv1.ReplicaLinkClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return ferryv1.NewReplicaLinkClient(cc)
}

// waitFor polls cond every 20 ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func produce(t *testing.T, c *client.Client, n int, prefix string) []ferryv1.Status {
	t.Helper()
	p := c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second})
	var out []ferryv1.Status
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r, err := p.SendSync(ctx, client.Message{Topic: "orders", Key: fmt.Sprintf("%s-%d", prefix, i), Body: []byte("x")})
		cancel()
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		out = append(out, r.Status)
	}
	return out
}

func ends(t *testing.T, addr string) int64 {
	t.Helper()
	st, err := link(t, addr).Status(context.Background(), &ferryv1.ReplicationStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	for _, o := range st.Offsets {
		n += o.End
	}
	return n
}

func TestSyncMasterSlavePromote(t *testing.T) {
	mRepl, sRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	mAddr, sAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	opts := map[string]any{"timeout": "2s"}
	master := startEngine(t, pipeline(t, "m", "master", "sync", t.TempDir(), mRepl, mAddr, []string{sRepl}, opts))
	masterClosed := false
	defer func() {
		if !masterClosed {
			closeEngine(t, master)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Without its slave, a sync master never answers OK.
	c, err := client.Dial(ctx, mAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if st := produce(t, c, 1, "early"); st[0] != ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE {
		t.Fatalf("no slave: status %v, want REPLICA_NOT_AVAILABLE", st[0])
	}

	slave := startEngine(t, pipeline(t, "s", "slave", "sync", t.TempDir(), sRepl, sAddr, []string{mRepl}, opts))
	defer closeEngine(t, slave)
	// The slave catches up with what the master stored before it came.
	waitFor(t, 20*time.Second, "slave caught up", func() bool { return ends(t, sRepl) == 1 })
	for i, st := range produce(t, c, 50, "m") {
		if st != ferryv1.Status_STATUS_OK {
			t.Fatalf("message %d: status %v", i, st)
		}
	}
	if n := ends(t, sRepl); n != 51 {
		t.Fatalf("slave holds %d messages after 50 OK acks, want 51", n)
	}
	// A slave rejects produce and names its master.
	sc, err := client.Dial(ctx, sAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	md, err := sc.Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 2 || md.Brokers[1].Address != mAddr {
		t.Fatalf("slave metadata %v", md)
	}
	// Promotion is refused while the master is up.
	if _, err := link(t, sRepl).Promote(ctx, &ferryv1.PromoteRequest{}); err == nil || !strings.Contains(err.Error(), "reachable") {
		t.Fatalf("promote with a live master: %v", err)
	}
	closeEngine(t, master)
	masterClosed = true
	waitFor(t, 10*time.Second, "slave sees its master gone", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && !st.LeaderConnected
	})
	// Consumers may read from the slave while the master is down.
	bc, err := grpc.NewClient(sAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	fetched := 0
	for q := range int32(2) {
		fr, err := ferryv1.NewBrokerClient(bc).Fetch(ctx, &ferryv1.FetchRequest{Topic: "orders", Positions: []*ferryv1.FetchPosition{{Queue: q}}, MaxMessages: 1000, MaxWaitNanos: int64(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		fetched += len(fr.Messages)
	}
	if fetched != 51 {
		t.Fatalf("fetched %d messages from the slave with its master down, want 51", fetched)
	}
	resp, err := link(t, sRepl).Promote(ctx, &ferryv1.PromoteRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(resp.Detail)
	waitFor(t, 10*time.Second, "new master takes produce", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && st.Role == sdk.RoleMaster
	})
	// Its only slave is gone: sync answers REPLICA_NOT_AVAILABLE, not OK.
	c2, err := client.Dial(ctx, sAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	waitFor(t, 10*time.Second, "produce accepted", func() bool {
		p := c2.NewProducer(client.ProducerOptions{Timeout: 5 * time.Second})
		r, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: []byte("x")})
		return err == nil && r.Status == ferryv1.Status_STATUS_REPLICA_NOT_AVAILABLE
	})
}

// A slave whose log is longer than its master's (a former master, say) is
// refused, shown as diverged, and never counts toward a sync ack.
func TestDivergedSlaveRefused(t *testing.T) {
	aRepl, bRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	aAddr, bAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	bDir := t.TempDir()
	opts := map[string]any{"timeout": "1s"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// b, alone as a master, stores 10 messages (not replicated).
	bCfg := pipeline(t, "b", "master", "sync", bDir, bRepl, bAddr, nil, opts)
	bCfg.Plugins.Storage = config.PluginRef{Type: "file", Config: map[string]any{"flush": "sync"}}
	b := startEngine(t, bCfg)
	bc, err := client.Dial(ctx, bAddr)
	if err != nil {
		t.Fatal(err)
	}
	produce(t, bc, 10, "b")
	bc.Close()
	closeEngine(t, b)

	a := startEngine(t, pipeline(t, "a", "master", "sync", t.TempDir(), aRepl, aAddr, []string{bRepl}, opts))
	defer closeEngine(t, a)
	ac, err := client.Dial(ctx, aAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	produce(t, ac, 2, "a")

	// b comes back as a's slave with 10 messages where a has 2.
	bCfg = pipeline(t, "b", "slave", "sync", bDir, bRepl, bAddr, []string{aRepl}, opts)
	bCfg.Plugins.Storage = config.PluginRef{Type: "file", Config: map[string]any{"flush": "sync"}}
	b = startEngine(t, bCfg)
	defer closeEngine(t, b)
	waitFor(t, 20*time.Second, "a lists b as diverged", func() bool {
		st, err := link(t, aRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		if err != nil {
			return false
		}
		for _, r := range st.Replicas {
			if r.Node == "b" && r.Diverged && !r.Connected {
				t.Log(r.Detail)
				return true
			}
		}
		return false
	})
	for i, st := range produce(t, ac, 3, "after") {
		if st == ferryv1.Status_STATUS_OK {
			t.Fatalf("message %d acked OK with only a diverged slave", i)
		}
	}
	if st, _ := link(t, bRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{}); st.LeaderConnected {
		t.Fatal("the diverged slave is linked")
	}
}

// A slave that was away while the master stored more than its in-memory
// tail catches up from the master's storage, and a restarted slave resumes
// from its own ends.
func TestSlaveCatchesUpAfterAbsence(t *testing.T) {
	defer masterslave.SetTailMessages(8)()
	mRepl, sRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	mAddr, sAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	sDir := t.TempDir()
	opts := map[string]any{"timeout": "1s"}
	fileStore := func(cfg *config.Pipeline) *config.Pipeline {
		cfg.Plugins.Storage = config.PluginRef{Type: "file", Config: map[string]any{"flush": "sync"}}
		return cfg
	}
	master := startEngine(t, fileStore(pipeline(t, "m", "master", "async", t.TempDir(), mRepl, mAddr, []string{sRepl}, opts)))
	defer closeEngine(t, master)
	slave := startEngine(t, fileStore(pipeline(t, "s", "slave", "async", sDir, sRepl, sAddr, []string{mRepl}, opts)))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, mAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	produce(t, c, 30, "first")
	waitFor(t, 30*time.Second, "slave has the first 30", func() bool { return ends(t, sRepl) == 30 })
	closeEngine(t, slave)

	produce(t, c, 200, "away") // far more than the tail of 8 per queue
	slave = startEngine(t, fileStore(pipeline(t, "s", "slave", "async", sDir, sRepl, sAddr, []string{mRepl}, opts)))
	defer closeEngine(t, slave)
	waitFor(t, 30*time.Second, "slave caught up after its absence", func() bool { return ends(t, sRepl) == 230 })
	st, err := link(t, mRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Replicas) != 1 || st.Replicas[0].Diverged {
		t.Fatalf("master's replicas %v", st.Replicas)
	}
	waitFor(t, 10*time.Second, "lag 0", func() bool {
		st, err := link(t, mRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && len(st.Replicas) == 1 && st.Replicas[0].Lag == 0
	})
}

// A slave that does not announce group_deletions_version (one older than
// group deletion generations) is served, with a warning naming it in the
// master's status; a slave of this build gets none.
func TestMasterWarnsOfOlderSlave(t *testing.T) {
	aRepl, bRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	aAddr, bAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	opts := map[string]any{"timeout": "1s"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := startEngine(t, pipeline(t, "a", "master", "async", t.TempDir(), aRepl, aAddr, []string{bRepl}, opts))
	defer closeEngine(t, a)
	b := startEngine(t, pipeline(t, "b", "slave", "async", t.TempDir(), bRepl, bAddr, []string{aRepl}, opts))
	defer closeEngine(t, b)

	// The older slave: a Follow stream whose first frame has no version.
	stream, err := link(t, aRepl).Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ferryv1.FollowRequest{Node: "old", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("the master did not serve the older slave: %v", err)
	}
	var details map[string]string
	waitFor(t, 20*time.Second, "a lists both slaves as connected", func() bool {
		st, err := link(t, aRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		if err != nil {
			return false
		}
		details = map[string]string{}
		for _, r := range st.Replicas {
			if r.Connected {
				details[r.Node] = r.Detail
			}
		}
		_, okOld := details["old"]
		_, okB := details["b"]
		return okOld && okB
	})
	if d := details["old"]; !strings.Contains(d, `slave old predates group deletion generations`) || !strings.Contains(d, "upgrade it") {
		t.Errorf("the older slave's detail: %q, want a warning naming it", d)
	}
	if d := details["b"]; d != "" {
		t.Errorf("the current slave's detail: %q, want none", d)
	}
}
