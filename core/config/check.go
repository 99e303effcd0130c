package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/core/stage"
)

// checker applies the rules that the types alone do not: required keys,
// ranges, enums, names, duplicates and references. It skips a key whose value
// could not be decoded, so that one mistake is one problem.
type checker struct {
	src      *source
	problems Problems
}

func (c *checker) add(path, format string, args ...any) {
	if c.src.failed(path) {
		return
	}
	c.problems = append(c.problems, c.src.problem(path, fmt.Sprintf(format, args...)))
}

// given reports whether path is written (non-null) in the file or the
// environment.
func (c *checker) given(path string) bool { return c.src.present[path] }

var nameRule = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// PluginTypeRule is what a plugin type is: a name, never a path. The plugin
// host refuses other types too (pluginhost.ValidType).
var PluginTypeRule = regexp.MustCompile(`^[a-z0-9_]+$`)

// name checks the name rule; an empty name is "is required" when required.
func (c *checker) name(path, v string, required bool) {
	switch {
	case v == "" && required && !c.given(path):
		c.add(path, "is required")
	case v == "":
		c.add(path, "must not be empty")
	case len(v) > maxNameLen:
		c.add(path, "must be at most %d characters, got %d", maxNameLen, len(v))
	case !nameRule.MatchString(v):
		c.add(path, "must be lowercase letters, digits, '_' and '-', starting with a letter or digit; got %q", v)
	}
}

// entity checks a topic or group name by the rule of core/names (the one
// the broker's admin calls apply); an empty one is "is required".
func (c *checker) entity(path, v string, rule func(string) error) {
	if v == "" && !c.given(path) {
		c.add(path, "is required")
		return
	}
	if err := rule(v); err != nil {
		c.add(path, "%v", err)
	}
}

func (c *checker) enum(path, v string, allowed []string) {
	if !slices.Contains(allowed, v) {
		c.add(path, "must be one of %s; got %q", strings.Join(allowed, ", "), v)
	}
}

func (c *checker) between(path string, v, lo, hi int) {
	if v < lo || v > hi {
		c.add(path, "must be between %d and %d, got %d", lo, hi, v)
	}
}

func (c *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		c.add(path, "must be greater than 0, got %s", d)
	}
}

func (c *checker) pipeline(p *Pipeline) {
	c.name("name", p.Name, true)
	c.node(&p.Node)
	c.plugins(&p.Plugins)

	topics := c.unique("topic", "topics", len(p.Topics), func(i int) string { return p.Topics[i].Name })
	if len(p.Topics) == 0 {
		c.add("topics", "at least one topic is required")
	}
	for i, t := range p.Topics {
		at := indexPath("topics", i)
		c.entity(at+".name", t.Name, names.Topic)
		c.between(at+".queues", t.Queues, 1, maxQueues)
		if t.RetentionBytes < 0 {
			c.add(at+".retention_bytes", "must not be negative, got %d", t.RetentionBytes)
		}
		if t.RetentionAge < 0 {
			c.add(at+".retention_age", "must not be negative, got %s", t.RetentionAge)
		}
		c.between(at+".max_message_bytes", t.MaxMessageBytes, 0, maxBodyBytes)
	}

	if a := p.Admin.Listen; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			c.add("admin.listen", "must be host:port such as 127.0.0.1:9090, got %q", a)
		}
	}
	for _, pr := range p.Admin.TLS.Validate("admin.tls") {
		c.add(pr.Path, "%s", pr.Message)
	}
	for i, ep := range p.Admin.Open {
		if ep == "pprof" {
			c.add(indexPath("admin.open", i), "pprof cannot be open: the profiler shows the process's memory; it is for super users")
			continue
		}
		c.enum(indexPath("admin.open", i), ep, adminOpen)
	}
	c.enum("producer.mode", p.Producer.Mode, producerModes)
	c.between("producer.retries", p.Producer.Retries, 0, maxRetries)
	c.positive("producer.timeout", p.Producer.Timeout)
	if l := p.Producer.Linger; l < 0 || l > 10*time.Second {
		c.add("producer.linger", "must be between 0s and 10s, got %s", l)
	}
	c.between("producer.max_inflight", p.Producer.MaxInflight, 1, 1000000)

	c.unique("generator", "generators", len(p.Generators), func(i int) string { return p.Generators[i].Name })
	for i, g := range p.Generators {
		at := indexPath("generators", i)
		c.name(at+".name", g.Name, true)
		c.topicRef(at+".topic", g.Topic, topics)
		switch {
		case g.Count == 0 && !c.given(at+".count"):
			c.add(at+".count", "is required")
		case g.Count < 1:
			c.add(at+".count", "must be at least 1, got %d", g.Count)
		}
		c.between(at+".size", g.Size, 1, maxBodyBytes)
		if g.Rate < 0 {
			c.add(at+".rate", "must not be negative, got %g", g.Rate)
		}
		if g.Mode != "" || c.given(at+".mode") {
			c.enum(at+".mode", g.Mode, producerModes)
		}
	}

	c.unique("flow", "flows", len(p.Flows), func(i int) string { return p.Flows[i].Name })
	groupTopic := map[string]int{} // group → first flow using it
	dupName := map[string]bool{}   // flow names seen (a duplicate is reported already)
	for i, f := range p.Flows {
		dup := dupName[f.Name]
		dupName[f.Name] = true
		at := indexPath("flows", i)
		c.name(at+".name", f.Name, true)
		c.topicRef(at+".topic", f.Topic, topics)
		if c.given(at + ".group") {
			c.entity(at+".group", f.Group, names.Group)
		}
		if j, ok := groupTopic[f.Group]; ok && f.Group != "" && f.Topic != "" && p.Flows[j].Topic != f.Topic && !dup {
			c.add(at+".topic", "flow %q is in group %q, which flow %q uses on topic %q: a group consumes one topic (give this flow its own group)",
				f.Name, f.Group, p.Flows[j].Name, p.Flows[j].Topic)
		} else if !ok {
			groupTopic[f.Group] = i
		}
		c.enum(at+".delivery", f.Delivery, deliveryModes)
		if f.OnCorrupt != "" {
			c.enum(at+".on_corrupt", f.OnCorrupt, corruptPolicies)
		}
		if f.Orderly && f.Delivery == "pull" {
			c.add(at+".orderly", "applies only to delivery push")
		}
		c.between(at+".concurrency", f.Concurrency, 1, maxConcurrency)
		c.between(at+".max_inflight", f.MaxInflight, 1, maxInflight)
		c.stages(at+".stages", f.Stages)
		c.sink(at+".sink", f.Sink)
	}

	c.tracing(&p.Tracing)
}

