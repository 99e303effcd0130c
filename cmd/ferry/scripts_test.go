package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The scripts `make test` runs say which programs they lack, in one line,
// instead of failing midway ("flock: command not found" after a 9-minute
// build, or a hang).
func TestScriptsNamePrerequisites(t *testing.T) {
	bin := t.TempDir()
	// Only what the scripts need to reach their checks.
	for _, c := range []string{"bash", "dirname", "awk", "env"} {
		p, err := exec.LookPath(c)
		if err != nil {
			t.Skipf("%s not found: %v", c, err)
		}
		if err := os.Symlink(p, filepath.Join(bin, c)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		script []string
		want   string
	}{
		{[]string{"scripts/jaeger.sh", "start"}, "jaeger: needs curl flock setsid go on PATH"},
		{[]string{"scripts/jaeger.sh", "build"}, "jaeger: needs flock go on PATH"},
		{[]string{"scripts/test.sh"}, "make test: needs go make git curl flock setsid on PATH"},
		{[]string{"scripts/security-bench.sh"}, "security-bench: needs go openssl python3 pgrep getconf on PATH"},
	} {
		cmd := exec.Command(filepath.Join(bin, "bash"), tc.script...)
		cmd.Dir = "../.."
		cmd.Env = []string{"PATH=" + bin, "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) || strings.Count(string(out), "\n") != 1 {
			t.Errorf("%v with an empty PATH: %v\n%s\nwant a failure saying %q", tc.script, err, out, tc.want)
		}
	}
}
