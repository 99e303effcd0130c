package tlsbatch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/ferrymq/ferry/core/security/securitytest"
)

// counting counts the writes that reach a socket.
type counting struct {
	net.Conn
	writes atomic.Int64
}

func (c *counting) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// tlsConfs are a server and a client TLS config of a CA made for the test.
func tlsConfs(t testing.TB) (srv, cli *tls.Config) {
	t.Helper()
	ca := securitytest.NewCA(t, "tlsbatch")
	pair := ca.Issue("server", securitytest.Options{})
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA certificate does not parse")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// pair connects a TLS client to a TLS server over 127.0.0.1; the client's
// socket writes are counted, and batched when batch is set. The server's
// side reads into got until the client closes.
func pair(t testing.TB, batch bool) (cli net.Conn, sock *counting, got func() []byte) {
	t.Helper()
	var buf bytes.Buffer
	cli, sock, wait := pairTo(t, batch, &buf)
	return cli, sock, func() []byte {
		wait()
		return buf.Bytes()
	}
}

// pairTo is pair with the server writing what it reads to sink; wait
// closes the client and waits for the server to have read everything.
func pairTo(t testing.TB, batch bool, sink io.Writer) (cli net.Conn, sock *counting, wait func()) {
	t.Helper()
	srvConf, cliConf := tlsConfs(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(sink, tls.Server(c, srvConf))
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sock = &counting{Conn: raw}
	if batch {
		r := NewRaw(sock)
		tc := tls.Client(r, cliConf)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		cli = r.Wrap(tc)
	} else {
		tc := tls.Client(sock, cliConf)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		cli = tc
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli, sock, func() {
		_ = cli.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the server did not see the client close within 30s")
		}
	}
}

// TestOneWriteFewSocketWrites: a 256 KiB Write over TLS reaches the socket
// in 4 writes of 64 KiB when batched, and in one write per 16 KiB record
// when not (the control, which shows the count can fail).
func TestOneWriteFewSocketWrites(t *testing.T) {
	payload := bytes.Repeat([]byte("ferry-tlsbatch!"), (256<<10)/15)
	for _, batch := range []bool{true, false} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			cli, sock, got := pair(t, batch)
			// Past the ramp of Go's dynamic record sizing (small records for
			// the first 128 KiB of a connection).
			for range 2 {
				if _, err := cli.Write(payload); err != nil {
					t.Fatal(err)
				}
			}
			before := sock.writes.Load()
			if _, err := cli.Write(payload); err != nil {
				t.Fatal(err)
			}
			writes := sock.writes.Load() - before
			records := int64(len(payload)+(16<<10)-1) / (16 << 10)
			switch {
			case batch && writes != int64(len(payload)+maxHeld-1)/maxHeld:
				t.Errorf("batched: one 256 KiB Write made %d socket writes, want %d (one a %d bytes)", writes, (len(payload)+maxHeld-1)/maxHeld, maxHeld)
			case !batch && writes < records:
				t.Errorf("control: unbatched, one 256 KiB Write made %d socket writes, want one a record (%d)", writes, records)
			}
			if b := got(); !bytes.Equal(b, bytes.Repeat(payload, 3)) {
				t.Errorf("the server read %d bytes, want the %d written, in order", len(b), 3*len(payload))
			}
		})
	}
}

// TestConcurrentWritesArriveWhole: writers of every size at once, some
// past maxHeld; the server reads each write whole and in one piece, none
// lost, none torn.
func TestConcurrentWritesArriveWhole(t *testing.T) {
	cli, _, got := pair(t, true)
	sizes := []int{1, 100, 16 << 10, 16<<10 + 1, 100 << 10, 256 << 10, maxHeld + 12345}
	const writers, each = 4, 6
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				n := sizes[(w+i)%len(sizes)]
				msg := make([]byte, 8+n)
				binary.BigEndian.PutUint32(msg, uint32(w<<16|i))
				binary.BigEndian.PutUint32(msg[4:], uint32(n))
				for j := range n {
					msg[8+j] = byte(w*31 + i*7 + j)
				}
				if _, err := cli.Write(msg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	b := got()
	seen := map[uint32]bool{}
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("%d bytes left over, not a write's header", len(b))
		}
		id, n := binary.BigEndian.Uint32(b), int(binary.BigEndian.Uint32(b[4:]))
		w, i := int(id>>16), int(id&0xffff)
		if w >= writers || i >= each || n != sizes[(w+i)%len(sizes)] || len(b) < 8+n {
			t.Fatalf("a torn or foreign write: id %#x, length %d, %d bytes left", id, n, len(b))
		}
		for j := range n {
			if b[8+j] != byte(w*31+i*7+j) {
				t.Fatalf("write %d of writer %d: byte %d is %d, want %d", i, w, j, b[8+j], byte(w*31+i*7+j))
			}
		}
		if seen[id] {
			t.Fatalf("write %d of writer %d arrived twice", i, w)
		}
		seen[id] = true
		b = b[8+n:]
	}
	if len(seen) != writers*each {
		t.Fatalf("the server read %d writes, want %d", len(seen), writers*each)
	}
}

// TestWriteErrorReachesTheCaller: when the held records cannot be written,
// the Write that held them fails.
func TestWriteErrorReachesTheCaller(t *testing.T) {
	cli, sock, _ := pair(t, true)
	_ = sock.Conn.Close() // the socket under TLS gone
	_, err := cli.Write(make([]byte, 64<<10))
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write over a closed socket: %v, want net.ErrClosed", err)
	}
}

// TestCredentialsOverGRPC: a gRPC client and server whose TLS credentials
// are batched handshake, call, and still report TLS to the server.
func TestCredentialsOverGRPC(t *testing.T) {
	srvConf, cliConf := tlsConfs(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sawTLS atomic.Bool
	srv := grpc.NewServer(grpc.Creds(Credentials(credentials.NewTLS(srvConf))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if p, ok := peer.FromContext(ctx); ok {
				_, is := p.AuthInfo.(credentials.TLSInfo)
				sawTLS.Store(is)
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(Credentials(credentials.NewTLS(cliConf))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v", resp.Status)
	}
	if !sawTLS.Load() {
		t.Fatal("the server's call did not carry credentials.TLSInfo")
	}
	if got := Credentials(credentials.NewTLS(cliConf)).Clone(); got.Info().SecurityProtocol != "tls" {
		t.Fatalf("Clone: security protocol %q, want tls", got.Info().SecurityProtocol)
	}
}

// BenchmarkTLSWrite: 256 KiB Writes (a flush of gRPC's write buffer as the
// client and the grpc transport size it) over TLS on 127.0.0.1, batched
// and not, the server reading them:
//
//	go test -run '^$' -bench TLSWrite -count 6 ./internal/tlsbatch/
func BenchmarkTLSWrite(b *testing.B) {
	payload := make([]byte, 256<<10)
	for _, batch := range []bool{false, true} {
		b.Run(fmt.Sprintf("batch=%v", batch), func(b *testing.B) {
			cli, sock, _ := pairTo(b, batch, io.Discard)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			before, cpu0 := sock.writes.Load(), cpuTime(b)
			for b.Loop() {
				if _, err := cli.Write(payload); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(sock.writes.Load()-before)/float64(b.N), "writes/op")
			// The process's CPU time (both ends of the connection): on a
			// loaded machine it says more than the elapsed time.
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
