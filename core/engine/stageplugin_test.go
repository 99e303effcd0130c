package engine_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A flow whose chain names an external stage plugin (examples/plugins/go-stage,
// built here, run as its own process by the node's plugin host): every
// message reaches the sink transformed by the plugin.
func TestFlowStagePlugin(t *testing.T) {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "ferry-stage-example"), ".")
	build.Dir = filepath.Join("..", "..", "examples", "plugins", "go-stage")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/plugins/go-stage: %v\n%s", err, out)
	}
	// run runs the flow with the given stages and counts the bodies the
	// sink got with a lowercase ASCII letter.
	run := func(stages string) int {
		out := filepath.Join(t.TempDir(), "out.jsonl")
		cfg := loadPipeline(t, fmt.Sprintf(`
name: stageplugin
topics: [{name: orders, queues: 2}]
generators: [{name: g, topic: orders, count: 20, size: 2000}]
flows:
  - name: upper
    topic: orders
    stages: %s
    sink: {type: file, path: %q}
`, stages, out))
		cfg.Plugins.Dirs = []string{dir}
		e := start(t, cfg)
		s := runPipeline(t, e, 60*time.Second)
		if f := s.Flows[0]; !s.OK() || f.Unique != 20 || f.DeadLettered != 0 {
			t.Fatalf("flow %+v", f)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
		if len(lines) != 20 {
			t.Fatalf("the sink got %d messages, want 20", len(lines))
		}
		lower := 0
		for _, l := range lines {
			var m struct {
				Body       string
				BodyBase64 []byte `json:"body_base64"` // a body that is not UTF-8
			}
			if err := json.Unmarshal(l, &m); err != nil {
				t.Fatal(err)
			}
			if bytes.ContainsFunc(append([]byte(m.Body), m.BodyBase64...), func(r rune) bool { return 'a' <= r && r <= 'z' }) {
				lower++
			}
		}
		return lower
	}
	// The control: the generator's random body (one for all 20 messages;
	// 2000 random bytes) has lowercase letters.
	if run("[]") == 0 {
		t.Fatal("control: no lowercase letters in 20 random bodies without the stage plugin")
	}
	if n := run("[{type: plugin, config: {plugin: example, config: {upper: true}}}]"); n != 0 {
		t.Fatalf("the stage plugin did not transform %d of 20 bodies (lowercase found)", n)
	}
}
