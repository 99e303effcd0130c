package security

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/sdk"
)

func mustPolicies(t *testing.T, ps ...Policy) []policy {
	t.Helper()
	var out []policy
	for _, p := range ps {
		cp, err := compilePolicy(p)
		if err != nil {
			t.Fatalf("compile %+v: %v", p, err)
		}
		out = append(out, cp)
	}
	return out
}

func TestACLDecisions(t *testing.T) {
	pol := mustPolicies(t,
		Policy{Resources: []string{"Topic:orders"}, Actions: []string{"Pub"}},
		Policy{Resources: []string{"Topic:logs.*"}, Actions: []string{"Sub", "Get"}},
		Policy{Resources: []string{"Topic:audit*"}, Actions: []string{"pub"}},
		Policy{Resources: []string{"Group:*"}, Actions: []string{"Sub"}},
		Policy{Resources: []string{"Group:admin"}, Actions: []string{"Sub"}, Decision: "Deny"},
		Policy{Resources: []string{"Topic:logs.secret"}, Actions: []string{"All"}, Decision: "deny"},
		Policy{Resources: []string{"Cluster"}, Actions: []string{"List"}, SourceIPs: []string{"10.0.0.0/8"}},
		Policy{Resources: []string{"Topic:internal"}, Actions: []string{"Pub"}, SourceIPs: []string{"192.168.1.7"}},
	)
	lan, wan := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("203.0.113.5")
	for _, tc := range []struct {
		act  Action
		res  Resource
		from netip.Addr
		want bool
	}{
		{Pub, Topic("orders"), wan, true},
		{Sub, Topic("orders"), wan, false},      // another action
		{Pub, Topic("orders2"), wan, false},     // exact is exact
		{Sub, Topic("logs.app"), wan, true},     // prefix "logs."
		{Sub, Topic("logsx"), wan, false},       // "logs.*" needs the dot
		{Pub, Topic("audit-eu"), wan, true},     // prefix "audit"
		{Sub, Group("billing"), wan, true},      // wildcard
		{Sub, Group("admin"), wan, false},       // deny beats the wildcard allow
		{Sub, Topic("logs.secret"), wan, false}, // deny All beats allow Sub
		{Get, Topic("logs.secret"), wan, false}, // deny All beats allow Get
		{List, Cluster, lan, true},              // source 10/8
		{List, Cluster, wan, false},             // not from there
		{List, Cluster, netip.Addr{}, false},    // unknown source: no match
		{Pub, Topic("internal"), netip.MustParseAddr("192.168.1.7"), true},
		{Pub, Topic("internal"), netip.MustParseAddr("192.168.1.8"), false},
		{Delete, Group("billing"), wan, false}, // nothing allows it
		{Pub, Group("orders"), wan, false},     // a group is not a topic
	} {
		if got := decide(pol, tc.act, tc.res, tc.from); got != tc.want {
			t.Errorf("%s on %s from %v = %v, want %v", tc.act, tc.res, tc.from, got, tc.want)
		}
	}
	super := &Principal{User: "root", Super: true}
	if !super.Allowed(Delete, Group("anything")) {
		t.Error("a super user is denied")
	}
	p := &Principal{User: "u", policies: pol, Addr: wan}
	if !p.Allowed(Sub|Pub, Topic("orders")) || p.Allowed(Sub|Delete, Topic("orders")) {
		t.Error("Allowed(any of) is wrong")
	}
}

