package security

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/sdk"
)

// Config is a node's security section: who may talk to its client-facing
// transports, and what each may do. With no users (inline or in a users
// file) the node is open, as it has always been: anybody who reaches the
// transport may do anything.
//
//	security:
//	  users_file: /etc/ferry/users.yaml   # more users, in a file of its own
//	  users:
//	    - name: orders-app
//	      password_hash: $2a$10$...      # ferry user hash
//	      policies:
//	        - resources: [Topic:orders.*, Group:billing]
//	          actions: [Pub, Sub]
//	    - name: admin
//	      certificate: true              # mutual TLS: a certificate naming "admin"
//	      super: true
//	  failed_auth: {burst: 5, refill: 1s}
type Config struct {
	Users []User `koanf:"users"`
	// UsersFile names a YAML file holding more users under the key users,
	// in the same form; relative paths are relative to the pipeline file.
	UsersFile  string     `koanf:"users_file"`
	FailedAuth FailedAuth `koanf:"failed_auth"`
	// AllowPlaintext lets listeners beyond loopback run without TLS and
	// authentication (each is logged as a warning at every start);
	// default false: such a listener is an error at start (Exposure).
	AllowPlaintext bool `koanf:"allow_plaintext"`
}

// Enabled reports whether the node authenticates its clients.
func (c Config) Enabled() bool { return len(c.Users) > 0 || c.UsersFile != "" }

// User is one user of the node.
type User struct {
	// Name is what the client sends as its user (and, with Certificate,
	// what its certificate names). Unique.
	Name string `koanf:"name" yaml:"name" json:"name"`
	// PasswordHash is the bcrypt hash of the user's password (`ferry user
	// hash`); never the password itself.
	PasswordHash string `koanf:"password_hash" yaml:"password_hash" json:"password_hash,omitempty"`
	// Certificate lets a client authenticate as this user by a client
	// certificate (mutual TLS) whose common name or a subject alternative
	// name is Name.
	Certificate bool `koanf:"certificate" yaml:"certificate" json:"certificate,omitempty"`
	// Super users may do everything; their policies are not consulted.
	Super    bool     `koanf:"super" yaml:"super" json:"super,omitempty"`
	Policies []Policy `koanf:"policies" yaml:"policies" json:"policies,omitempty"`
}

// Policy is one entry of a user's access control list (RocketMQ ACL 2.0):
// on Resources, Actions are allowed or denied, optionally only from
// SourceIPs. A request is allowed when an Allow entry matches it and no Deny
// entry does.
type Policy struct {
	// Resources: "Topic:NAME", "Group:NAME", "Cluster", or "*" (everything).
	// NAME is exact, a prefix ending in '*' ("orders.*" matches
	// "orders.eu"; "orders*" matches "orders-eu" too), or "*".
	Resources []string `koanf:"resources" yaml:"resources" json:"resources"`
	// Actions: Pub, Sub, Create, Update, Delete, Get, List, or All.
	Actions []string `koanf:"actions" yaml:"actions" json:"actions"`
	// Decision is Allow (default) or Deny.
	Decision string `koanf:"decision" yaml:"decision" json:"decision,omitempty"`
	// SourceIPs limits the entry to clients from these addresses or
	// networks ("10.0.0.0/8", "127.0.0.1"); empty: from anywhere.
	SourceIPs []string `koanf:"source_ips" yaml:"source_ips" json:"source_ips,omitempty"`
}

// FailedAuth limits failed authentication attempts per client address: a
// token bucket of Burst attempts that gains one every Refill. A source whose
// bucket is empty is refused without its credentials being checked.
type FailedAuth struct {
	Burst  int           `koanf:"burst"`  // 0: DefaultFailedAuthBurst; at most 1000
	Refill time.Duration `koanf:"refill"` // 0: DefaultFailedAuthRefill
}

// withDefaults fills in the zero values.
func (f FailedAuth) withDefaults() FailedAuth {
	if f.Burst == 0 {
		f.Burst = DefaultFailedAuthBurst
	}
	if f.Refill == 0 {
		f.Refill = DefaultFailedAuthRefill
	}
	return f
}

// Defaults of FailedAuth.
const (
	DefaultFailedAuthBurst  = 5
	DefaultFailedAuthRefill = time.Second
)

// Validate reports every problem of the section, with paths under prefix
// ("security"). Users read from users_file are checked by ValidateUsers.
func (c Config) Validate(prefix string) sdk.Problems {
	ps := ValidateUsers(prefix+".users", c.Users)
	if b := c.FailedAuth.Burst; b < 0 || b > 1000 {
		ps = append(ps, sdk.Problem{Path: prefix + ".failed_auth.burst", Message: fmt.Sprintf("must be between 1 and 1000 (0: the default, %d), got %d", DefaultFailedAuthBurst, b)})
	}
	if r := c.FailedAuth.Refill; r < 0 {
		ps = append(ps, sdk.Problem{Path: prefix + ".failed_auth.refill", Message: fmt.Sprintf("must be a positive duration (0: the default, %s), got %s", DefaultFailedAuthRefill, r)})
	}
	return ps
}

