package security

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// TLS is a listener's tls section. An empty section (no cert_file) means
// the listener speaks plaintext.
//
//	tls:
//	  cert_file: /etc/ferry/broker.pem   # server certificate chain (PEM)
//	  key_file: /etc/ferry/broker-key.pem
//	  client_ca_file: /etc/ferry/ca.pem  # optional: mutual TLS, clients must present a certificate it signed
//
// The files are read again when their modification time or size changes,
// at the next handshake: rotating a certificate needs no restart, and the
// connections already open go on with the certificate they started with.
type TLS struct {
	CertFile     string `json:"cert_file" koanf:"cert_file"`
	KeyFile      string `json:"key_file" koanf:"key_file"`
	ClientCAFile string `json:"client_ca_file" koanf:"client_ca_file"`
}

// Enabled reports whether the section asks for TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// Mutual reports whether clients must present a certificate.
func (t TLS) Mutual() bool { return t.ClientCAFile != "" }

// Validate reports every problem of the section, with paths under prefix
// ("tls"): a missing pair, files that cannot be read or parsed, a key that
// does not match its certificate. Called by a listener's config validation,
// so that `ferry validate` names the key.
func (t TLS) Validate(prefix string) sdk.Problems {
	if !t.Enabled() {
		return nil
	}
	var ps sdk.Problems
	add := func(key, format string, args ...any) {
		ps = append(ps, sdk.Problem{Path: prefix + "." + key, Message: fmt.Sprintf(format, args...)})
	}
	switch {
	case t.CertFile == "":
		add("cert_file", "is required when %s is set", pick(t.KeyFile != "", "key_file", "client_ca_file"))
	case t.KeyFile == "":
		add("key_file", "is required when cert_file is set")
	default:
		if _, err := loadKeyPair(t.CertFile, t.KeyFile); err != nil {
			add("cert_file", "%v", err)
		}
	}
	if t.ClientCAFile != "" {
		if _, err := loadPool(t.ClientCAFile); err != nil {
			add("client_ca_file", "%v", err)
		}
	}
	return ps
}

func pick(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

// loadKeyPair reads a certificate chain and its key and checks that the
// leaf is valid now.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading certificate %s with key %s: %w", certFile, keyFile, err)
	}
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certFile, err)
		}
		c.Leaf = leaf
	}
	if now := time.Now(); leaf != nil && now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s expired at %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// loadPool reads a PEM bundle of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

// fileStamp identifies one version of a file.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(file string) fileStamp {
	if file == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

// Logger is where a listener's security events go: *slog.Logger and
// hclog.Logger both are one.
type Logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
}

// reloader holds the certificate, key and client CAs of a server, read
// again when a file changes.
type reloader struct {
	cfg TLS
	log Logger

	mu     sync.Mutex
	stamps [3]fileStamp
	conf   *tls.Config
}

// ServerConfig returns the tls.Config of a listener: TLS 1.2 at least, the
// certificate of t, and with client_ca_file a verified client certificate
// required. Every handshake checks the files' stamps and reloads what
// changed; a file that fails to load (half written, say) is logged and the
// previous certificate kept. It fails when the files cannot be loaded now.
// Called once per listener, by its Configure/Serve.
func (t TLS) ServerConfig(log Logger) (*tls.Config, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file are required")
	}
	if log == nil {
		log = slog.Default()
	}
	r := &reloader{cfg: t, log: log}
	if err := r.reload(r.current()); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: r.forClient,
	}, nil
}

func (r *reloader) current() [3]fileStamp {
	return [3]fileStamp{stamp(r.cfg.CertFile), stamp(r.cfg.KeyFile), stamp(r.cfg.ClientCAFile)}
}

func (r *reloader) reload(st [3]fileStamp) error {
	cert, err := loadKeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if r.cfg.ClientCAFile != "" {
		pool, err := loadPool(r.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("tls: client_ca_file: %w", err)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	r.conf = conf
	r.stamps = st
	return nil
}

// forClient is the GetConfigForClient of the listener: the config of the
// files' current version.
func (r *reloader) forClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	st := r.current()
	r.mu.Lock()
	defer r.mu.Unlock()
	if st != r.stamps {
		prev := r.conf
		if err := r.reload(st); err != nil {
			r.stamps = st // do not retry on every handshake until the files change again
			r.log.Warn("tls: keeping the previous certificate", "error", err)
		} else if prev != nil {
			r.log.Info("tls: certificate reloaded", "cert_file", r.cfg.CertFile)
		}
	}
	return r.conf, nil
}

// ClientTLS is what a client needs to speak TLS to a broker: the CA that
// signed the broker's certificate (empty: the system's roots) and, for
// mutual TLS, its own certificate and key.
type ClientTLS struct {
	CAFile   string
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the broker's certificate
	// (default: the host of the address dialled).
	ServerName string
}

// Config builds the client's tls.Config (TLS 1.2 at least), reading the
// files now; it fails naming the file that cannot be used.
func (c ClientTLS) Config() (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: ca: %w", err)
		}
		conf.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls: a client certificate needs both its cert and key files")
	}
	if c.CertFile != "" {
		cert, err := loadKeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		conf.Certificates = []tls.Certificate{*cert}
	}
	return conf, nil
}
