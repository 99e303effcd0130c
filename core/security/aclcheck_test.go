package security

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/sdk"
)

// TestCheck: `ferry acl check`'s answer for every kind of entry (super,
// allow, a deny that wins, a source condition, nothing matching), and the
// entry it names; each answer agrees with the decision a request of the
// same user from the same address gets (Principal.Allowed). Bad input is
// refused naming it.
func TestCheck(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	h := string(hash)
	a, err := NewAuth(Config{Users: []User{
		{Name: "root", PasswordHash: h, Super: true},
		{Name: "billing", PasswordHash: h, Policies: []Policy{
			{Resources: []string{"Topic:orders.*", "Group:billing"}, Actions: []string{"Sub", "Get"}},
			{Resources: []string{"Topic:orders.internal"}, Actions: []string{"All"}, Decision: "Deny"},
			{Resources: []string{"Group:billing"}, Actions: []string{"Delete"}, SourceIPs: []string{"10.0.0.0/8"}},
		}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, action, resource, source string
		allowed                        bool
		reason                         string
	}{
		{"root", "Delete", "Topic:anything", "", true, "super user"},
		{"billing", "Sub", "Topic:orders.eu", "192.168.1.1", true, "allowed by: Allow Sub,Get on Topic:orders.*,Group:billing"},
		{"billing", "sub", "topic:orders.eu", "", true, "allowed by: Allow Sub,Get on Topic:orders.*,Group:billing"},
		{"billing", "Sub", "Topic:orders.internal", "10.1.2.3", false, "denied by: Deny All on Topic:orders.internal"},
		{"billing", "Pub", "Topic:orders.eu", "10.1.2.3", false, "no entry allows it"},
		{"billing", "Delete", "Group:billing", "10.1.2.3", true, "allowed by: Allow Delete on Group:billing from 10.0.0.0/8"},
		{"billing", "Delete", "Group:billing", "192.168.1.1", false, "no entry allows it"},
		{"billing", "Get", "Cluster", "", false, "no entry allows it"},
	} {
		res, err := a.Check(tc.user, tc.action, tc.resource, tc.source)
		if err != nil || res.Allowed != tc.allowed || res.Reason != tc.reason {
			t.Errorf("check %s %s %s from %q: %+v, %v; want allowed %v (%s)", tc.user, tc.action, tc.resource, tc.source, res, err, tc.allowed, tc.reason)
			continue
		}
		// The same decision as a real request's.
		remote := "127.0.0.7:1"
		if tc.source != "" {
			remote = tc.source + ":1"
		}
		p, err := a.Authenticate(&sdk.ClientCredentials{Authorization: basic(tc.user, "pw"), RemoteAddr: remote})
		if err != nil {
			t.Fatal(err)
		}
		act, _ := parseAction(tc.action)
		pat, _ := parsePattern(tc.resource)
		if got := p.Allowed(act, Resource{pat.typ, pat.name}); got != tc.allowed {
			t.Errorf("%s %s %s from %q: a request is allowed %v, check says %v", tc.user, tc.action, tc.resource, tc.source, got, tc.allowed)
		}
	}
	for _, tc := range []struct{ user, action, resource, source, want string }{
		{"billing", "All", "Topic:x", "", `action "All"`},
		{"billing", "Publish", "Topic:x", "", `action "Publish"`},
		{"billing", "Pub", "Topic:orders.*", "", "not a pattern"},
		{"billing", "Pub", "*", "", "not a pattern"},
		{"billing", "Pub", "Queue:x", "", "is not Topic, Group or Cluster"},
		{"billing", "Pub", "Topic:%DLQ%billing", "", "Group:<group>"},
		{"billing", "Pub", "Topic:x", "10.0.0", "not an IP address"},
	} {
		_, err := a.Check(tc.user, tc.action, tc.resource, tc.source)
		if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("check %s %s %q: %v; want invalid, naming %q", tc.action, tc.resource, tc.source, err, tc.want)
		}
	}
	if _, err := a.Check("ghost", "Pub", "Topic:x", ""); !errors.Is(err, ErrNoUser) {
		t.Errorf("check of an unknown user: %v; want ErrNoUser", err)
	}
}

// FuzzCheck: any action, resource and source given to `ferry acl check`
// is answered or refused as invalid, never a panic; an answer always
// agrees with the decision a request of the user from that address gets.
func FuzzCheck(f *testing.F) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a, err := NewAuth(Config{Users: []User{{Name: "billing", PasswordHash: string(hash), Policies: []Policy{
		{Resources: []string{"Topic:orders.*", "Group:billing"}, Actions: []string{"Sub", "Get"}},
		{Resources: []string{"Topic:orders.internal"}, Actions: []string{"All"}, Decision: "Deny"},
		{Resources: []string{"*"}, Actions: []string{"List"}, SourceIPs: []string{"10.0.0.0/8", "fd00::/8"}},
	}}}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	p, err := a.Authenticate(&sdk.ClientCredentials{Authorization: basic("billing", "pw"), RemoteAddr: "127.0.0.1:1"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][3]string{{"Sub", "Topic:orders.eu", ""}, {"List", "Cluster", "10.1.1.1"}, {"get", "group:billing", "fd00::1"},
		{"Sub", "Topic:orders.internal", ""}, {"All", "*", "x"}, {"Pub", "Topic:%DLQ%g", ""}, {"Sub", "Topic:", "::ffff:10.0.0.1"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, action, resource, source string) {
		res, err := a.Check("billing", action, resource, source)
		if err != nil {
			if !errors.Is(err, sdk.ErrInvalidArgument) {
				t.Fatalf("check %q %q %q: %v; want an answer or invalid argument", action, resource, source, err)
			}
			return
		}
		act, _ := parseAction(action)
		pat, _ := parsePattern(resource)
		from, _ := netip.ParseAddr(source)
		q := *p
		q.Addr = from.Unmap()
		if got := q.Allowed(act, Resource{pat.typ, pat.name}); got != res.Allowed {
			t.Fatalf("check %q %q %q says allowed %v (%s); a request's decision is %v", action, resource, source, res.Allowed, res.Reason, got)
		}
	})
}
