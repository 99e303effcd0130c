package config

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// fakeValidator knows a fixed set of plugins. Its "memory" storage and
// "example" stage reject
// every config key, like the real one rejects unknown keys; its "broken"
// storage cannot be started.
type fakeValidator struct {
	types map[string][]string
	seen  map[string]string // kind → config JSON it was asked to check
}

func newFakeValidator() *fakeValidator {
	return &fakeValidator{
		types: map[string][]string{
			"storage":     {"broken", "file", "memory"},
			"transport":   {"grpc"},
			"replication": {"none"},
			"stage":       {"example"},
		},
		seen: map[string]string{},
	}
}

func (f *fakeValidator) Known(kind, typ string, dirs []string) bool {
	return slices.Contains(f.types[kind], typ)
}

func (f *fakeValidator) Types(kind string, dirs []string) []string { return f.types[kind] }

func (f *fakeValidator) ValidateConfig(ctx context.Context, kind, typ string, dirs []string, configJSON []byte) ([]sdk.Problem, error) {
	f.seen[kind] = string(configJSON)
	if typ == "broken" {
		return nil, errors.New("plugin exited: exit status 2")
	}
	if (kind != "storage" || typ != "memory") && (kind != "stage" || typ != "example") {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(configJSON, &m); err != nil {
		return nil, err
	}
	var ps []sdk.Problem
	for k := range m {
		ps = append(ps, sdk.Problem{Path: k, Message: "unknown key"})
	}
	return ps, nil
}

var _ PluginValidator = (*fakeValidator)(nil)

func TestValidatePlugins(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []want
	}{
		{
			name: "defaults are valid",
			yaml: "name: demo\ntopics: [{name: orders}]\n",
		},
		{
			name: "unknown type lists the known ones",
			yaml: "name: demo\ntopics: [{name: orders}]\nplugins:\n  storage:\n    type: rocksdb\n",
			want: []want{{5, "plugins.storage.type", `unknown storage plugin type "rocksdb" (known: broken, file, memory); an external plugin is an executable named ferry-storage-rocksdb in plugins.dirs (plugins.dirs is empty: no directory to look in)`}},
		},
		{
			name: "an unknown type names the files looked for",
			yaml: "name: demo\ntopics: [{name: orders}]\nplugins:\n  dirs: [/opt/a, /opt/b]\n  storage:\n    type: rocksdb\n",
			want: []want{{6, "plugins.storage.type", `unknown storage plugin type "rocksdb" (known: broken, file, memory); an external plugin is an executable named ferry-storage-rocksdb in plugins.dirs (looked for /opt/a/ferry-storage-rocksdb, /opt/b/ferry-storage-rocksdb)`}},
		},
		{
			name: "a stage plugin that is not there names the file looked for",
			yaml: "name: demo\ntopics: [{name: orders}]\nplugins: {dirs: [/opt/p]}\nflows:\n  - {name: f, topic: orders, group: g, sink: {type: discard},\n     stages: [{type: ack}, {type: plugin, config: {plugin: redact}}]}\n",
			want: []want{{6, "flows[0].stages[1].config.plugin", `stage plugin "redact" not found: no executable ferry-stage-redact in plugins.dirs (looked for /opt/p/ferry-stage-redact)`}},
		},
		{
			name: "a stage plugin checks its own section",
			yaml: "name: demo\ntopics: [{name: orders}]\nflows:\n  - name: f\n    topic: orders\n    group: g\n    sink: {type: discard}\n    stages:\n      - type: plugin\n        config:\n          plugin: example\n          config:\n            bogus: 1\n",
			want: []want{{13, "flows[0].stages[0].config.config.bogus", "unknown key"}},
		},
		{
			name: "config problems get full paths and lines",
			yaml: "name: demo\ntopics: [{name: orders}]\nplugins:\n  storage:\n    type: memory\n    config:\n      bogus: 1\n",
			want: []want{{7, "plugins.storage.config.bogus", "unknown key"}},
		},
		{
			name: "a plugin that cannot be asked",
			yaml: "name: demo\ntopics: [{name: orders}]\nplugins:\n  storage: {type: broken}\n",
			want: []want{{4, "plugins.storage.type", `storage plugin "broken" could not check its config: plugin exited: exit status 2`}},
		},
		{
			name: "every kind is checked",
			yaml: "name: demo\ntopics: [{name: orders}]\nplugins:\n  transport: {type: http}\n  replication: {type: raft}\n",
			want: []want{
				{4, "plugins.transport.type", `unknown transport plugin type "http" (known: grpc)`},
				{5, "plugins.replication.type", `unknown replication plugin type "raft" (known: none)`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := load("p.yaml", []byte(tt.yaml), noEnv)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			ps := ValidatePlugins(context.Background(), p, newFakeValidator())
			checkProblems(t, ps, "p.yaml", tt.want)
		})
	}
}

func TestValidatePluginsSendsConfigAsJSON(t *testing.T) {
	p, err := load("p.yaml", []byte("name: demo\ntopics: [{name: orders}]\nplugins:\n  storage:\n    type: file\n    config: {segment_bytes: 64MiB, sync: true}\n"), noEnv)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	v := newFakeValidator()
	if ps := ValidatePlugins(context.Background(), p, v); len(ps) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	if got, want := v.seen["storage"], `{"segment_bytes":"64MiB","sync":true}`; got != want {
		t.Errorf("storage config = %s, want %s", got, want)
	}
	if got, want := v.seen["transport"], `{}`; got != want {
		t.Errorf("transport config without a section = %s, want %s", got, want)
	}
}

func TestValidatePluginsOnABuiltPipeline(t *testing.T) {
	p := Default()
	p.File = "built.yaml"
	p.Plugins.Storage.Type = "nope"
	ps := ValidatePlugins(context.Background(), &p, newFakeValidator())
	checkProblems(t, ps, "built.yaml", []want{{0, "plugins.storage.type", `unknown storage plugin type "nope"`}})
}

func TestValidatePluginsSkipsUndecodableSections(t *testing.T) {
	// The type failed to decode, so the pipeline holds the default type;
	// asking that plugin about this config would report the wrong problems.
	p, err := load("p.yaml", []byte("name: demo\ntopics: [{name: orders}]\nplugins:\n  storage:\n    type: 5\n    config: {segment_bytes: 1}\n"), noEnv)
	if err == nil {
		t.Fatal("Load accepted type: 5")
	}
	if ps := ValidatePlugins(context.Background(), p, newFakeValidator()); len(ps) > 0 {
		t.Errorf("problems for a section Load already rejected: %v", ps)
	}
}

// TestPluginTypeIsAName: a type that is not [a-z0-9_]+ is a problem of Load
// and is never handed to the validator (which would look it up and run it).
func TestPluginTypeIsAName(t *testing.T) {
	for _, typ := range []string{"/../../evil", "../x", "a/b", "File", "my-plugin", "x y"} {
		p, err := LoadBytes("p.yaml", []byte("name: p\nplugins: {storage: {type: \""+typ+"\"}}\ntopics: [{name: t}]\n"))
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Path != "plugins.storage.type" {
			t.Errorf("type %q: Load error %v, want one problem at plugins.storage.type", typ, err)
		}
		v := newFakeValidator()
		v.types["storage"] = append(v.types["storage"], typ) // a validator that would accept it
		if p != nil {
			if ps := ValidatePlugins(context.Background(), p, v); len(ps) != 0 {
				t.Errorf("type %q: ValidatePlugins after Load reported %v again", typ, ps)
			}
		}
		built := Default()
		built.File = "built.yaml"
		built.Plugins.Storage.Type = typ
		ps = ValidatePlugins(context.Background(), &built, v)
		checkProblems(t, ps, "built.yaml", []want{{0, "plugins.storage.type", "never a path"}})
		if _, asked := v.seen["storage"]; asked {
			t.Errorf("type %q was handed to the plugin validator", typ)
		}
	}
}
