package security

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ferrymq/ferry/core/sdk"
)

// ActionACLCheck is the admin action of `ferry acl check`.
const ActionACLCheck = "AclCheck"

// CheckResult is the answer of `ferry acl check` (GET
// /v1/users/{name}/check): whether the user may do the action on the
// resource from the source address, and which entry decided.
type CheckResult struct {
	User     string `json:"user"`
	Action   string `json:"action"`
	Resource string `json:"resource"`
	SourceIP string `json:"source_ip,omitempty"`
	Allowed  bool   `json:"allowed"`
	// Reason is "super user", "allowed by: <entry>", "denied by:
	// <entry>" (a Deny wins) or "no entry allows it".
	Reason string `json:"reason"`
}

// Check answers whether user name may do action (one action name, not
// All) on resource (Topic:NAME, Group:NAME or Cluster, exact) from source
// (an IP address; "" for a client whose address no entry's source_ips
// contains), as the node would judge a request now, with the entry that
// decided. Bad input is an sdk.ErrInvalidArgument naming it; an unknown
// user ErrNoUser.
func (a *Auth) Check(name, action, resource, source string) (CheckResult, error) {
	res := CheckResult{User: name, Action: action, Resource: resource, SourceIP: source}
	act, ok := parseAction(action)
	if !ok || act == All {
		return res, fmt.Errorf("%w: action %q: give one of Pub, Sub, Create, Update, Delete, Get, List", sdk.ErrInvalidArgument, action)
	}
	pat, err := parsePattern(resource)
	if err != nil {
		return res, fmt.Errorf("%w: resource %v", sdk.ErrInvalidArgument, err)
	}
	if pat.any || pat.prefix {
		return res, fmt.Errorf("%w: resource %q: give one topic or group by its name (Topic:NAME, Group:NAME) or Cluster, not a pattern", sdk.ErrInvalidArgument, resource)
	}
	r := Resource{Type: pat.typ, Name: pat.name}
	var from netip.Addr
	if source != "" {
		if from, err = netip.ParseAddr(source); err != nil {
			return res, fmt.Errorf("%w: source ip %q is not an IP address", sdk.ErrInvalidArgument, source)
		}
		from = from.Unmap()
	}
	res.Action, res.Resource = act.String(), r.String()
	acc := (*a.users.Load())[name]
	if acc == nil {
		return res, fmt.Errorf("%w: %q", ErrNoUser, name)
	}
	if acc.user.Super {
		res.Allowed, res.Reason = true, "super user"
		return res, nil
	}
	res.Reason = "no entry allows it"
	for i := range acc.policies {
		p := &acc.policies[i]
		if !p.matches(act, r, from) {
			continue
		}
		if p.deny {
			res.Allowed, res.Reason = false, "denied by: "+PolicyString(acc.user.Policies[i])
			return res, nil
		}
		if !res.Allowed {
			res.Allowed, res.Reason = true, "allowed by: "+PolicyString(acc.user.Policies[i])
		}
	}
	return res, nil
}

// String is the result as `ferry acl check` prints it.
func (c CheckResult) String() string {
	verdict := "denied"
	if c.Allowed {
		verdict = "allowed"
	}
	from := ""
	if c.SourceIP != "" {
		from = " from " + c.SourceIP
	}
	return strings.TrimSpace(fmt.Sprintf("%s: user %q %s on %s%s (%s)", verdict, c.User, c.Action, c.Resource, from, c.Reason))
}
