package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// noEnv is an environment without overrides, so that tests do not depend on
// the FERRY_ variables of whoever runs them.
func noEnv() []string { return nil }

func loadFile(t *testing.T, path string, env ...string) (*Pipeline, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return load(path, data, func() []string { return env })
}

func TestLoadAppliesDefaults(t *testing.T) {
	p, err := loadFile(t, "testdata/minimal.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.Name = "demo"
	want.File = "testdata/minimal.yaml"
	want.Node.DataDir = filepath.Join("data", "demo")
	want.Tracing.ServiceName = "ferry-node-1"
	want.Topics = []Topic{{Name: "orders", Queues: 4}}
	p.src = nil
	if !reflect.DeepEqual(*p, want) {
		t.Errorf("got\n%+v\nwant\n%+v", *p, want)
	}
}

func TestLoadKeepsEveryExplicitValue(t *testing.T) {
	p, err := loadFile(t, "testdata/full.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Pipeline{
		Name: "orders-pipeline",
		File: "testdata/full.yaml",
		Node: Node{ID: "broker-a", DataDir: "/var/lib/ferry/orders", Role: "master", ShutdownTimeout: 30 * time.Second, EphemeralGroupTTL: 30 * time.Second,
			AutoCreateTopics: AutoCreateTopics{Queues: 4}},
		Plugins: Plugins{
			Mode:      "inprocess",
			DataPlane: "grpc",
			Dirs:      []string{"./bin", "/opt/ferry/plugins"},
			Storage: PluginRef{Type: "file", Config: map[string]any{
				"segment_bytes": "64MiB",
				"flush":         map[string]any{"mode": "async", "interval": "200ms"},
			}},
			Transport:   PluginRef{Type: "grpc", Config: map[string]any{"listen": "127.0.0.1:7070"}},
			Replication: PluginRef{Type: "none"},
		},
		Topics:   []Topic{{Name: "orders", Queues: 8}, {Name: "audit", Queues: 4}},
		Producer: ProducerDefaults{Mode: "async", Retries: 5, Timeout: 1500 * time.Millisecond, Linger: 5 * time.Millisecond, MaxInflight: 256},
		Generators: []Generator{
			{Name: "load", Topic: "orders", Count: 1000, Size: 512, Rate: 200, Mode: "oneway"},
			{Name: "trickle", Topic: "audit", Count: 10, Size: 256, Rate: 0.5},
		},
		Flows: []Flow{
			{Name: "billing", Topic: "orders", Group: "billing-v2", Delivery: "pull", Concurrency: 1, MaxInflight: 1024,
				Stages: []Stage{{Type: "retry", Config: map[string]any{"max_attempts": 5}}, {Type: "dlq"}, {Type: "ack"}},
				Sink:   Sink{Type: "count", Every: 100}},
			{Name: "audit-log", Topic: "audit", Group: "audit-log", Delivery: "push", Concurrency: 1, MaxInflight: 1024, Sink: Sink{Type: "stdout"}},
		},
		Tracing: Tracing{Exporter: "otlp", Endpoint: "localhost:4317", SampleRatio: 0.25, ServiceName: "orders"},
	}
	p.src = nil
	if !reflect.DeepEqual(*p, want) {
		t.Errorf("got\n%+v\nwant\n%+v", *p, want)
	}
}

func TestLoadYAMLFeatures(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, p *Pipeline)
	}{
		{"testdata/anchors.yaml", func(t *testing.T, p *Pipeline) {
			if got := p.Flows[1].Sink; !reflect.DeepEqual(got, Sink{Type: "count", Every: 10}) {
				t.Errorf("aliased sink = %+v", got)
			}
		}},
		{"testdata/anchors-merge.yaml", func(t *testing.T, p *Pipeline) {
			want := []Topic{{Name: "orders", Queues: 8}, {Name: "audit", Queues: 8}}
			if !reflect.DeepEqual(p.Topics, want) {
				t.Errorf("topics = %+v, want %+v", p.Topics, want)
			}
		}},
		{"testdata/nulls.yaml", func(t *testing.T, p *Pipeline) {
			// A key with no value is a missing key: it takes its default.
			if p.Topics[0].Queues != 4 || p.Plugins.Storage.Type != "memory" || p.Flows[0].Group != "f" ||
				p.Node.ID != "node-1" || p.Tracing.Exporter != "none" {
				t.Errorf("defaults not applied: %+v", *p)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			p, err := loadFile(t, tt.file)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tt.check(t, p)
		})
	}
}

