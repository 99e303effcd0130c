package raft_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/builtin"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

type member struct {
	id, broker, raft, admin string
	dir                     string
	eng                     *engine.Engine
	extra                   map[string]any // more raft config
}

func group(t *testing.T, n int) []*member {
	var ms []*member
	for i := range n {
		ms = append(ms, &member{id: fmt.Sprintf("n%d", i+1), broker: ferrytest.FreeAddr(t), raft: ferrytest.FreeAddr(t), admin: ferrytest.FreeAddr(t), dir: t.TempDir()})
	}
	return ms
}

func (m *member) start(t *testing.T, all []*member) {
	t.Helper()
	var peers []any
	for _, o := range all {
		peers = append(peers, map[string]any{"id": o.id, "raft": o.raft, "broker": o.broker, "admin": o.admin})
	}
	cfg := config.Default()
	cfg.Name = "rg"
	cfg.Node.ID, cfg.Node.DataDir = m.id, m.dir
	cfg.Plugins.Mode = "inprocess"
	cfg.Plugins.Storage = config.PluginRef{Type: "file", Config: map[string]any{"flush": "sync"}}
	cfg.Plugins.Transport = config.PluginRef{Type: "grpc", Config: map[string]any{"listen": m.broker}}
	// Relaxed timing: the race detector on a loaded 2-core machine can
	// hold a leader's heartbeats past 500 ms.
	cfg.Plugins.Replication = config.PluginRef{Type: "raft", Config: map[string]any{"listen": m.raft, "admin": m.admin, "peers": peers,
		"heartbeat_timeout": "1s", "election_timeout": "1s", "leader_lease_timeout": "500ms"}}
	maps.Copy(cfg.Plugins.Replication.Config, m.extra)
	cfg.Topics = []config.Topic{{Name: "orders", Queues: 2}}
	e, err := engine.Start(context.Background(), &cfg, engine.Options{
		Registry: builtin.Registry(), PluginExe: ferrytest.Binary(t),
		Logger: hclog.New(&hclog.LoggerOptions{Name: m.id, Level: hclog.Warn, Output: testWriter{t}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.eng = e
}

func (m *member) stop(t *testing.T) {
	if m.eng == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := m.eng.Close(ctx); err != nil {
		t.Logf("close %s: %v", m.id, err)
	}
	m.eng = nil
}

// statusPeers, when set, secures status calls (a group with a cluster
// secret); nil: plaintext.
var statusPeers *security.Peers

func status(addr string) (*ferryv1.ReplicationStatusResponse, error) {
	creds := insecure.NewCredentials()
	if statusPeers != nil {
		creds = statusPeers.GRPC()
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return ferryv1.NewReplicaLinkClient(cc).Status(ctx, &ferryv1.ReplicationStatusRequest{})
}

func stored(st *ferryv1.ReplicationStatusResponse) int64 {
	n := int64(0)
	for _, o := range st.Offsets {
		n += o.End
	}
	return n
}

// leader waits for one running member to lead, and returns it.
func leader(t *testing.T, ms []*member) *member {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if m.eng == nil {
				continue
			}
			if st, err := status(m.admin); err == nil && st.Role == sdk.RoleLeader {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within 30s")
	return nil
}

// send gets n messages acked OK by the group's leader. On a loaded machine
// leadership may move meanwhile: a failed send (outcome unknown) is not
// counted, and the next goes to whichever node leads then.
func send(t *testing.T, ms []*member, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for ok := 0; ok < n; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d sends acked OK within 60s", ok, n)
		}
		l := leader(t, ms)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := client.Dial(ctx, l.broker)
		if err != nil {
			cancel()
			continue
		}
		p := c.NewProducer(client.ProducerOptions{Timeout: 5 * time.Second, Retries: client.NoRetries})
		for ; ok < n; ok++ {
			r, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: []byte(fmt.Sprint(ok))})
			if err != nil {
				t.Logf("send to %s: %v (leadership moved?)", l.id, err)
				break
			}
			if r.Status != ferryv1.Status_STATUS_OK {
				t.Fatalf("send %d: status %v", ok, r.Status)
			}
		}
		c.Close()
		cancel()
	}
}

// converged waits until every running member stores the same number of
// messages, at least min, and returns it.
func converged(t *testing.T, ms []*member, min int64) int64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var counts []int64
		for _, m := range ms {
			if st, err := status(m.admin); err == nil {
				counts = append(counts, stored(st))
			}
		}
		if len(counts) == len(ms) && counts[0] >= min {
			same := true
			for _, c := range counts {
				same = same && c == counts[0]
			}
			if same {
				return counts[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("members hold %v messages, want the same, at least %d", counts, min)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// followerChecks: a follower names the leader in its metadata, the client
// follows it there, and the follower's broker itself refuses produce. It
// retries while leadership moves (a loaded machine).
func followerChecks(t *testing.T, ms []*member) error {
	l := leader(t, ms)
	var f *member
	for _, m := range ms {
		if m != l {
			f = m
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, f.broker)
	if err != nil {
		return err
	}
	defer c.Close()
	md, err := c.Metadata(ctx)
	if err != nil {
		return err
	}
	if len(md.Brokers) != 2 || md.Brokers[1].Address != l.broker || md.Topics[0].Leaders[0] != 1 {
		return fmt.Errorf("follower %s metadata %v, want leader %s", f.id, md, l.broker)
	}
	if r, err := c.NewProducer(client.ProducerOptions{}).SendSync(ctx, client.Message{Topic: "orders", Body: []byte("x")}); err != nil || r.Status != ferryv1.Status_STATUS_OK {
		return fmt.Errorf("send through follower %s: %v, %v", f.id, r, err)
	}
	_, err = f.eng.Broker().Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "direct", Topic: "orders", Body: []byte("x")}}})
	if !errors.Is(err, sdk.ErrNotLeader) {
		return fmt.Errorf("produce on follower %s: %v, want ErrNotLeader", f.id, err)
	}
	return nil
}

func TestRaftGroupCommitsAndFailsOver(t *testing.T) {
	ms := group(t, 3)
	for _, m := range ms {
		m.start(t, ms)
	}
	defer func() {
		for _, m := range ms {
			m.stop(t)
		}
	}()
	send(t, ms, 50)
	// Every node applied every committed entry to its own store.
	n := converged(t, ms, 50)
	var err error
	for range 10 {
		if err = followerChecks(t, ms); err == nil {
			break
		}
		t.Log(err)
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	// The leader goes; another is elected and takes produce.
	l := leader(t, ms)
	start := time.Now()
	l.stop(t)
	l2 := leader(t, ms)
	t.Logf("new leader %s after %s", l2.id, time.Since(start).Round(time.Millisecond))
	send(t, ms, 20)
	// The old leader comes back and catches up with the others.
	l.start(t, ms)
	converged(t, ms, n+21)
}

var restoredRE = regexp.MustCompile(`snapshots restored (\d+), (\d+) messages fetched`)

// A follower stopped while the leader snapshots and compacts its log past
// it is sent a snapshot when it comes back, fetches what it lacks from a
// peer, and ends with the same messages at the same offsets as the leader
// (in process, under the race detector; cmd/ferry has the kill -9 version).
//
// The group has a cluster secret: every raft link runs the handshake, so
// every request, the snapshot's InstallSnapshot and its data included,
// passes the check of the node id its link claimed (rpcguard.go).
func TestRaftFollowerRestoresSnapshot(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	peers, err := security.NewPeers(security.PeerLink{SecretFile: secret}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	statusPeers = peers
	defer func() { statusPeers = nil }()
	ms := group(t, 3)
	for _, m := range ms {
		m.extra = map[string]any{"trailing_logs": 5, "snapshot_threshold": 20, "snapshot_interval": "50ms", "secret_file": secret}
		m.start(t, ms)
	}
	defer func() {
		for _, m := range ms {
			m.stop(t)
		}
	}()
	send(t, ms, 20)
	converged(t, ms, 20)
	l := leader(t, ms)
	var f *member
	for _, m := range ms {
		if m != l {
			f = m
			break
		}
	}
	f.stop(t)
	send(t, ms, 300)
	time.Sleep(500 * time.Millisecond) // a snapshot and compaction, every 50–100 ms
	f.start(t, ms)
	n := converged(t, ms, 320)
	st, err := status(f.admin)
	if err != nil {
		t.Fatal(err)
	}
	m := restoredRE.FindStringSubmatch(st.Replicas[0].Detail)
	if m == nil || m[1] == "0" {
		t.Fatalf("%s restored no snapshot: %q", f.id, st.Replicas[0].Detail)
	}
	fetched, _ := strconv.Atoi(m[2])
	t.Logf("%s: %s; every node stores %d", f.id, st.Replicas[0].Detail, n)
	if fetched == 0 {
		t.Fatalf("%s fetched nothing from its peers", f.id)
	}
	// Same messages at the same offsets on the follower as on the leader.
	l = leader(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for q := range int32(2) {
		want, err := l.eng.Broker().ReplicaCore().Read(ctx, &sdk.ReadRequest{Topic: "orders", Queue: q, MaxMessages: 1000})
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.eng.Broker().ReplicaCore().Read(ctx, &sdk.ReadRequest{Topic: "orders", Queue: q, MaxMessages: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Messages) != len(want.Messages) {
			t.Fatalf("queue %d: %d messages, the leader has %d", q, len(got.Messages), len(want.Messages))
		}
		for i, w := range want.Messages {
			g := got.Messages[i]
			if g.Offset != w.Offset || g.Id != w.Id || !maps.Equal(g.Headers, w.Headers) || g.BornUnixNano != w.BornUnixNano {
				t.Fatalf("queue %d message %d: %v, leader %v", q, i, g, w)
			}
		}
	}
}
