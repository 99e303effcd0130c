package verify

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/security"
)

// ClientTLS is what verify's own clients (its producers, its read-back, each
// group's ferry consume) present to brokers whose pipeline files serve TLS
// (plugins.transport.config.tls): the CA that signed the brokers'
// certificates and, when the files ask for mutual TLS (tls.client_ca_file),
// a client certificate and key that CA trusts. Verify takes certificates
// from the files and these options only; it generates none. The brokers run
// on 127.0.0.1, so their certificates must name it (an IP subject
// alternative name).
type ClientTLS struct{ CA, Cert, Key string }

func (t ClientTLS) given() bool { return t.CA != "" || t.Cert != "" || t.Key != "" }

// brokerTLS checks the transport TLS of every node's file against t and
// returns the credentials verify's gRPC calls to the brokers use (nil:
// plaintext).
func brokerTLS(t ClientTLS, ps []*prepared) (credentials.TransportCredentials, error) {
	secure, mutual := 0, false
	for _, p := range ps {
		tc, _ := p.pipeline.Plugins.Transport.Config["tls"].(map[string]any)
		if cf, _ := tc["cert_file"].(string); cf != "" {
			secure++
		}
		if cc, _ := tc["client_ca_file"].(string); cc != "" {
			mutual = true
		}
	}
	switch {
	case secure == 0 && t.given():
		return nil, fmt.Errorf("verify: --tls-ca, --tls-cert, --tls-key given, but no pipeline file's plugins.transport.config.tls serves TLS")
	case secure == 0:
		return nil, nil
	case secure < len(ps):
		return nil, fmt.Errorf("verify: %d of the %d pipeline files serve TLS on their transport (plugins.transport.config.tls): all or none", secure, len(ps))
	case t.CA == "":
		return nil, fmt.Errorf("verify: plugins.transport.config.tls serves TLS: give --tls-ca, the CA that signed the brokers' certificates (which must name 127.0.0.1, where verify runs them)")
	case mutual && (t.Cert == "" || t.Key == ""):
		return nil, fmt.Errorf("verify: plugins.transport.config.tls.client_ca_file asks for mutual TLS: give --tls-cert and --tls-key, a client certificate that CA signed and its key")
	}
	conf, err := security.ClientTLS{CAFile: t.CA, CertFile: t.Cert, KeyFile: t.Key}.Config()
	if err != nil {
		return nil, fmt.Errorf("verify: --tls-ca, --tls-cert, --tls-key: %w", err)
	}
	return credentials.NewTLS(conf), nil
}

// consumeArgs are the TLS flags of each group's ferry consume.
func (t ClientTLS) consumeArgs() []string {
	var a []string
	for _, kv := range [][2]string{{"--tls-ca", t.CA}, {"--tls-cert", t.Cert}, {"--tls-key", t.Key}} {
		if kv[1] != "" {
			a = append(a, kv[0], kv[1])
		}
	}
	return a
}

// peerCreds are the credentials verify's calls to a node's replication and
// raft admin listeners (Status, Promote) present: the node's own link
// security from its file (plugins.replication.config tls and secret_file),
// as `ferry cluster` takes it from a pipeline; plaintext without them.
func peerCreds(file string, rc map[string]any) (credentials.TransportCredentials, error) {
	var l security.PeerLink
	if t, ok := rc["tls"].(map[string]any); ok {
		l.TLS.CertFile, _ = t["cert_file"].(string)
		l.TLS.KeyFile, _ = t["key_file"].(string)
		l.TLS.CAFile, _ = t["ca_file"].(string)
	}
	l.SecretFile, _ = rc["secret_file"].(string)
	if l.TLS.CertFile == "" && l.TLS.KeyFile == "" && l.TLS.CAFile == "" && l.SecretFile == "" {
		return nil, nil
	}
	p, err := security.NewPeers(l, "ferry verify", nil)
	if err != nil {
		return nil, fmt.Errorf("%s: plugins.replication.config: %w", file, err)
	}
	return p.GRPC(), nil
}

// dial is a gRPC client of addr with creds (nil: plaintext).
func dial(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}

// ClientAuth is the user verify's own clients (its producers, its
// read-back, each group's ferry consume) authenticate as when the files
// have users (security): --user, its password from --password-file or
// $FERRY_PASSWORD. Under mutual TLS a client certificate (ClientTLS) that
// names a certificate user may stand in for it.
type ClientAuth struct {
	User, Password string
	// FromEnv: User came from $FERRY_USER, not --user; files without
	// users then ignore it rather than refuse it.
	FromEnv bool
}

// brokerCreds are what verify's calls to a broker present: its transport's
// TLS (nil: plaintext) and the user's credentials (nil: none).
type brokerCreds struct {
	tls  credentials.TransportCredentials
	auth credentials.PerRPCCredentials
}

// dialBroker is a gRPC client of the broker at addr with c.
func dialBroker(addr string, c brokerCreds) (*grpc.ClientConn, error) {
	tc := c.tls
	if tc == nil {
		tc = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(tc)}
	if c.auth != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(c.auth))
	}
	return grpc.NewClient(addr, opts...)
}

// basicAuth is the user's password as gRPC per-RPC credentials (the
// metadata core/client's WithCredentials sends). Verify's brokers are on
// 127.0.0.1, so plaintext is allowed as the client allows it on loopback.
type basicAuth struct{ header string }

func (b basicAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.header}, nil
}

func (basicAuth) RequireTransportSecurity() bool { return false }

// brokerAuth checks the files' security against a and t and returns the
// per-RPC credentials of verify's calls (nil: none). Files with users
// want credentials: a user (a.User) or, under mutual TLS, a client
// certificate of a certificate user (t.Cert).
func brokerAuth(a ClientAuth, t ClientTLS, ps []*prepared) (credentials.PerRPCCredentials, error) {
	var secured []string
	for _, p := range ps {
		if p.pipeline.Security.Enabled() {
			secured = append(secured, p.src)
		}
	}
	switch {
	case len(secured) == 0 && a.User != "" && !a.FromEnv:
		return nil, fmt.Errorf("verify: --user %s given, but no pipeline file has users (security): its nodes take no credentials", a.User)
	case len(secured) == 0:
		return nil, nil
	case a.User == "" && t.Cert == "":
		return nil, fmt.Errorf("verify: %s has users (security.users, users_file): verify's producers, read-back and groups must authenticate: give --user NAME and its password (--password-file FILE or $FERRY_PASSWORD), a user allowed Pub and Sub on the topic and Sub on verify's groups (Group:v*; a super user will do), or under mutual TLS a client certificate of a certificate user (--tls-cert, --tls-key)", strings.Join(secured, ", "))
	case a.User == "":
		return nil, nil // the certificate authenticates
	case strings.Contains(a.User, ":"):
		return nil, fmt.Errorf("verify: --user %q: a user name has no ':'", a.User)
	}
	return basicAuth{header: "Basic " + base64.StdEncoding.EncodeToString([]byte(a.User+":"+a.Password))}, nil
}

// consumeEnv is the environment each group's ferry consume gets for the
// user: its password, kept off the command line.
func (a ClientAuth) consumeEnv() []string {
	if a.User == "" {
		return nil
	}
	return []string{"FERRY_USER=" + a.User, "FERRY_PASSWORD=" + a.Password}
}
