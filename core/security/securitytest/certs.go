// Package securitytest makes the certificates that TLS tests need: a CA and
// server or client certificates it signs, written as PEM files in a test's
// temporary directory. Tests of the listeners and of the client import it.
package securitytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	tb   testing.TB
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertFile is the CA's certificate (PEM): what a client trusts, or a
	// listener's client_ca_file.
	CertFile string
}

var serial atomic.Int64

// NewCA makes a CA named name, its certificate written in a new temporary
// directory.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	ca := &CA{tb: tb, dir: tb.TempDir(), cert: cert, key: key}
	ca.CertFile = ca.write(name+"-ca.pem", "CERTIFICATE", der)
	return ca
}

// Pair is a certificate and its key, as PEM files.
type Pair struct {
	CertFile, KeyFile string
	NotAfter          time.Time
}

// Options of a certificate Issue makes.
type Options struct {
	// Client makes a client certificate (ExtKeyUsageClientAuth); else a
	// server certificate for 127.0.0.1 and localhost.
	Client bool
	// Expired makes a certificate whose validity ended an hour ago.
	Expired bool
	// Peer makes a replication node's certificate: server and client
	// auth, for 127.0.0.1 and localhost.
	Peer bool
	// URIs are URI subject alternative names (ferry://node/<id>).
	URIs []string
}

// Issue signs a certificate for common name cn and writes it and its key
// as <cn>.pem and <cn>-key.pem (overwriting an earlier pair of that name,
// which is how a test rotates a certificate).
func (ca *CA) Issue(cn string, o Options) Pair {
	ca.tb.Helper()
	key := newKey(ca.tb)
	notAfter := time.Now().Add(12 * time.Hour)
	if o.Expired {
		notAfter = time.Now().Add(-time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-2 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	switch {
	case o.Peer:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	case o.Client:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	for _, u := range o.URIs {
		pu, err := url.Parse(u)
		if err != nil {
			ca.tb.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		ca.tb.Fatal(err)
	}
	// The key first: a listener that reloads between the two writes sees
	// a mismatched pair, keeps its old one, and reloads when the
	// certificate's stamp changes.
	p := Pair{NotAfter: notAfter}
	p.KeyFile = ca.write(cn+"-key.pem", "EC PRIVATE KEY", kder)
	p.CertFile = ca.write(cn+".pem", "CERTIFICATE", der)
	return p
}

// Serial is the serial number of the certificate in file (to tell which of
// two certificates a peer presented).
func Serial(tb testing.TB, file string) *big.Int {
	tb.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		tb.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c.SerialNumber
}

func (ca *CA) write(name, typ string, der []byte) string {
	path := filepath.Join(ca.dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ca.tb.Fatal(err)
	}
	return path
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

// Secret writes a cluster secret file (mode 0600) named name in the CA's
// directory and returns its path.
func (ca *CA) Secret(name, secret string) string {
	ca.tb.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		ca.tb.Fatal(err)
	}
	return path
}
