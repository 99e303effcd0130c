package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

var update = flag.Bool("update", false, "rewrite the golden files of cmd/ferry/testdata")

// ferryBin is the ferry binary built once for the tests in this package.
var ferryBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "ferry-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ferryBin = filepath.Join(dir, "ferry")
	build := exec.Command("go", "build", "-o", ferryBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ferry:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	ferrytest.RemoveBuilds()
	os.Exit(code)
}

// runFerry runs the built binary with args and the given extra environment,
// from this package's directory, without the FERRY_ variables of whoever runs
// the tests. It returns stdout, stderr and the exit status.
func runFerry(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runFerryBin(t, ferryBin, env, args...)
}

// runFerryBin is runFerry with another build of ferry (ferrytest.BinaryWithTags).
func runFerryBin(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running ferry %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// readEnv reads NAME.env next to a pipeline: KEY=VALUE lines, # comments.
func readEnv(t *testing.T, pipeline string) []string {
	t.Helper()
	f, err := os.Open(strings.TrimSuffix(pipeline, ".yaml") + ".env")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			env = append(env, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

// TestValidateGolden runs `ferry validate testdata/validate/NAME.yaml` (with
// the environment of NAME.env, if any) and compares its stdout with
// NAME.golden. A file is expected to pass (exit 0) exactly when its golden
// output says "ok". Run with -update to rewrite the goldens.
func TestValidateGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/validate/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found %d pipelines in testdata/validate, want at least 15", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runFerry(t, readEnv(t, file), "validate", file)
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if stdout != string(want) {
				t.Errorf("stdout differs from %s:\n--- got\n%s--- want\n%s", golden, stdout, want)
			}
			wantCode := 1
			if string(want) == file+": ok\n" {
				wantCode = 0
			}
			if code != wantCode {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, wantCode, stderr)
			}
			if strings.Contains(stderr, "Usage:") {
				t.Errorf("usage printed on a failed validation:\n%s", stderr)
			}
		})
	}
}

// TestValidateManyFiles checks that every file is reported, in order, and
// that one bad file makes the exit status 1.
func TestValidateManyFiles(t *testing.T) {
	good, bad := "testdata/validate/minimal.yaml", "testdata/validate/wrong-type.yaml"
	stdout, _, code := runFerry(t, nil, "validate", good, bad, good)
	want := good + ": ok\n" +
		bad + `:4: topics[0].queues: must be an integer, got string "four"` + "\n" +
		good + ": ok\n"
	if stdout != want || code != 1 {
		t.Errorf("got exit %d, stdout:\n%s\nwant exit 1, stdout:\n%s", code, stdout, want)
	}

	stdout, _, code = runFerry(t, nil, "validate", good, good)
	if code != 0 || stdout != good+": ok\n"+good+": ok\n" {
		t.Errorf("two good files: exit %d, stdout:\n%s", code, stdout)
	}
}

func TestValidateUnreadableFile(t *testing.T) {
	missing := "testdata/validate/no-such-file.yaml"
	stdout, _, code := runFerry(t, nil, "validate", missing)
	if want := missing + ": cannot read: no such file or directory\n"; stdout != want || code != 1 {
		t.Errorf("got exit %d, stdout %q; want exit 1, stdout %q", code, stdout, want)
	}
}

func TestValidateNeedsAFile(t *testing.T) {
	if _, _, code := runFerry(t, nil, "validate"); code == 0 {
		t.Error("ferry validate with no file exited 0")
	}
}

// TestValidateExamplePipelines checks that every pipeline in the repository's
// pipelines/ directory validates.
func TestValidateExamplePipelines(t *testing.T) {
	files, err := filepath.Glob("../../pipelines/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../../pipelines/*.yml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no pipelines in ../../pipelines")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runFerry(t, nil, "validate", file)
			if code != 0 || stdout != file+": ok\n" {
				t.Errorf("ferry validate %s: exit %d\n%s%s", file, code, stdout, stderr)
			}
		})
	}
}