func TestValidateUsers(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	users := []User{
		{Name: "ok", PasswordHash: string(hash), Policies: []Policy{{Resources: []string{"*"}, Actions: []string{"All"}}}},
		{Name: "ok", Certificate: true},
		{Name: "a:b", PasswordHash: string(hash)},
		{Name: "%node", Certificate: true},
		{Name: "plain", PasswordHash: "hunter2"},
		{Name: "nobody"},
		{Name: "bad", Certificate: true, Policies: []Policy{{
			Resources: []string{"Queue:x", "Topic:", "Topic:a*b", "Topic:%DLQ%g"},
			Actions:   []string{"Pub", "Publish"},
			Decision:  "maybe",
			SourceIPs: []string{"10.0.0.0/33", "host"},
		}, {}}},
	}
	users = append(users, User{Name: "slow", PasswordHash: "$2a$31$" + strings.Repeat("a", 53)})
	ps := ValidateUsers("users", users)
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`users[1].name: user "ok" is already defined at users[0]`,
		`users[2].name: user name "a:b" contains ':'`,
		`users[3].name: user name "%node": names starting with % are reserved`,
		"users[4].password_hash: is not a bcrypt hash",
		`users[5]: user "nobody" can never authenticate`,
		`users[6].policies[0].resources[0]: "Queue:x": resource type "Queue" is not Topic, Group or Cluster`,
		`users[6].policies[0].resources[1]: "Topic:": the name is empty`,
		`users[6].policies[0].resources[2]: "Topic:a*b": '*' may only end a name`,
		`users[6].policies[0].resources[3]: "Topic:%DLQ%g": a group's retry and dead-letter topics are governed by the group's permissions`,
		`users[6].policies[0].actions[1]: must be one of Pub, Sub, Create, Update, Delete, Get, List, All; got "Publish"`,
		`users[6].policies[0].decision: must be Allow or Deny; got "maybe"`,
		`users[6].policies[0].source_ips[0]: "10.0.0.0/33" is not an IP address or network`,
		`users[6].policies[0].source_ips[1]: "host" is not an IP address or network`,
		"users[7].password_hash: has bcrypt cost 31, above 16",
		"users[6].policies[1].resources: at least one resource is required",
		"users[6].policies[1].actions: at least one action is required",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing problem %q in\n%s", want, all)
		}
	}
	if len(ps) != 16 {
		t.Errorf("%d problems, want 16:\n%s", len(ps), all)
	}
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func newTestAuth(t testing.TB, burst int) (*Auth, *fakeClock) {
	t.Helper()
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a, err := NewAuth(Config{
		Users:      []User{{Name: "app", PasswordHash: string(hash)}, {Name: "svc", Certificate: true}},
		FailedAuth: FailedAuth{Burst: burst, Refill: time.Second},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	a.limit.now = clk.now
	return a, clk
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestAuthenticate(t *testing.T) {
	a, _ := newTestAuth(t, 5)
	from := "10.0.0.1:5000"
	for _, tc := range []struct {
		creds *sdk.ClientCredentials
		user  string // "" : refused
		msg   string
	}{
		{&sdk.ClientCredentials{Authorization: basic("app", "pw"), RemoteAddr: from}, "app", ""},
		{&sdk.ClientCredentials{Authorization: basic("app", "nope"), RemoteAddr: from}, "", "unknown user or wrong password"},
		{&sdk.ClientCredentials{Authorization: basic("ghost", "pw"), RemoteAddr: from}, "", "unknown user or wrong password"},
		{&sdk.ClientCredentials{Authorization: "Bearer abc", RemoteAddr: from}, "", "only the Basic scheme"},
		{&sdk.ClientCredentials{Authorization: "Basic !!!", RemoteAddr: from}, "", "not base64"},
		{&sdk.ClientCredentials{CertificateNames: []string{"svc"}, RemoteAddr: from}, "svc", ""},
		{&sdk.ClientCredentials{CertificateNames: []string{"app"}, RemoteAddr: from}, "", "names no user"}, // app may not use a certificate
		{nil, "", "requires authentication"},
	} {
		p, err := a.Authenticate(tc.creds)
		switch {
		case tc.user != "" && (err != nil || p.User != tc.user):
			t.Errorf("%v: %v, %v; want %s", tc.creds, p, err, tc.user)
		case tc.user == "" && (err == nil || !strings.Contains(err.Error(), tc.msg)):
			t.Errorf("%v: %v; want an error containing %q", tc.creds, err, tc.msg)
		}
	}
	if p, _ := a.Authenticate(&sdk.ClientCredentials{Authorization: basic("app", "pw"), RemoteAddr: "[::ffff:10.0.0.9]:1"}); p == nil || p.Addr != netip.MustParseAddr("10.0.0.9") {
		t.Errorf("principal address %v, want 10.0.0.9", p)
	}
}

func TestFailedAuthLimit(t *testing.T) {
	a, clk := newTestAuth(t, 3)
	good := &sdk.ClientCredentials{Authorization: basic("app", "pw"), RemoteAddr: "10.0.0.1:1"}
	if _, err := a.Authenticate(good); err != nil {
		t.Fatal(err)
	}
	bad := &sdk.ClientCredentials{Authorization: basic("app", "guess"), RemoteAddr: "10.0.0.1:2"}
	for i := range 3 {
		if _, err := a.Authenticate(bad); err == nil || !strings.Contains(err.Error(), "wrong password") {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := a.Authenticate(bad); err == nil || !strings.Contains(err.Error(), "too many failed authentication attempts from 10.0.0.1; retry in 1s") {
		t.Fatalf("4th guess: %v; want the limit", err)
	}
	if _, err := a.Authenticate(good); err != nil {
		t.Fatalf("credentials verified before, at the limit: %v", err)
	}
	other := &sdk.ClientCredentials{Authorization: basic("app", "guess"), RemoteAddr: "10.0.0.2:1"}
	if _, err := a.Authenticate(other); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("another source: %v; want it checked", err)
	}
	clk.add(time.Second) // one token back
	if _, err := a.Authenticate(bad); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("after a refill: %v; want the guess checked", err)
	}
	if _, err := a.Authenticate(bad); err == nil || !strings.Contains(err.Error(), "too many failed") {
		t.Fatalf("right after: %v; want the limit", err)
	}
}

// Many calls with the same new credentials at once: one bcrypt check,
// all succeed; the same with wrong ones: all fail, none hangs.
func TestAuthenticateConcurrently(t *testing.T) {
	a, _ := newTestAuth(t, 1000)
	for _, tc := range []struct {
		password string
		ok       bool
	}{{"pw", true}, {"wrong", false}} {
		var wg sync.WaitGroup
		errs := make([]error, 50)
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = a.Authenticate(&sdk.ClientCredentials{Authorization: basic("app", tc.password), RemoteAddr: "10.0.0.1:1"})
			})
		}
		wg.Wait()
		for _, err := range errs {
			if (err == nil) != tc.ok {
				t.Fatalf("password %q: %v", tc.password, err)
			}
		}
	}
}

