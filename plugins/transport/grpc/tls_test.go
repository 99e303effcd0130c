package grpctransport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
	grpctransport "github.com/ferrymq/ferry/plugins/transport/grpc"
)

// tlsConfig is the transport's config section with TLS from p (and the
// client CA when ca is not nil).
func tlsConfig(p securitytest.Pair, clientCA *securitytest.CA) string {
	ca := ""
	if clientCA != nil {
		ca = fmt.Sprintf(`, "client_ca_file": %q`, clientCA.CertFile)
	}
	return fmt.Sprintf(`{"listen": "127.0.0.1:0", "tls": {"cert_file": %q, "key_file": %q%s}}`, p.CertFile, p.KeyFile, ca)
}

func dial(t *testing.T, addr string, opts ...client.Option) (*client.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, opts...)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestTLSServesClientsThatTrustTheCA(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	s := serve(t, &fakeCore{}, tlsConfig(ca.Issue("broker", securitytest.Options{}), nil))
	c, err := dial(t, s.addr, client.WithTLS(ca.CertFile, "", ""))
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if _, err := c.Metadata(testCtx(t)); err != nil {
		t.Fatalf("Metadata over TLS: %v", err)
	}
	// TLS 1.1 is refused.
	conn, err := tls.Dial("tcp", s.addr, &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Fatal("a TLS 1.1 handshake succeeded; want TLS 1.2 at least")
	}
}

func TestTLSRefusesPlaintextClientWithAHint(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	s := serve(t, &fakeCore{}, tlsConfig(ca.Issue("broker", securitytest.Options{}), nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, s.addr)
	if err == nil || !strings.Contains(err.Error(), "require TLS") {
		t.Fatalf("plaintext client on a TLS port: got %v, want an error saying the broker may require TLS", err)
	}
}

func TestTLSRefusesWrongCA(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	other := securitytest.NewCA(t, "someone-else")
	s := serve(t, &fakeCore{}, tlsConfig(ca.Issue("broker", securitytest.Options{}), nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, s.addr, client.WithTLS(other.CertFile, "", ""))
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("client trusting another CA: got %v, want 'certificate signed by unknown authority'", err)
	}
}

func TestTLSRefusesExpiredCertificates(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	// A server certificate that expired: Configure fails naming it.
	expired := ca.Issue("old-broker", securitytest.Options{Expired: true})
	ps := grpctransport.New().Validate([]byte(tlsConfig(expired, nil))).Error()
	if !strings.Contains(ps, "tls.cert_file") || !strings.Contains(ps, "expired") {
		t.Fatalf("Validate with an expired certificate: %q, want tls.cert_file ... expired", ps)
	}
	// A client certificate that expired is refused by a mutual-TLS broker.
	s := serve(t, &fakeCore{}, tlsConfig(ca.Issue("broker", securitytest.Options{}), ca))
	old := ca.Issue("old-client", securitytest.Options{Client: true, Expired: true})
	// The client library refuses to load it...
	if _, err := dial(t, s.addr, client.WithTLS(ca.CertFile, old.CertFile, old.KeyFile)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("client with an expired certificate: got %v, want 'expired'", err)
	}
	// ...and the broker refuses it when presented anyway.
	cert, err := tls.LoadX509KeyPair(old.CertFile, old.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(ca.CertFile)
	pool.AppendCertsFromPEM(pem)
	conn, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err == nil {
		// TLS 1.3: the client learns of the refusal at its first read.
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "expired certificate") {
		t.Fatalf("expired client certificate: got %v, want the broker's 'expired certificate' alert", err)
	}
}

func TestMutualTLSRequiresAClientCertificate(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	s := serve(t, &fakeCore{}, tlsConfig(ca.Issue("broker", securitytest.Options{}), ca))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := client.Dial(ctx, s.addr, client.WithTLS(ca.CertFile, "", "")); err == nil || !strings.Contains(err.Error(), "certificate required") && !strings.Contains(err.Error(), "require a client certificate") {
		t.Fatalf("client without a certificate on mutual TLS: got %v, want 'certificate required'", err)
	}
	p := ca.Issue("app-1", securitytest.Options{Client: true})
	c, err := dial(t, s.addr, client.WithTLS(ca.CertFile, p.CertFile, p.KeyFile))
	if err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	if _, err := c.Metadata(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestTLSCertificateRotation replaces the broker's certificate while a
// producer sends: new handshakes get the new certificate, the connected
// client goes on, and every acked message reached the broker.
func TestTLSCertificateRotation(t *testing.T) {
	ca := securitytest.NewCA(t, "ferry-test")
	first := ca.Issue("broker", securitytest.Options{})
	core := &fakeCore{}
	s := serve(t, core, tlsConfig(first, nil))
	c, err := dial(t, s.addr, client.WithTLS(ca.CertFile, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	p := c.NewProducer(client.ProducerOptions{})
	send := func(n int) int {
		acked := 0
		for i := 0; i < n; i++ {
			if _, err := p.SendSync(testCtx(t), client.Message{Topic: "t", Body: []byte("x")}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			acked++
		}
		return acked
	}
	acked := send(50)
	was := servedSerial(t, s.addr, ca)
	if want := securitytest.Serial(t, first.CertFile); was.Cmp(want) != 0 {
		t.Fatalf("serving serial %v, want the first certificate's %v", was, want)
	}
	second := ca.Issue("broker", securitytest.Options{}) // same files, new contents
	want := securitytest.Serial(t, second.CertFile)
	deadline := time.Now().Add(30 * time.Second)
	for servedSerial(t, s.addr, ca).Cmp(want) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the broker still serves the first certificate 30s after rotation")
		}
		acked += send(1)
		time.Sleep(50 * time.Millisecond)
	}
	acked += send(50)
	if got := int(core.produceCalls.Load()); got < acked {
		t.Fatalf("the broker got %d produce calls, fewer than the %d acked messages", got, acked)
	}
}

// servedSerial is the serial of the certificate a new handshake gets.
func servedSerial(t *testing.T, addr string, ca *securitytest.CA) *big.Int {
	t.Helper()
	conf, err := security.ClientTLS{CAFile: ca.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}
