package security

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/sdk"
)

// Principal is an authenticated client: the user it proved to be and the
// address it calls from.
type Principal struct {
	User string
	// Super users may do everything.
	Super bool
	// By is how it authenticated: "password" or "certificate".
	By string
	// Addr is the client's IP address as the transport saw it (invalid
	// when the transport did not say).
	Addr netip.Addr

	policies []policy
}

// Auth authenticates a node's clients and decides what each may do. Built
// once from the node's security section (NewAuth); safe for concurrent use
// by every request.
type Auth struct {
	// users are the configured users, replaced whole by a live change
	// (live.go); internal is the node's own super user (Internal).
	users    atomic.Pointer[map[string]*account]
	internal atomic.Pointer[account]
	log      Logger
	limit    *limiter
	// denyLog bounds the access denied lines per user and source: a
	// client repeating a refused call cannot flood the log.
	denyLog *limiter
	dummy   []byte // a bcrypt hash compared against for unknown users

	mu       sync.RWMutex
	verified map[[sha256.Size]byte]string // hash of an authorization value that proved a user → the user
	// gen counts live changes of the users (guarded by mu): a
	// verification that began before one is not remembered.
	gen uint64

	// live records live changes (nil: none allowed); changeMu
	// serializes changes (live.go).
	live     *LiveUsers
	changeMu sync.Mutex

	adminReqs adminRequests // admin.go
	inflight  map[[sha256.Size]byte]chan struct{}
}

type account struct {
	user     User
	policies []policy
}

// maxVerified bounds the cache of verified credentials; when full it starts
// anew.
const maxVerified = 4096

// NewAuth builds the authenticator of cfg (whose users_file users the
// config package has appended to Users). log gets one line for each failed
// authentication and each denied request; nil discards them.
func NewAuth(cfg Config, log Logger) (*Auth, error) {
	if ps := cfg.Validate("security"); len(ps) > 0 {
		return nil, ps
	}
	if log == nil {
		log = nopLogger{}
	}
	a := &Auth{
		log:      log,
		limit:    newLimiter(cfg.FailedAuth.withDefaults()),
		denyLog:  newLimiter(FailedAuth{Burst: denyLogBurst, Refill: denyLogRefill}),
		verified: map[[sha256.Size]byte]string{},
		inflight: map[[sha256.Size]byte]chan struct{}{},
	}
	users, err := compileUsers(cfg.Users)
	if err != nil {
		return nil, err
	}
	a.users.Store(&users)
	// A hash of the highest cost the users use, so that an unknown user
	// costs at least what a known one does.
	cost := 0
	for _, u := range cfg.Users {
		if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil && c > cost {
			cost = c
		}
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("ferry: no such user"), cost)
	if err != nil {
		return nil, err
	}
	a.dummy = dummy
	return a, nil
}

// compileUsers turns checked users into the accounts Auth looks up.
func compileUsers(list []User) (map[string]*account, error) {
	users := make(map[string]*account, len(list))
	for _, u := range list {
		acc := &account{user: u}
		for _, p := range u.Policies {
			cp, err := compilePolicy(p)
			if err != nil {
				return nil, fmt.Errorf("user %q: %w", u.Name, err)
			}
			acc.policies = append(acc.policies, cp)
		}
		users[u.Name] = acc
	}
	return users, nil
}

// account returns the account of user name, nil when there is none.
func (a *Auth) account(name string) *account {
	if in := a.internal.Load(); in != nil && name == InternalUser {
		return in
	}
	return (*a.users.Load())[name]
}

// InternalUser is the name of the node's own super user (Internal).
// Configured names cannot start with '%'.
const InternalUser = "%node"

// Internal adds the node's own super user, for the generators and flows of
// its pipeline, which reach the node through its transport like any client,
// and returns its password: 32 random bytes, known only to this process.
// Called once, before the node serves.
func (a *Auth) Internal() (user, password string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	password = base64.RawURLEncoding.EncodeToString(b)
	// The lowest cost: nobody guesses 256 random bits, however fast the
	// hash.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return "", "", err
	}
	a.internal.Store(&account{user: User{Name: InternalUser, PasswordHash: string(hash), Super: true}})
	return InternalUser, password, nil
}

type nopLogger struct{}