// Whatever a client sends as credentials, Authenticate neither panics nor
// lets it in without the password or a certificate naming a user.
func FuzzAuthenticate(f *testing.F) {
	for _, s := range []string{basic("app", "pw"), basic("app", "x"), "Basic", "Basic ", "basic YXBwOnB3", "Bearer x", "Basic Og==", "Basic " + strings.Repeat("A", 1000), "\x00"} {
		f.Add(s, "svc", "10.0.0.1:1")
	}
	a, _ := newTestAuth(f, 1000)
	f.Fuzz(func(t *testing.T, authz, certName, remote string) {
		p, err := a.Authenticate(&sdk.ClientCredentials{Authorization: authz, CertificateNames: []string{certName}, RemoteAddr: remote})
		if err != nil {
			if !errors.Is(err, sdk.ErrUnauthenticated) {
				t.Fatalf("error %v is not ErrUnauthenticated", err)
			}
			return
		}
		switch {
		case authz != "" && p.User == "app":
			if u, pw, err := parseBasic(authz); err != nil || u != "app" || pw != "pw" {
				t.Fatalf("%q authenticated as app", authz)
			}
		case authz == "" && p.User == "svc" && certName == "svc":
		default:
			t.Fatalf("%q / %q authenticated as %q", authz, certName, p.User)
		}
	})
}
