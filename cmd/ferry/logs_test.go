package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// hclogLine is the start of a line of hclog's text format.
var hclogLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT[0-9:.]+Z \[(TRACE|DEBUG|INFO|WARN|ERROR)\] `)

// ferry run logs in one format: the node, its plugin processes and its
// flows' consumers (whose warnings came out through slog's default, in
// another format, in the same stream). --log-format json makes every line a
// JSON object.
func TestRunLogsOneFormat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	yaml := filepath.Join(dir, "logs.yaml")
	if err := os.WriteFile(yaml, fmt.Appendf(nil, `name: logs
node: {data_dir: %q}
plugins:
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: t, queues: 1}]
generators: [{name: g, topic: t, count: 2, size: 8}]
flows:
  - name: fail
    topic: t
    group: g
    stages:
      - {type: dlq}
      - {type: retry, config: {max_attempts: 1}}
    sink: {type: exec, command: "false"}
`, filepath.Join(dir, "data"), ferrytest.FreeAddr(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			out, errOut, code := runFerry(t, nil, "run", "--log-format", format, yaml)
			if code != 0 || !strings.Contains(out, "2 dead-lettered") {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
			warned := false
			for l := range strings.Lines(errOut) {
				l = strings.TrimSuffix(l, "\n")
				if format == "json" {
					var m map[string]any
					if err := json.Unmarshal([]byte(l), &m); err != nil || m["@level"] == nil {
						t.Errorf("not a JSON log line: %q", l)
					}
				} else if !hclogLine.MatchString(l) {
					t.Errorf("not an hclog line: %q", l)
				}
				warned = warned || strings.Contains(l, "message dead-lettered")
			}
			if !warned {
				t.Errorf("no consumer warning in the log:\n%s", errOut)
			}
		})
	}
	if _, errOut, code := runFerry(t, nil, "run", "--log-format", "xml", yaml); code != 2 || !strings.Contains(errOut, `log format must be text or json, got "xml"`) {
		t.Errorf("--log-format xml: exit %d, %s", code, errOut)
	}
}
