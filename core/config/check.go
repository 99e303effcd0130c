package config

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"
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
		c.name(at+".name", t.Name, true)
		c.between(at+".queues", t.Queues, 1, maxQueues)
	}

	c.enum("producer.mode", p.Producer.Mode, producerModes)
	c.between("producer.retries", p.Producer.Retries, 0, maxRetries)
	c.positive("producer.timeout", p.Producer.Timeout)

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
	for i, f := range p.Flows {
		at := indexPath("flows", i)
		c.name(at+".name", f.Name, true)
		c.topicRef(at+".topic", f.Topic, topics)
		if c.given(at + ".group") {
			c.name(at+".group", f.Group, false)
		}
		c.enum(at+".delivery", f.Delivery, deliveryModes)
		for j, s := range f.Stages {
			sp := indexPath(at+".stages", j)
			if s.Type == "" && !c.given(sp+".type") {
				c.add(sp+".type", "is required (known types: %s)", strings.Join(stageTypes, ", "))
			} else {
				c.enum(sp+".type", s.Type, stageTypes)
			}
		}
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
}

func (c *checker) plugins(p *Plugins) {
	c.enum("plugins.mode", p.Mode, pluginModes)
	for i, d := range p.Dirs {
		if d == "" {
			c.add(indexPath("plugins.dirs", i), "must not be empty")
		}
	}
	for _, r := range []struct {
		kind string
		ref  PluginRef
	}{{"storage", p.Storage}, {"transport", p.Transport}, {"replication", p.Replication}} {
		// Whether the type exists is ValidatePlugins' business.
		if r.ref.Type == "" {
			c.add("plugins."+r.kind+".type", "is required")
		}
	}
}

func (c *checker) sink(at string, s Sink) {
	if s.Type == "" && !c.given(at+".type") {
		c.add(at+".type", "is required (one of %s)", strings.Join(sinkTypes, ", "))
	} else {
		c.enum(at+".type", s.Type, sinkTypes)
	}
	switch {
	case s.Every < 0:
		c.add(at+".every", "must not be negative, got %d", s.Every)
	case s.Every > 0 && s.Type != "count" && slices.Contains(sinkTypes, s.Type):
		c.add(at+".every", "applies only to sink type count, not %s", s.Type)
	}
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