func (nopLogger) Info(string, ...any) {}
func (nopLogger) Warn(string, ...any) {}

// Authenticate decides who sent a request from the credentials its
// transport gathered. A request with an authorization value is
// authenticated by it (HTTP Basic: user and password); one without, by its
// verified client certificate, whose common name or a subject alternative
// name must be a user with certificate: true. Failures are
// sdk.ErrUnauthenticated with a message that does not tell whether the user
// exists; each is logged and costs its source a token of the failed_auth
// bucket, and a source whose bucket is empty is refused without its
// credentials being checked.
func (a *Auth) Authenticate(c *sdk.ClientCredentials) (*Principal, error) {
	if c == nil {
		c = &sdk.ClientCredentials{}
	}
	addr := addrOf(c.RemoteAddr)
	source := "unknown"
	if addr.IsValid() {
		source = addr.String()
	}
	var key [sha256.Size]byte
	if c.Authorization != "" {
		// Credentials verified before pass without bcrypt and whatever
		// the failure limit says: only their owner can send them.
		key = sha256.Sum256([]byte(c.Authorization))
		if p := a.cached(key, addr); p != nil {
			return p, nil
		}
	}
	if wait, ok := a.limit.allow(source); !ok {
		if c.Authorization != "" {
			a.settle(key, "", 0)
		}
		return nil, fmt.Errorf("%w: too many failed authentication attempts from %s; retry in %s",
			sdk.ErrUnauthenticated, source, wait.Round(time.Millisecond))
	}
	switch {
	case c.Authorization != "":
		return a.password(c.Authorization, addr, source)
	case len(c.CertificateNames) > 0:
		for _, n := range c.CertificateNames {
			if acc := a.account(n); acc != nil && acc.user.Certificate {
				return acc.principal("certificate", addr), nil
			}
		}
		return nil, a.failed(source, "", fmt.Sprintf("the client certificate (%s) names no user that may authenticate by certificate", strings.Join(c.CertificateNames, ", ")))
	}
	return nil, a.failed(source, "", "this node requires authentication: send a user and password (gRPC metadata or HTTP header authorization: Basic ...) or, under mutual TLS, a client certificate naming a user")
}

func (acc *account) principal(by string, addr netip.Addr) *Principal {
	return &Principal{User: acc.user.Name, Super: acc.user.Super, By: by, Addr: addr, policies: acc.policies}
}

// cached returns the principal of credentials verified before, waiting
// for a verification of the same credentials in progress; nil when they
// must be verified (the caller then does, under the failure limit).
func (a *Auth) cached(key [sha256.Size]byte, addr netip.Addr) *Principal {
	a.mu.RLock()
	u, ok := a.verified[key]
	a.mu.RUnlock()
	if ok {
		if acc := a.account(u); acc != nil {
			return acc.principal("password", addr)
		}
	}
	for {
		a.mu.Lock()
		if u, ok := a.verified[key]; ok {
			if acc := a.account(u); acc != nil {
				a.mu.Unlock()
				return acc.principal("password", addr)
			}
			delete(a.verified, key) // its user was removed (live.go)
		}
		wait, busy := a.inflight[key]
		if !busy {
			a.inflight[key] = make(chan struct{})
			a.mu.Unlock()
			return nil
		}
		a.mu.Unlock()
		<-wait // then look again: verified, or this caller checks
	}
}

// settle ends the verification of key, recording its user when it proved
// one.
func (a *Auth) settle(key [sha256.Size]byte, user string, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if user != "" && gen == a.gen {
		if len(a.verified) >= maxVerified {
			clear(a.verified)
		}
		a.verified[key] = user
	}
	if ch, ok := a.inflight[key]; ok {
		close(ch)
		delete(a.inflight, key)
	}
}