// ValidateUsers reports every problem of a list of users at path ("users"):
// names (unique, no ':', no spaces or control characters), hashes that are
// not bcrypt, users that cannot authenticate at all, and malformed
// policies.
// MaxHashCost bounds a password hash's bcrypt cost: each step doubles the
// time a check takes (cost 16 is seconds; 31, bcrypt's largest, years).
const MaxHashCost = 16

func ValidateUsers(path string, users []User) sdk.Problems {
	var ps sdk.Problems
	add := func(p, format string, args ...any) {
		ps = append(ps, sdk.Problem{Path: p, Message: fmt.Sprintf(format, args...)})
	}
	seen := map[string]int{}
	for i, u := range users {
		at := fmt.Sprintf("%s[%d]", path, i)
		if err := checkUserName(u.Name); err != nil {
			add(at+".name", "%v", err)
		} else if j, dup := seen[u.Name]; dup {
			add(at+".name", "user %q is already defined at %s[%d]", u.Name, path, j)
		} else {
			seen[u.Name] = i
		}
		switch {
		case u.PasswordHash != "":
			if c, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
				add(at+".password_hash", "is not a bcrypt hash (%v): store the output of `ferry user hash`, never the password", err)
			} else if c > MaxHashCost {
				add(at+".password_hash", "has bcrypt cost %d, above %d: every login (and the node's start) would take minutes to days; make it again with `ferry user hash --cost %d` or less", c, MaxHashCost, MaxHashCost)
			}
		case !u.Certificate:
			add(at, "user %q can never authenticate: give it a password_hash or certificate: true", u.Name)
		}
		for j, p := range u.Policies {
			pat := fmt.Sprintf("%s.policies[%d]", at, j)
			if _, err := compilePolicy(p); err != nil {
				for _, pe := range err.(policyErrors) {
					add(pat+"."+pe.key, "%s", pe.msg)
				}
			}
		}
	}
	return ps
}

// maxUserName bounds a user name.
const maxUserName = 128

func checkUserName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("is required")
	case len(n) > maxUserName:
		return fmt.Errorf("must be at most %d bytes, got %d", maxUserName, len(n))
	case strings.HasPrefix(n, "%"):
		return fmt.Errorf("user name %q: names starting with %% are reserved for Ferry's own users", n)
	case strings.Contains(n, ":"):
		return fmt.Errorf("user name %q contains ':', which separates user and password in HTTP Basic credentials", n)
	}
	for _, r := range n {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("user name %q contains %q: spaces and control characters are not allowed", n, r)
		}
	}
	return nil
}

type policyError struct{ key, msg string }

type policyErrors []policyError

func (e policyErrors) Error() string {
	var b strings.Builder
	for i, pe := range e {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(pe.key + ": " + pe.msg)
	}
	return b.String()
}

// compilePolicy checks p and turns it into its matching form; the error is
// policyErrors.
func compilePolicy(p Policy) (policy, error) {
	var (
		out  policy
		errs policyErrors
	)
	if len(p.Resources) == 0 {
		errs = append(errs, policyError{"resources", "at least one resource is required (Topic:NAME, Group:NAME, Cluster or *)"})
	}
	for i, r := range p.Resources {
		pat, err := parsePattern(r)
		if err != nil {
			errs = append(errs, policyError{fmt.Sprintf("resources[%d]", i), err.Error()})
			continue
		}
		out.resources = append(out.resources, pat)
	}
	if len(p.Actions) == 0 {
		errs = append(errs, policyError{"actions", "at least one action is required (" + actionList + ")"})
	}
	for i, a := range p.Actions {
		act, ok := parseAction(a)
		if !ok {
			errs = append(errs, policyError{fmt.Sprintf("actions[%d]", i), fmt.Sprintf("must be one of %s; got %q", actionList, a)})
			continue
		}
		out.actions |= act
	}
	switch strings.ToLower(p.Decision) {
	case "", "allow":
	case "deny":
		out.deny = true
	default:
		errs = append(errs, policyError{"decision", fmt.Sprintf("must be Allow or Deny; got %q", p.Decision)})
	}
	for i, s := range p.SourceIPs {
		pfx, err := parseSource(s)
		if err != nil {
			errs = append(errs, policyError{fmt.Sprintf("source_ips[%d]", i), err.Error()})
			continue
		}
		out.sources = append(out.sources, pfx)
	}
	if len(errs) > 0 {
		return policy{}, errs
	}
	return out, nil
}

// parseSource reads an address ("10.1.2.3") or network ("10.0.0.0/8").
func parseSource(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network (CIDR such as 10.0.0.0/8)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network (CIDR such as 10.0.0.0/8)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
