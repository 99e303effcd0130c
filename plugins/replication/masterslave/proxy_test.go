package masterslave_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// proxy is a TCP proxy on 127.0.0.1 that can cut its links or delay them.
type proxy struct {
	lis    net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	delay time.Duration
	conns []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	go p.accept()
	t.Cleanup(func() { lis.Close(); p.setCut(true) })
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies src to dst, holding each chunk for the current delay.
func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d := p.delay
			p.mu.Unlock()
			if d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				break
			}
			break
		}
	}
	dst.Close()
	src.Close()
}

// setCut cuts every link and refuses new ones (true), or lets them through.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	conns := p.conns
	if cut {
		p.conns = nil
	}
	p.mu.Unlock()
	if cut {
		for _, c := range conns {
			c.Close()
		}
	}
}

func (p *proxy) setDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Sync replication through a proxy that cuts and delays the slave's link:
// nothing is acked OK while the link is cut, a delayed link slows acks but
// they stay OK, and the slave catches up once the link heals.
func TestSyncLinkCutAndDelayed(t *testing.T) {
	mRepl, sRepl := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	mAddr, sAddr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	px := newProxy(t, mRepl)
	opts := map[string]any{"timeout": "1s"}
	master := startEngine(t, pipeline(t, "m", "master", "sync", t.TempDir(), mRepl, mAddr, []string{sRepl}, opts))
	defer closeEngine(t, master)
	slave := startEngine(t, pipeline(t, "s", "slave", "sync", t.TempDir(), sRepl, sAddr, []string{px.addr()}, opts))
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

	px.setCut(true)
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
	px.setDelay(100 * time.Millisecond)
	px.setCut(false)
	waitFor(t, 30*time.Second, "slave linked again", func() bool {
		st, err := link(t, sRepl).Status(ctx, &ferryv1.ReplicationStatusRequest{})
		return err == nil && st.LeaderConnected
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
	px.setDelay(0)
	// The slave caught up with what was stored while it was cut off.
	want := ends(t, mRepl)
	waitFor(t, 30*time.Second, "slave caught up", func() bool { return ends(t, sRepl) == want })
}