// want is an expected problem: its line, its key path and a part of its
// message.
type want struct {
	line int
	path string
	msg  string
}

func TestLoadReportsEveryProblem(t *testing.T) {
	tests := []struct {
		file string
		env  []string
		want []want
	}{
		{file: "empty.yaml", want: []want{{0, "", "file is empty"}}},
		{file: "comments-only.yaml", want: []want{{0, "", "file is empty"}}},
		{file: "syntax.yaml", want: []want{{2, "", "not valid YAML: did not find expected '-' indicator"}}},
		{file: "not-yaml.yaml", want: []want{{1, "", "not valid YAML: did not find expected <document start>"}}},
		{file: "not-mapping.yaml", want: []want{{1, "", "the top level must be a mapping of keys (name, topics, flows, …), got a list"}}},
		{file: "duplicate-key.yaml", want: []want{{4, "", `not valid YAML: mapping key "name" already defined at line 1`}}},
		{file: "two-documents.yaml", want: []want{{3, "", "holds one YAML document"}}},
		{file: "unknown-keys.yaml", want: []want{
			{2, "colour", "unknown key; known keys here: name, node, plugins, topics, producer, generators, flows, tracing, admin, security, keep_running"},
			{5, "node.datadir", "unknown key; known keys here: id, data_dir, role, shutdown_timeout, ephemeral_group_ttl, auto_create_topics"},
			{13, "topics[0].partitions", "unknown key; known keys here: name, queues"},
			{19, "flows[0].stages[0].config.whatever", "unknown key (valid keys: backoff, delays, levels, max_attempts)"},
			{20, "flows[0].stages[0].after", "unknown key; known keys here: type, config (a stage's settings go under config, such as a timeout stage's config.after or a plugin stage's config.timeout)"},
			{23, "flows[0].sink.colour", "unknown key; known keys here: type, every, format, path, command, args, url, headers, timeout"},
		}},
		{file: "wrong-types.yaml", want: []want{
			{1, "name", "must be a string, got integer 123"},
			{3, "plugins.dirs", `must be a list, got string "./bin"`},
			{6, "topics[0].queues", `must be an integer, got string "four"`},
			{8, "topics[1].queues", "must be a whole number, got number 4.5"},
			{10, "producer.retries", "must be an integer, got a list"},
			{15, "generators[0].rate", `must be a number, got string "fast"`},
			{19, "flows[0].stages", "must be a list, got a mapping"},
			{20, "flows[0].sink", `must be a mapping of keys, got string "stdout"`},
		}},
		{file: "sections.yaml", want: []want{
			{2, "node", "must be a mapping of keys, got integer 5"},
			{4, "plugins.storage", `must be a mapping of keys, got string "memory"`},
			{5, "topics", `must be a list, got string "orders"`},
			{7, "flows[0]", `must be a mapping of keys, got string "just-a-string"`},
		}},
		{file: "durations.yaml", want: []want{
			{3, "node.shutdown_timeout", `must be a duration such as "10s", "500ms" or "1m30s", got "10 parsecs"`},
			{5, "producer.timeout", "must be a duration such as \"10s\", \"500ms\" or \"1m30s\", got integer 10"},
		}},
		{file: "non-positive-durations.yaml", want: []want{
			{3, "node.shutdown_timeout", "must be greater than 0, got 0s"},
			{4, "node.ephemeral_group_ttl", "must be greater than 0, got -5s"},
			{6, "producer.timeout", "must be greater than 0, got -1s"},
		}},
		{file: "auto-create.yaml", want: []want{
			{3, "node.auto_create_topics.queues", "must be between 1 and 1024, got 0"},
		}},
		{file: "ranges.yaml", want: []want{
			{4, "topics[0].queues", "must be between 1 and 1024, got 0"},
			{6, "topics[1].queues", "must be between 1 and 1024, got 1025"},
			{8, "producer.retries", "must be between 0 and 100, got -1"},
			{12, "generators[0].count", "must be at least 1, got 0"},
			{13, "generators[0].size", "must be between 1 and 4194304, got 0"},
			{14, "generators[0].rate", "must not be negative, got -1"},
			{20, "flows[0].sink.every", "must not be negative, got -1"},
			{22, "tracing.sample_ratio", "must be between 0 and 1, got 1.5"},
			{24, "plugins.ring_size_kib", "100: must be a power of two between 64 and 1048576 (KiB)"},
		}},
		{file: "required.yaml", want: []want{
			{0, "name", "is required"},
			{0, "topics", "at least one topic is required"},
			{4, "generators[0].count", "is required"},
			{4, "generators[0].topic", "is required"},
			{6, "flows[0].name", "is required"},
			{6, "flows[0].topic", `names topic "nowhere", which is not declared in topics`},
			{7, "flows[0].sink.type", "is required (one of count, stdout, discard, file, exec, webhook)"},
		}},
		{file: "sinks.yaml", want: []want{
			{6, "flows[0].sink.path", "is required for sink type file"},
			{9, "flows[1].sink.command", "is required for sink type exec"},
			{9, "flows[1].sink.every", "applies only to sink type count, not exec"},
			{9, "flows[1].sink.timeout", "must be greater than 0, got 0s"},
			{14, "flows[2].sink.url", `must be an http:// or https:// URL, got "ftp://example.com/x"`},
			{15, "flows[2].sink.headers.Bad Header", "is not a valid HTTP header name"},
			{16, "flows[2].sink.format", "applies only to sink type stdout and file, not webhook"},
			{19, "flows[3].orderly", `must be true or false, got string "yes"`},
			{20, "flows[3].concurrency", "must be between 1 and 1024, got 0"},
			{21, "flows[3].max_inflight", "must be between 1 and 1000000, got 2000000"},
			{22, "flows[3].sink.format", `must be one of line, json, body; got "xml"`},
			{22, "flows[3].sink.path", "applies only to sink type file, not stdout"},
			{24, "flows[4].topic", `flow "e" is in group "a", which flow "a" uses on topic "orders": a group consumes one topic`},
			{27, "flows[4].orderly", "applies only to delivery push"},
			{30, "flows[4].stages[0].config.delays", `must be a duration such as "250ms" or "2s", got "soon"`},
			{31, "flows[4].stages[1].config.after", `is required: how long an attempt may take, such as "30s"`},
			{33, "flows[4].stages[2].config.mode", `must be after_process or before_process, got "never"`},
			{34, "flows[4].sink.url", "is required for sink type webhook"},
		}},
		{file: "references.yaml", want: []want{
			{7, "generators[0].topic", `names topic "ordres", which is not declared in topics (declared: audit, orders)`},
			{11, "flows[0].topic", `names topic "payments", which is not declared in topics (declared: audit, orders)`},
		}},
		{file: "duplicates.yaml", want: []want{
			{5, "topics[2].name", `duplicate topic name "orders" (first at topics[0], line 3)`},
			{8, "generators[1].name", `duplicate generator name "g" (first at generators[0], line 7)`},
			{11, "flows[1].name", `duplicate flow name "f" (first at flows[0], line 10)`},
			{12, "flows[2].name", `duplicate flow name "f" (first at flows[0], line 10)`},
		}},
		{file: "enums.yaml", want: []want{
			{3, "node.role", `must be one of standalone, master, slave; got "leader"`},
			{5, "plugins.mode", `must be one of subprocess, inprocess; got "thread"`},
			{6, "plugins.data_plane", `must be one of ring, grpc; got "shm"`},
			{9, "producer.mode", `must be one of sync, async, oneway; got "fast"`},
			{11, "generators[0].mode", `must be one of sync, async, oneway; got "lazy"`},
			{15, "flows[0].delivery", `must be one of push, pull; got "poll"`},
			{16, "flows[0].on_corrupt", `must be one of stop, skip, dlq; got "ignore"`},
			{19, "flows[0].stages[1].type", `must be one of ack, dlq, plugin, retry, timeout; got "throttle"`},
			{21, "flows[0].sink.type", `must be one of count, stdout, discard, file, exec, webhook; got "kafka"`},
			{23, "tracing.exporter", `must be one of none, stdout, otlp; got "jaeger"`},
		}},
		{file: "names.yaml", want: []want{
			{1, "name", `starting with a letter or digit; got "Demo"`},
			{3, "node.id", `got "-n1"`},
			{5, "topics[0].name", `topic name "%RETRY%orders": the prefix %RETRY% is reserved`},
			{10, "flows[0].group", `group name "Billing Team": character ' ' at position 8 is not allowed`},
			{14, "flows[1].group", "group name is empty"},
		}},
		{file: "tracing.yaml", want: []want{
			{3, "tracing.endpoint", "is required when exporter is otlp"},
			{5, "tracing.service_name", "must not be empty"},
		}},
		{file: "otlp-endpoint.yaml", want: []want{{5, "tracing.endpoint", `must be host:port, got "collector"`}}},
		{file: "plugin-types.yaml", want: []want{{4, "plugins.storage.type", "is required"}}},
		{file: "merge.yaml", want: []want{
			// The merged key has no line of its own: the anchor's line.
			{5, "topics[0].queues", "must be between 1 and 1024, got 0"},
			{5, "topics[1].queues", "must be between 1 and 1024, got 0"},
		}},
		{
			file: "../minimal.yaml",
			env: []string{
				"FERRY_PRODUCER__RETRIES=five",
				"FERRY_NODE__SHUTDOWN_TIMEOUT=10",
				"FERRY_NODE__COLOUR=blue",
				"FERRY_TOPICS__0__QUEUES=3",
				"FERRY_LOG_LEVEL=debug", // not a pipeline key: ignored
			},
			want: []want{
				{0, "node.colour", "unknown key; known keys here: id, data_dir, role, shutdown_timeout, ephemeral_group_ttl, auto_create_topics (set by FERRY_NODE__COLOUR)"},
				{0, "node.shutdown_timeout", "got integer 10 (set by FERRY_NODE__SHUTDOWN_TIMEOUT)"},
				{0, "producer.retries", `must be an integer, got string "five" (set by FERRY_PRODUCER__RETRIES)`},
				{0, "topics", "cannot set one element of a list (FERRY_TOPICS__0__QUEUES); set the whole list, e.g. FERRY_TOPICS='[…]'"},
			},
		},
	}
	for _, tt := range tests {
		name := strings.TrimSuffix(tt.file, ".yaml")
		if tt.env != nil {
			name += "+env"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", "broken", tt.file)
			_, err := loadFile(t, path, tt.env...)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Load error = %v (%T), want Problems", err, err)
			}
			if !errors.Is(err, sdk.ErrConfig) {
				t.Errorf("errors.Is(err, sdk.ErrConfig) = false")
			}
			checkProblems(t, ps, path, tt.want)
		})
	}
}