// password authenticates an authorization value.
func (a *Auth) password(authorization string, addr netip.Addr, source string) (*Principal, error) {
	key := sha256.Sum256([]byte(authorization)) // claimed by cached
	user, pass, err := parseBasic(authorization)
	if err != nil {
		a.settle(key, "", 0)
		return nil, a.failed(source, "", err.Error())
	}
	a.mu.RLock()
	gen := a.gen
	a.mu.RUnlock()
	acc := a.account(user)
	hash := a.dummy
	if acc != nil && acc.user.PasswordHash != "" {
		hash = []byte(acc.user.PasswordHash)
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil || acc == nil || acc.user.PasswordHash == "" {
		a.settle(key, "", 0)
		return nil, a.failed(source, user, fmt.Sprintf("authentication failed for user %q: unknown user or wrong password", user))
	}
	a.settle(key, user, gen)
	return acc.principal("password", addr), nil
}

// parseBasic reads "Basic base64(user:password)".
func parseBasic(v string) (user, pass string, err error) {
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Basic") {
		return "", "", fmt.Errorf("malformed authorization: only the Basic scheme (base64 of user:password) is supported, got %.20q", scheme)
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return "", "", errors.New("malformed authorization: Basic credentials are not base64")
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok || user == "" {
		return "", "", errors.New("malformed authorization: Basic credentials must be user:password")
	}
	return user, pass, nil
}

// failed logs a failed authentication, charges its source and returns the
// error for the client.
func (a *Auth) failed(source, user, reason string) error {
	empty := a.limit.fail(source)
	a.log.Warn("audit: authentication failed", "source", source, "user", user, "reason", reason)
	if empty {
		a.log.Warn("audit: authentication: refusing a source for failing too often", "source", source)
	}
	return fmt.Errorf("%w: %s", sdk.ErrUnauthenticated, reason)
}

// Allowed reports whether p may do any of the actions in act on r.
func (p *Principal) Allowed(act Action, r Resource) bool {
	if p.Super {
		return true
	}
	for _, one := range actionNames {
		if act&one.a != 0 && decide(p.policies, one.a, r, p.Addr) {
			return true
		}
	}
	return false
}

// Authorize returns nil when p may do any of act on r, else
// sdk.ErrPermissionDenied naming the principal, the action and the
// resource, and logs the denial.
func (a *Auth) Authorize(p *Principal, act Action, r Resource) error {
	if p.Allowed(act, r) {
		return nil
	}
	a.denied(p, act.String(), r.String())
	return fmt.Errorf("%w: user %q may not %s on %s", sdk.ErrPermissionDenied, p.User, act, r)
}

// addrOf is the IP address of host:port (or of a bare address).
func addrOf(hostport string) netip.Addr {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// limiter is a token bucket per source for failed authentications.
type limiter struct {
	burst  float64
	refill time.Duration
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets bounds the sources tracked; past it, full buckets are dropped.
const maxBuckets = 65536

func newLimiter(f FailedAuth) *limiter {
	return &limiter{burst: float64(f.Burst), refill: f.Refill, now: time.Now, buckets: map[string]*bucket{}}
}

// level refills b up to now; called with l.mu held.
func (l *limiter) level(b *bucket, now time.Time) {
	b.tokens = math.Min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.refill))
	b.at = now
}

// allow reports whether source may try to authenticate now, and when it
// may again if not.
func (l *limiter) allow(source string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[source]
	if b == nil {
		return 0, true
	}
	l.level(b, l.now())
	if b.tokens >= 1 {
		return 0, true
	}
	return time.Duration((1 - b.tokens) * float64(l.refill)), false
}

// fail takes a token from source's bucket; true when that emptied it.
func (l *limiter) fail(source string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.buckets[source]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			for s, o := range l.buckets {
				if l.level(o, now); o.tokens >= l.burst {
					delete(l.buckets, s)
				}
			}
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[source] = b
	}
	l.level(b, now)
	b.tokens = math.Max(0, b.tokens-1)
	return b.tokens < 1
}

// The access denied lines a user may cause from one source: a burst of
// denyLogBurst, then one every denyLogRefill.
const (
	denyLogBurst  = 20
	denyLogRefill = time.Second
)

// denied logs an access denied line for p unless p's user has caused too
// many from its source lately; the line that empties the budget says that
// further ones are dropped for a while.
func (a *Auth) denied(p *Principal, action, resource string, extra ...any) {
	key := p.User + "\x00" + p.Addr.String()
	if _, ok := a.denyLog.allow(key); !ok {
		return
	}
	args := append([]any{"user", p.User, "source", p.Addr, "action", action, "resource", resource}, extra...)
	if a.denyLog.fail(key) {
		args = append(args, "suppressed", "further access denied lines of this user and source are dropped for a while")
	}
	a.log.Warn("audit: access denied", args...)
}
