package raft_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	cfg.Plugins.Replication = config.PluginRef{Type: "raft", Config: map[string]any{"listen": m.raft, "admin": m.admin, "peers": peers}}
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

func status(addr string) (*ferryv1.ReplicationStatusResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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

func send(t *testing.T, broker string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second})
	for i := range n {
		r, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatalf("send %d to %s: %v", i, broker, err)
		}
		if r.Status != ferryv1.Status_STATUS_OK {
			t.Fatalf("send %d: status %v", i, r.Status)
		}
	}
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
	l := leader(t, ms)
	send(t, l.broker, 50)
	// Every node applied every committed entry to its own store.
	for _, m := range ms {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := status(m.admin)
			if err == nil && stored(st) == 50 || stored(st) == 51 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %v messages, want 50 (%v)", m.id, st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A follower rejects produce and names the leader in its metadata.
	for _, m := range ms {
		if m == l {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := client.Dial(ctx, m.broker)
		if err != nil {
			t.Fatal(err)
		}
		md, err := c.Metadata(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Brokers) != 2 || md.Brokers[1].Address != l.broker || md.Topics[0].Leaders[0] != 1 {
			t.Fatalf("follower %s metadata %v", m.id, md)
		}
		// The client follows the metadata to the leader...
		if r, err := c.NewProducer(client.ProducerOptions{}).SendSync(ctx, client.Message{Topic: "orders", Body: []byte("x")}); err != nil || r.Status != ferryv1.Status_STATUS_OK {
			t.Fatalf("send through follower %s: %v, %v", m.id, r, err)
		}
		// ...and the follower's broker itself refuses.
		_, err = m.eng.Broker().Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "direct", Topic: "orders", Body: []byte("x")}}})
		if !errors.Is(err, sdk.ErrNotLeader) {
			t.Fatalf("produce on follower %s: %v, want ErrNotLeader", m.id, err)
		}
		c.Close()
		cancel()
		break
	}
	// The leader goes; another is elected and takes produce.
	start := time.Now()
	l.stop(t)
	l2 := leader(t, ms)
	t.Logf("new leader %s after %s", l2.id, time.Since(start).Round(time.Millisecond))
	send(t, l2.broker, 19)
	// The old leader comes back and catches up.
	l.start(t, ms)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := status(l.admin)
		if err == nil && stored(st) == 70 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted %s holds %v, want 70 (%v)", l.id, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