func (c *checker) node(n *Node) {
	c.name("node.id", n.ID, true)
	if n.DataDir == "" {
		c.add("node.data_dir", "must not be empty")
	}
	c.enum("node.role", n.Role, nodeRoles)
	c.positive("node.shutdown_timeout", n.ShutdownTimeout)
	c.positive("node.ephemeral_group_ttl", n.EphemeralGroupTTL)
	c.between("node.auto_create_topics.queues", n.AutoCreateTopics.Queues, 1, maxQueues)
}

func (c *checker) plugins(p *Plugins) {
	c.enum("plugins.mode", p.Mode, pluginModes)
	c.enum("plugins.data_plane", p.DataPlane, dataPlanes)
	if k := p.RingSizeKiB; k != 0 && (k < 64 || k > 1<<20 || k&(k-1) != 0) {
		c.add("plugins.ring_size_kib", "%d: must be a power of two between 64 and 1048576 (KiB)", k)
	}
	for i, d := range p.Dirs {
		if d == "" {
			c.add(indexPath("plugins.dirs", i), "must not be empty")
		}
	}
	for _, r := range []struct {
		kind string
		ref  PluginRef
	}{{"storage", p.Storage}, {"transport", p.Transport}, {"replication", p.Replication}} {
		// Whether the type exists is ValidatePlugins' business; that it is
		// a name, never a path, is checked here, before anything runs.
		switch {
		case r.ref.Type == "":
			c.add("plugins."+r.kind+".type", "is required")
		case !PluginTypeRule.MatchString(r.ref.Type):
			c.add("plugins."+r.kind+".type", "must be a plugin type name of lowercase letters, digits and '_' (an external plugin is the executable ferry-%s-<type> in plugins.dirs, never a path); got %q", r.kind, r.ref.Type)
		}
	}
}

// stages checks each stage's type against the stage registry of core/stage
// and lets the stage check its config section.
func (c *checker) stages(at string, stages []Stage) {
	types := stage.Types()
	for j, s := range stages {
		sp := indexPath(at, j)
		switch {
		case s.Type == "" && !c.given(sp+".type"):
			c.add(sp+".type", "is required (known types: %s)", strings.Join(types, ", "))
			continue
		case !stage.Known(s.Type):
			c.enum(sp+".type", s.Type, types)
			continue
		}
		if c.src.failed(sp + ".config") {
			continue
		}
		for _, p := range stage.Check(s.Type, s.Config) {
			path := sp + ".config"
			if p.Path != "" {
				path = joinPath(path, p.Path)
			}
			c.add(path, "%s", p.Message)
		}
	}
}