func checkProblems(t *testing.T, ps Problems, file string, wants []want) {
	t.Helper()
	if len(ps) != len(wants) {
		t.Errorf("got %d problems, want %d:\n%v", len(ps), len(wants), ps)
	}
	for i := range min(len(ps), len(wants)) {
		p, w := ps[i], wants[i]
		if p.File != file || p.Line != w.line || p.Path != w.path || !strings.Contains(p.Message, w.msg) {
			t.Errorf("problem %d = %q\nwant line %d, path %q, message containing %q", i, p.String(), w.line, w.path, w.msg)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	env := []string{
		"FERRY_NODE__DATA_DIR=/tmp/x",
		"FERRY_NODE__ID=007", // a string key keeps the text as written
		"FERRY_PLUGINS__STORAGE__TYPE=file",
		"FERRY_PLUGINS__STORAGE__CONFIG__SEGMENT_BYTES=1024",
		"FERRY_PLUGINS__DIRS=[a, b]",
		"FERRY_PRODUCER__RETRIES=7",
		"FERRY_PRODUCER__TIMEOUT=250ms",
		"FERRY_TRACING__SAMPLE_RATIO=0.5",
		"FERRY_TOPICS=[{name: a, queues: 2}, {name: b}]",
		"FERRY_PLUGIN_COOKIE=x", // go-plugin's handshake, not a pipeline key
	}
	p, err := loadFile(t, "testdata/minimal.yaml", env...)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	checks := []struct {
		key       string
		got, want any
	}{
		{"node.data_dir", p.Node.DataDir, "/tmp/x"},
		{"node.id", p.Node.ID, "007"},
		{"tracing.service_name (derived from node.id)", p.Tracing.ServiceName, "ferry-007"},
		{"plugins.storage.type", p.Plugins.Storage.Type, "file"},
		{"plugins.storage.config", p.Plugins.Storage.Config, map[string]any{"segment_bytes": 1024}},
		{"plugins.dirs", p.Plugins.Dirs, []string{"a", "b"}},
		{"producer.retries", p.Producer.Retries, 7},
		{"producer.timeout", p.Producer.Timeout, 250 * time.Millisecond},
		{"tracing.sample_ratio", p.Tracing.SampleRatio, 0.5},
		{"topics", p.Topics, []Topic{{Name: "a", Queues: 2}, {Name: "b", Queues: 4}}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.key, c.got, c.want)
		}
	}
}

func TestLoadMissingFileIsAnOSError(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "testdata/does-not-exist.yaml") {
		t.Errorf("Load error = %v, want a not-exist error naming the path", err)
	}
	var ps Problems
	if errors.As(err, &ps) {
		t.Errorf("a missing file is not Problems")
	}
}

