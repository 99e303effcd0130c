package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runPluginTest runs `ferry plugin test` and returns its output and exit code.
func runPluginTest(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(ferryBin, append([]string{"plugin", "test"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("ferry plugin test %v: %v\n%s", args, err, out)
	return "", 0
}

// The built-in stores pass the storage suite run by `ferry plugin test`
// through the plugin host, the file store with its restart cases.
func TestPluginTestBuiltins(t *testing.T) {
	for _, args := range [][]string{{"storage", "memory"}, {"storage", "file", "--durable"}} {
		out, code := runPluginTest(t, args...)
		if code != 0 || !strings.Contains(out, "PASS  AppendAndRead") || strings.Contains(out, "FAIL") {
			t.Fatalf("ferry plugin test %v: exit %d\n%s", args, code, out)
		}
		if args[1] == "file" && !strings.Contains(out, "PASS  Durability") {
			t.Fatalf("ferry plugin test %v ran no restart case:\n%s", args, out)
		}
	}
}

// The negative control: a plugin executable that drops every 10th message it
// acknowledges fails the command, which says which cases failed and why.
func TestPluginTestFailsLossyStore(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "lossystore")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/lossystore").CombinedOutput(); err != nil {
		t.Fatalf("build lossystore: %v\n%s", err, out)
	}
	out, code := runPluginTest(t, "storage", bin)
	if code == 0 {
		t.Fatalf("ferry plugin test passed a store that loses messages:\n%s", out)
	}
	for _, want := range []string{"FAIL  AppendAndRead", "offsets [0 1 2 3 4 5 6 7 8 8], want 0..9", "FAIL  ConcurrentAppenders", "storage cases failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

// Bad invocations are refused with what is wrong.
func TestPluginTestBadArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"storage", "nosuch"}, `no storage plugin "nosuch"`},
		{[]string{"storage", "./no/such/file"}, "plugin executable"},
		{[]string{"storage", "memory", "--run", "NoSuchCase"}, "selects no case"},
		{[]string{"gadget", "memory"}, `plugin kind "gadget"`},
	} {
		out, code := runPluginTest(t, c.args...)
		if code == 0 || !strings.Contains(out, c.want) {
			t.Errorf("ferry plugin test %v: exit %d, want an error with %q:\n%s", c.args, code, c.want, out)
		}
	}
}

// The out-of-tree Go example (its own module, depending on Ferry by a replace
// directive) builds and passes the storage suite.
func TestPluginTestGoExample(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ferry-storage-example")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..", "examples", "plugins", "go-storage")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/plugins/go-storage: %v\n%s", err, out)
	}
	out, code := runPluginTest(t, "storage", bin)
	if code != 0 || !strings.Contains(out, "PASS  ConcurrentAppenders") {
		t.Fatalf("ferry plugin test storage of the Go example: exit %d\n%s", code, out)
	}
}