// sinkKeys says which sink types each type-specific key applies to.
var sinkKeys = []struct {
	key   string
	types []string
}{
	{"every", []string{"count"}},
	{"format", []string{"stdout", "file"}},
	{"path", []string{"file"}},
	{"command", []string{"exec"}},
	{"args", []string{"exec"}},
	{"url", []string{"webhook"}},
	{"headers", []string{"webhook"}},
	{"timeout", []string{"exec", "webhook"}},
}

func (c *checker) sink(at string, s Sink) {
	if s.Type == "" && !c.given(at+".type") {
		c.add(at+".type", "is required (one of %s)", strings.Join(sinkTypes, ", "))
	} else {
		c.enum(at+".type", s.Type, sinkTypes)
	}
	known := slices.Contains(sinkTypes, s.Type)
	for _, k := range sinkKeys {
		if known && c.given(at+"."+k.key) && !slices.Contains(k.types, s.Type) {
			c.add(at+"."+k.key, "applies only to sink type %s, not %s", strings.Join(k.types, " and "), s.Type)
		}
	}
	if s.Every < 0 {
		c.add(at+".every", "must not be negative, got %d", s.Every)
	}
	if s.Format != "" || c.given(at+".format") {
		c.enum(at+".format", s.Format, sinkFormats)
	}
	if c.given(at+".timeout") && s.Timeout <= 0 {
		c.add(at+".timeout", "must be greater than 0, got %s", s.Timeout)
	}
	switch s.Type {
	case "file":
		if s.Path == "" {
			c.add(at+".path", "is required for sink type file: the file messages are appended to")
		}
	case "exec":
		if s.Command == "" {
			c.add(at+".command", "is required for sink type exec: the program run for each message")
		}
	case "webhook":
		c.webhookURL(at+".url", s.URL)
		for k := range s.Headers {
			if !validHeaderName(k) {
				c.add(joinPath(at+".headers", k), "is not a valid HTTP header name")
			}
		}
	}
}

func (c *checker) webhookURL(path, raw string) {
	if raw == "" {
		c.add(path, "is required for sink type webhook, such as \"http://127.0.0.1:8080/hook\"")
		return
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		c.add(path, "is not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		c.add(path, "must be an http:// or https:// URL, got %q", raw)
	case u.Host == "":
		c.add(path, "must name a host, got %q", raw)
	}
}

// validHeaderName reports whether s is an HTTP header name (an RFC 7230
// token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r >= 0x80 || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) || r == 0x7f {
			return false
		}
	}
	return true
}

func (c *checker) tracing(t *Tracing) {
	c.enum("tracing.exporter", t.Exporter, tracingExporter)
	if t.Exporter == "otlp" {
		if t.Endpoint == "" {
			c.add("tracing.endpoint", "is required when exporter is otlp (host:port)")
		}
	}
	if t.Endpoint != "" {
		if _, port, err := net.SplitHostPort(t.Endpoint); err != nil || port == "" {
			c.add("tracing.endpoint", "must be host:port, got %q", t.Endpoint)
		}
	}
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		c.add("tracing.sample_ratio", "must be between 0 and 1, got %g", t.SampleRatio)
	}
	if t.ServiceName == "" {
		c.add("tracing.service_name", "must not be empty")
	}
}

// unique reports every repeated name in a list (what names the items, the
// list's key and the items' names) and returns the set of names.
func (c *checker) unique(what, list string, n int, name func(int) string) map[string]bool {
	first := map[string]int{}
	for i := range n {
		v := name(i)
		if v == "" {
			continue
		}
		if j, dup := first[v]; dup {
			prev := indexPath(list, j)
			where := prev
			if l := c.src.line(prev); l > 0 {
				where = fmt.Sprintf("%s, line %d", prev, l)
			}
			c.add(indexPath(list, i)+".name", "duplicate %s name %q (first at %s)", what, v, where)
			continue
		}
		first[v] = i
	}
	set := make(map[string]bool, len(first))
	for v := range first {
		set[v] = true
	}
	return set
}

func (c *checker) topicRef(path, topic string, topics map[string]bool) {
	switch {
	case topic == "":
		c.add(path, "is required")
	case !topics[topic]:
		declared := make([]string, 0, len(topics))
		for t := range topics {
			declared = append(declared, t)
		}
		slices.Sort(declared)
		if len(declared) == 0 {
			c.add(path, "names topic %q, which is not declared in topics", topic)
		} else {
			c.add(path, "names topic %q, which is not declared in topics (declared: %s)", topic, strings.Join(declared, ", "))
		}
	}
}
