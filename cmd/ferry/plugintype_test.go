package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPluginTypeIsNeverAPath: a plugin type that is a path ("/../../evil")
// is a config error in `ferry validate` and `ferry run`, and the file it
// names is never executed (it used to be: the type was joined to each
// plugins.dirs entry, and the cleaned path led out of the directory).
func TestPluginTypeIsNeverAPath(t *testing.T) {
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	if err := os.Mkdir(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	// plugins/ferry-storage-/../../evil is dir/evil.
	ran := filepath.Join(dir, "ran")
	evil := filepath.Join(dir, "evil")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\necho ran >> "+ran+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"storage", "transport"} {
		pipeline := filepath.Join(dir, kind+".yaml")
		storage, transport := "memory", "http"
		if kind == "storage" {
			storage = "/../../evil"
		} else {
			transport = "../../evil"
		}
		yaml := fmt.Sprintf(`name: evil
node: {data_dir: %q}
plugins:
  mode: subprocess
  dirs: [%q]
  storage: {type: %q}
  transport: {type: %q, config: {listen: "127.0.0.1:0"}}
topics: [{name: orders}]
`, filepath.Join(dir, "data"), plugins, storage, transport)
		if err := os.WriteFile(pipeline, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("plugins.%s.type: must be a plugin type name of lowercase letters, digits and '_'", kind)
		stdout, stderr, code := runFerry(t, nil, "validate", pipeline)
		if code != 1 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "never a path") {
			t.Errorf("ferry validate with %s type %q: exit %d\n%s%s\nwant exit 1 and %q", kind, storage+transport, code, stdout, stderr, want)
		}
		stdout, stderr, code = runFerry(t, nil, "run", pipeline)
		if code == 0 || !strings.Contains(stdout+stderr, want) {
			t.Errorf("ferry run with %s type: exit %d\n%s%s\nwant a failure with %q", kind, code, stdout, stderr, want)
		}
		if b, err := os.ReadFile(ran); err == nil {
			t.Fatalf("the file named by the %s type was executed: %s", kind, b)
		}
	}
	// Negative control: the same script, installed as an external plugin
	// with a type name, is found and started (it is no plugin, so the
	// validation fails, after running it).
	if err := os.Rename(evil, filepath.Join(plugins, "ferry-storage-evil")); err != nil {
		t.Fatal(err)
	}
	pipeline := filepath.Join(dir, "control.yaml")
	yaml := fmt.Sprintf("name: control\nplugins: {mode: subprocess, dirs: [%q], storage: {type: evil}}\ntopics: [{name: orders}]\n", plugins)
	if err := os.WriteFile(pipeline, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	runFerry(t, nil, "validate", pipeline)
	if _, err := os.Stat(ran); err != nil {
		t.Fatalf("the control plugin ferry-storage-evil was not run: %v", err)
	}
}
