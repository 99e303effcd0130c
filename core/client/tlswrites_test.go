package client_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/security/securitytest"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// countingConn counts the writes that reach the client's socket.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Over TLS a large produce reaches the socket in writes of 64 KiB
// (internal/tlsbatch), not one write per 16 KiB TLS record: 900 KiB of
// produce makes at most 24 writes, where one a record would be 56 or more (the control, by hand: with client.go's
// tlsbatch.Credentials replaced by credentials.NewTLS it made 57).
func TestTLSProduceWritesBatched(t *testing.T) {
	ca := securitytest.NewCA(t, "writes")
	srv := ca.Issue("broker", securitytest.Options{})
	tr := grpctransport.New()
	cfg := fmt.Sprintf(`{"listen": "127.0.0.1:0", "shutdown_timeout": "200ms", "tls": {"cert_file": %q, "key_file": %q}}`, srv.CertFile, srv.KeyFile)
	if err := tr.Configure(context.Background(), []byte(cfg), nil); err != nil {
		t.Fatalf("configure transport: %v", err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Serve(sctx, newMemCore(map[string]int32{"t": 1})) }()
	t.Cleanup(func() { stop(); <-done })

	var writes atomic.Int64
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &writes}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, tr.Addr(), client.WithLogger(quiet), client.WithTLS(ca.CertFile, "", ""),
		client.WithGRPCOptions(grpc.WithContextDialer(dialer)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Retries: client.NoRetries})
	body := make([]byte, 900<<10)
	// Twice first: past Go's small records at a connection's start.
	for range 3 {
		if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	before := writes.Load()
	if _, err := p.SendSync(ctx, client.Message{Topic: "t", Body: body}); err != nil {
		t.Fatal(err)
	}
	n := writes.Load() - before
	t.Logf("a 900 KiB produce over TLS: %d socket writes", n)
	if n > 24 {
		t.Fatalf("a 900 KiB produce over TLS made %d socket writes; want at most 24 (64 KiB each), not one a 16 KiB record", n)
	}
}