func TestLoadReturnsPartialPipelineWithProblems(t *testing.T) {
	p, err := loadFile(t, "testdata/broken/ranges.yaml")
	if err == nil || p == nil {
		t.Fatalf("Load = %v, %v; want a pipeline and problems", p, err)
	}
	if p.Name != "demo" || len(p.Topics) != 2 {
		t.Errorf("partial pipeline = %+v", *p)
	}
	if p, _ := loadFile(t, "testdata/broken/syntax.yaml"); p != nil {
		t.Errorf("a file that is not a mapping gave a pipeline: %+v", *p)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{File: "a.yaml", Line: 3, Path: "topics[1].queues", Message: "bad"}, "a.yaml:3: topics[1].queues: bad"},
		{Problem{File: "a.yaml", Path: "name", Message: "is required"}, "a.yaml: name: is required"},
		{Problem{File: "a.yaml", Line: 2, Message: "not valid YAML"}, "a.yaml:2: not valid YAML"},
		{Problem{File: "a.yaml", Message: "file is empty"}, "a.yaml: file is empty"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	ps := Problems{tests[0].p, tests[1].p}
	if got, want := ps.Error(), "a.yaml:3: topics[1].queues: bad\na.yaml: name: is required"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestDefaultsDoNotAliasEachOther(t *testing.T) {
	a := Default()
	a.Plugins.Storage.Type = "changed"
	if Default().Plugins.Storage.Type != "memory" {
		t.Error("Default returns shared state")
	}
}

// TestRecursiveAliases: an alias inside its own anchor, or aliases that
// expand exponentially, are problems reported at once (the line index
// followed the alias forever: `ferry validate` hung, found by FuzzLoadBytes).
func TestRecursiveAliases(t *testing.T) {
	laughs := "name: p\ntopics: [{name: t}]\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		laughs += n + ": &" + n + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = n
	}
	for name, file := range map[string]string{
		"self":    "a: &a [*a]\n",
		"mapping": "name: p\ntopics: &t [{name: t, more: *t}]\n",
		"laughs":  laughs,
	} {
		done := make(chan error, 1)
		go func() {
			_, err := LoadBytes("p.yaml", []byte(file))
			done <- err
		}()
		select {
		case err := <-done:
			var ps Problems
			if !errors.As(err, &ps) {
				t.Errorf("%s: %v, want problems", name, err)
			}
			t.Logf("%s: %v", name, err)
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: Load has not returned after a minute", name)
		}
	}
}
