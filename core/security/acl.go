package security

import (
	"fmt"
	"net/netip"
	"strings"
)

// Action is what a request does to a resource (RocketMQ ACL 2.0's actions).
type Action uint8

// The actions. All, in a policy, is every one of them.
const (
	Pub Action = 1 << iota
	Sub
	Create
	Update
	Delete
	Get
	List

	All = Pub | Sub | Create | Update | Delete | Get | List
)

var actionNames = []struct {
	a    Action
	name string
}{{Pub, "Pub"}, {Sub, "Sub"}, {Create, "Create"}, {Update, "Update"}, {Delete, "Delete"}, {Get, "Get"}, {List, "List"}}

const actionList = "Pub, Sub, Create, Update, Delete, Get, List, All"

func (a Action) String() string {
	var names []string
	for _, n := range actionNames {
		if a&n.a != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// parseAction reads an action name, case-insensitively.
func parseAction(s string) (Action, bool) {
	if strings.EqualFold(s, "All") {
		return All, true
	}
	for _, n := range actionNames {
		if strings.EqualFold(s, n.name) {
			return n.a, true
		}
	}
	return 0, false
}

// ResourceType is the kind of a resource.
type ResourceType uint8

// The resource types.
const (
	TopicResource ResourceType = iota + 1
	GroupResource
	ClusterResource
)

// Resource is what a request acts on: a topic, a consumer group, or the
// cluster (the node) itself.
type Resource struct {
	Type ResourceType
	Name string // "" for the cluster
}

// Topic, Group and Cluster name resources.
func Topic(name string) Resource { return Resource{TopicResource, name} }
func Group(name string) Resource { return Resource{GroupResource, name} }

// Cluster is the node itself.
var Cluster = Resource{Type: ClusterResource}

func (r Resource) String() string {
	switch r.Type {
	case TopicResource:
		return "Topic:" + r.Name
	case GroupResource:
		return "Group:" + r.Name
	case ClusterResource:
		return "Cluster"
	}
	return "?"
}

// pattern is a policy's resource: any resource, or one type with an exact
// name or a name prefix.
type pattern struct {
	any    bool
	typ    ResourceType
	name   string
	prefix bool // name is a prefix
}

// parsePattern reads "*", "Cluster", "Topic:NAME" or "Group:NAME", where
// NAME is exact, ends in '*' (a prefix) or is "*"; the type is matched
// case-insensitively.
func parsePattern(s string) (pattern, error) {
	if s == "*" {
		return pattern{any: true}, nil
	}
	if strings.EqualFold(s, "Cluster") {
		return pattern{typ: ClusterResource}, nil
	}
	typ, name, ok := strings.Cut(s, ":")
	var p pattern
	switch {
	case !ok:
		return p, fmt.Errorf("%q is not a resource: write Topic:NAME, Group:NAME, Cluster or *", s)
	case strings.EqualFold(typ, "Topic"):
		p.typ = TopicResource
	case strings.EqualFold(typ, "Group"):
		p.typ = GroupResource
	default:
		return p, fmt.Errorf("%q: resource type %q is not Topic, Group or Cluster", s, typ)
	}
	if name == "" {
		return p, fmt.Errorf("%q: the name is empty (use %s:* for every one)", s, typ)
	}
	if strings.HasPrefix(name, "%") {
		return p, fmt.Errorf("%q: a group's retry and dead-letter topics are governed by the group's permissions: name Group:<group> instead", s)
	}
	if before, ok := strings.CutSuffix(name, "*"); ok {
		if strings.Contains(before, "*") {
			return p, fmt.Errorf("%q: '*' may only end a name (a prefix)", s)
		}
		p.name, p.prefix = before, true
		return p, nil
	}
	if strings.Contains(name, "*") {
		return p, fmt.Errorf("%q: '*' may only end a name (a prefix)", s)
	}
	p.name = name
	return p, nil
}

func (p pattern) matches(r Resource) bool {
	switch {
	case p.any:
		return true
	case p.typ != r.Type:
		return false
	case p.typ == ClusterResource:
		return true
	case p.prefix:
		return strings.HasPrefix(r.Name, p.name)
	}
	return p.name == r.Name
}

// policy is a Policy in matching form.
type policy struct {
	resources []pattern
	actions   Action
	deny      bool
	sources   []netip.Prefix // empty: any source
}

func (p *policy) matches(a Action, r Resource, from netip.Addr) bool {
	if p.actions&a == 0 {
		return false
	}
	if len(p.sources) > 0 {
		in := false
		for _, s := range p.sources {
			if from.IsValid() && s.Contains(from) {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	for _, pat := range p.resources {
		if pat.matches(r) {
			return true
		}
	}
	return false
}

// decide is the ACL's answer for one action on one resource from one
// address: an entry that denies it wins over any that allows it, and what
// no entry allows is denied.
func decide(policies []policy, a Action, r Resource, from netip.Addr) bool {
	allowed := false
	for i := range policies {
		p := &policies[i]
		if !p.matches(a, r, from) {
			continue
		}
		if p.deny {
			return false
		}
		allowed = true
	}
	return allowed
}
