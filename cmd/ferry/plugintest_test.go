package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/internal/ferrytest"
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
		{[]string{"transport", "grpc", "--client", "nosuch"}, `--client "nosuch"`},
		{[]string{"transport", "./no/such/file"}, "plugin executable"},
		{[]string{"transport", "memory"}, `no transport plugin "memory"`},
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
	// The module's own go vet and go test (its main_test.go runs
	// sdktest.TestStorage), as a third party's CI would run them.
	goCmd := func(args ...string) (string, error) {
		c := exec.Command("go", args...)
		c.Dir = build.Dir
		b, err := c.CombinedOutput()
		return string(b), err
	}
	if out, err := goCmd("vet", "./..."); err != nil {
		t.Fatalf("go vet in examples/plugins/go-storage: %v\n%s", err, out)
	}
	if out, err := goCmd("test", "-count=1", "-run", "TestConformance/(direct|grpc)/", "./..."); err != nil {
		t.Fatalf("go test in examples/plugins/go-storage: %v\n%s", err, out)
	}
	// The control: with its de-dup switched off (main.go patched, through
	// an overlay), the module's own go test fails the de-dup cases.
	src, err := os.ReadFile(filepath.Join(build.Dir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	const dedup = "if off, dup := q.ids[m.Id]; dup && m.Id != \"\" {"
	if !bytes.Contains(src, []byte(dedup)) {
		t.Fatalf("examples/plugins/go-storage/main.go has no %q to patch", dedup)
	}
	dir := t.TempDir()
	patched := filepath.Join(dir, "main.go")
	if err := os.WriteFile(patched, bytes.Replace(src, []byte(dedup), []byte("if off, dup := q.ids[m.Id]; false && dup {"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(build.Dir, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	overlay, _ := json.Marshal(map[string]any{"Replace": map[string]string{abs: patched}})
	if err := os.WriteFile(filepath.Join(dir, "overlay.json"), overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = goCmd("test", "-count=1", "-overlay", filepath.Join(dir, "overlay.json"), "-run", "TestConformance/direct/Dedup$", "./...")
	if err == nil || !strings.Contains(out, "FAIL: TestConformance/direct/Dedup") {
		t.Fatalf("the Go example without de-dup passed its own go test: the test cannot fail\n%s", out)
	}
}

// pythonForPlugins returns the interpreter the Python example runs on
// (FERRY_PYTHON, else Debian's /usr/bin/python3) once it imports grpc and
// protobuf. Without them the test is skipped, unless FERRY_REQUIRE_PYTHON_PLUGIN
// is set (CI sets it: .ci/run installs them), and then it fails.
func pythonForPlugins(t *testing.T) string {
	t.Helper()
	py := os.Getenv("FERRY_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	out, err := exec.Command(py, "-c", "import grpc, google.protobuf").CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("%s cannot run the Python plugin example (apt-get install python3-grpcio python3-protobuf): %v\n%s", py, err, out)
		if os.Getenv("FERRY_REQUIRE_PYTHON_PLUGIN") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return py
}

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The Python storage plugin (examples/plugins/python-storage: Debian's
// python3-grpcio, no Go) passes `ferry plugin test storage`; with its de-dup
// switched off (a copy, patched) it fails the de-dup cases: the suite can see
// what a Python plugin does wrong. Its generated message modules match the
// .proto files when protoc is there to say.
func TestPluginTestPythonExample(t *testing.T) {
	pythonForPlugins(t)
	example := filepath.Join("..", "..", "examples", "plugins", "python-storage")
	exe := filepath.Join(example, "ferry-storage-pystore")
	out, code := runPluginTest(t, "storage", exe)
	if code != 0 || !strings.Contains(out, "PASS  ConcurrentAppenders") || !strings.Contains(out, "PASS  BadConfig") {
		t.Fatalf("ferry plugin test storage of the Python example: exit %d\n%s", code, out)
	}

	broken := t.TempDir()
	copyTree(t, example, broken)
	src, err := os.ReadFile(filepath.Join(broken, "pystore.py"))
	if err != nil {
		t.Fatal(err)
	}
	const dedup = "if m.id and m.id in q.ids:"
	if !strings.Contains(string(src), dedup) {
		t.Fatalf("pystore.py no longer has %q: update this negative control", dedup)
	}
	if err := os.WriteFile(filepath.Join(broken, "pystore.py"), []byte(strings.Replace(string(src), dedup, "if False:", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runPluginTest(t, "storage", filepath.Join(broken, "ferry-storage-pystore"))
	if code == 0 || !strings.Contains(out, "FAIL  Dedup") {
		t.Fatalf("ferry plugin test passed the Python store with de-dup off: exit %d\n%s", code, out)
	}

	if _, err := exec.LookPath("protoc"); err != nil {
		t.Log("protoc not on PATH: the generated modules of the Python example were not compared with the .proto files")
		return
	}
	gen := filepath.Join(t.TempDir(), "gen")
	if out, err := exec.Command("sh", filepath.Join(example, "gen.sh"), gen).CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	err = filepath.WalkDir(gen, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(gen, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(example, "gen", rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("examples/plugins/python-storage/gen/%s is not what gen.sh makes from the .proto files now: run examples/plugins/python-storage/gen.sh", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A pipeline runs on the Python store: `ferry run` finds it in plugins.dirs by
// type, and messages produced through the node are consumed back.
func TestPythonStoreInAPipeline(t *testing.T) {
	pythonForPlugins(t)
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	plugins, err := filepath.Abs(filepath.Join("..", "..", "examples", "plugins", "python-storage"))
	if err != nil {
		t.Fatal(err)
	}
	yaml := filepath.Join(dir, "py.yaml")
	if err := os.WriteFile(yaml, fmt.Appendf(nil, `name: python-store
node: {data_dir: %q}
plugins:
  dirs: [%q]
  storage: {type: pystore}
  transport: {type: grpc, config: {listen: %q, shutdown_timeout: 200ms}}
topics: [{name: orders, queues: 2}]
`, filepath.Join(dir, "data"), plugins, addr), 0o644); err != nil {
		t.Fatal(err)
	}
	node, log := startTopicNode(t, yaml, addr)
	defer stopTopicNode(node)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{})
	const n = 50
	for i := range n {
		if _, err := p.SendSync(ctx, client.Message{ID: fmt.Sprintf("py-%d", i), Topic: "orders", Body: []byte("hello from python")}); err != nil {
			t.Fatalf("send %d: %v\nnode:\n%s", i, err, log)
		}
	}
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	cons, err := c.NewConsumer(client.ConsumerOptions{Topic: "orders", Group: "py", HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Launch(ctx, func(_ context.Context, d *client.Delivery) error {
		if string(d.Message.Body) != "hello from python" {
			t.Errorf("message %s: body %q", d.ID, d.Message.Body)
		}
		mu.Lock()
		seen[d.ID] = true
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, "the group consumed every message from the Python store", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n
	})
}

// The built-in transports pass the transport suite run through the plugin
// host on both data planes: grpc with the client-driven cases (it serves
// ferry.v1.Broker), http with the host-contract ones, saying so.
func TestPluginTestTransports(t *testing.T) {
	out, code := runPluginTest(t, "transport", "grpc")
	if code != 0 || strings.Contains(out, "FAIL") || strings.Contains(out, "SKIP") ||
		!strings.Contains(out, "PASS  ring/ProduceExactlyOnce") || !strings.Contains(out, "PASS  grpc/DrainInFlight") {
		t.Fatalf("ferry plugin test transport grpc: exit %d\n%s", code, out)
	}
	out, code = runPluginTest(t, "transport", "http")
	if code != 0 || strings.Contains(out, "FAIL") || !strings.Contains(out, "PASS  grpc/TransportDrainIdle") ||
		!strings.Contains(out, "host-contract cases only") || !strings.Contains(out, "SKIP  ring/ProduceExactlyOnce: client-driven") {
		t.Fatalf("ferry plugin test transport http: exit %d\n%s", code, out)
	}
}

// The negative control: a transport plugin executable that forwards every
// produce twice and ignores drains fails the command, which names both.
func TestPluginTestFailsBadTransport(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "badtransport")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/badtransport").CombinedOutput(); err != nil {
		t.Fatalf("build badtransport: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "transport.yaml")
	if err := os.WriteFile(cfg, []byte("listen: $ADDR\nshutdown_timeout: 30s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runPluginTest(t, "transport", bin, "--config", cfg, "--client", "broker", "--bound", "2s",
		"--run", "ProduceExactlyOnce,TransportDrainIdle")
	if code == 0 {
		t.Fatalf("ferry plugin test passed a transport that forwards twice and ignores drains:\n%s", out)
	}
	for _, want := range []string{"FAIL  ring/ProduceExactlyOnce", "reached the core 2 times", "FAIL  grpc/TransportDrainIdle",
		"did not end Serve (Connect) within 2s", "transport cases failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

// The built-in master–slave plugins pass the replication suite, two plugin
// processes with test cores per case, on both data planes; raft, a
// consensus plugin, passes the config case and the consensus cases, three
// plugin processes per case, and skips the master–slave ones. The runs'
// processes are independent (free ports, directories of their own), so
// they run side by side: raft's two data planes as two runs.
func TestPluginTestReplication(t *testing.T) {
	runs := [][]string{{"replication", "sync"}, {"replication", "async"},
		{"replication", "raft", "--run", "ring/*"}, {"replication", "raft", "--run", "grpc/*"}}
	outs := runPluginTestsAtOnce(t, runs)
	for i, typ := range []string{"sync", "async"} {
		out := outs[i]
		if out.code != 0 || strings.Contains(out.out, "FAIL") || !strings.Contains(out.out, "PASS  ring/CatchUpAfterAbsence") ||
			!strings.Contains(out.out, "PASS  grpc/DivergenceRefused") {
			t.Fatalf("ferry plugin test replication %s: exit %d\n%s", typ, out.code, out.out)
		}
		if typ == "sync" && !strings.Contains(out.out, "PASS  grpc/NeverOKBelowLevel") {
			t.Fatalf("ferry plugin test replication sync did not check its level:\n%s", out.out)
		}
	}
	for i, plane := range []string{"ring", "grpc"} {
		out := outs[2+i]
		if out.code != 0 || strings.Contains(out.out, "FAIL") || !strings.Contains(out.out, "PASS  "+plane+"/ReplicationBadConfig") ||
			!strings.Contains(out.out, "SKIP  "+plane+"/ReplicateInOrder: a consensus plugin") {
			t.Fatalf("ferry plugin test replication raft --run %s/*: exit %d\n%s", plane, out.code, out.out)
		}
		for _, c := range []string{"ConsensusElection", "ConsensusFollowerRefuses", "ConsensusCommitThroughLog", "ConsensusSnapshotCatchUp"} {
			if !strings.Contains(out.out, "PASS  "+plane+"/"+c) {
				t.Fatalf("ferry plugin test replication raft did not pass %s/%s:\n%s", plane, c, out.out)
			}
		}
	}
}

// pluginTestRun is the outcome of one `ferry plugin test`.
type pluginTestRun struct {
	out  string
	code int
}

// runPluginTestsAtOnce runs `ferry plugin test` with each of runs side by
// side (each with env added to its environment, when given) and returns
// their outcomes in the order of runs.
func runPluginTestsAtOnce(t *testing.T, runs [][]string, env ...[]string) []pluginTestRun {
	t.Helper()
	outs := make([]pluginTestRun, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, args := range runs {
		cmd := exec.Command(ferryBin, append([]string{"plugin", "test"}, args...)...)
		if i < len(env) {
			cmd.Env = append(os.Environ(), env[i]...)
		}
		wg.Go(func() {
			out, err := cmd.CombinedOutput()
			outs[i].out = string(out)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				outs[i].code = ee.ExitCode()
			} else if err != nil {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ferry plugin test %v: %v\n%s", runs[i], err, outs[i].out)
		}
	}
	return outs
}

// The negative controls of the consensus cases: the raft plugin broken six
// ways (testdata/badraft) fails the case that checks what it breaks, on the
// gRPC plane (the ring one runs the same case code), with what is wrong.
// The six runs are independent and run side by side.
func TestPluginTestFailsBadRaft(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "badraft")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/badraft").CombinedOutput(); err != nil {
		t.Fatalf("build badraft: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "raft.yaml")
	section := `{"listen": "$LISTEN", "admin": "$ADMIN", "peers": "$MEMBERS", "heartbeat_timeout": "500ms", "election_timeout": "500ms",
		"leader_lease_timeout": "250ms", "snapshot_threshold": 4, "trailing_logs": 0, "snapshot_interval": "20ms"}`
	if err := os.WriteFile(cfg, []byte(section), 0o644); err != nil {
		t.Fatal(err)
	}
	// bound: --consensus-bound. A fault found by a wait that runs out
	// (leaders, apply-first, no-catchup) fails after it, so it is short
	// there; the others fail as soon as the check runs.
	cases := []struct{ fault, bound, run, want string }{
		{"leaders", "2s", "ConsensusElection", "did not agree on one leader within 2s"},
		{"follower-writes", "20s", "ConsensusFollowerRefuses", "answered STATUS_OK for refused-node-"},
		{"apply-first", "5s", "ConsensusCommitThroughLog", "logs are not the same after 5s"},
		{"no-catchup", "8s", "ConsensusSnapshotCatchUp", "back after its entries were compacted away: the members' logs are not the same"},
		{"ok-without-quorum", "20s", "ConsensusCommitThroughLog", "answered STATUS_OK for no-quorum-0 with both other members gone"},
		{"store-without-quorum", "20s", "ConsensusCommitThroughLog", "stored no-quorum-0, which cannot have committed (no quorum)"},
	}
	var runs, envs [][]string
	for _, c := range cases {
		runs = append(runs, []string{"replication", bin, "--config", cfg, "--snapshots", "--consensus-bound", c.bound, "--run", "grpc/" + c.run})
		envs = append(envs, []string{"FERRY_BADRAFT=" + c.fault})
	}
	outs := runPluginTestsAtOnce(t, runs, envs...)
	for i, c := range cases {
		out := outs[i]
		if out.code == 0 {
			t.Errorf("ferry plugin test passed the raft plugin broken (%s):\n%s", c.fault, out.out)
			continue
		}
		if !strings.Contains(out.out, "FAIL  grpc/"+c.run) || !strings.Contains(out.out, c.want) {
			t.Errorf("the raft plugin broken (%s): output lacks FAIL grpc/%s with %q:\n%s", c.fault, c.run, c.want, out.out)
		}
	}
}

// The negative control: a replication plugin executable that answers OK
// before any slave has the batch fails the command.
func TestPluginTestFailsBadReplication(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "badreplication")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/badreplication").CombinedOutput(); err != nil {
		t.Fatalf("build badreplication: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "replication.yaml")
	if err := os.WriteFile(cfg, []byte("listen: $LISTEN\npeers: $PEERS\ntimeout: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runPluginTest(t, "replication", bin, "--config", cfg, "--sync-replicas", "1")
	if code == 0 {
		t.Fatalf("ferry plugin test passed a plugin that answers OK before replicating:\n%s", out)
	}
	for _, want := range []string{"FAIL  ring/NeverOKBelowLevel", "answered STATUS_OK with the slave gone", "FAIL  grpc/NeverOKBelowLevel", "replication cases failed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
}

// The Go stage example passes the stage suite; the negative controls: the
// same plugin configured to lie (answer for a delivery it was not given, or
// answer fewer) fails it, naming the breach.
func TestPluginTestGoStageExample(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ferry-stage-example")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..", "examples", "plugins", "go-stage")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/plugins/go-stage: %v\n%s", err, out)
	}
	out, code := runPluginTest(t, "stage", bin)
	if code != 0 || !strings.Contains(out, "PASS  StageConcurrentBatches") || !strings.Contains(out, "ok  5 stage cases") {
		t.Fatalf("ferry plugin test stage of the Go example: exit %d\n%s", code, out)
	}
	for lie, want := range map[string]string{"extra": "which it was not given", "fewer": "answered 63 of 64 deliveries"} {
		cfg := filepath.Join(t.TempDir(), "lie.yaml")
		if err := os.WriteFile(cfg, []byte("lie: "+lie+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := runPluginTest(t, "stage", bin, "--config", cfg)
		if code == 0 || !strings.Contains(out, "FAIL  StageBatch") || !strings.Contains(out, want) {
			t.Errorf("ferry plugin test stage of a plugin that lies (%s): exit %d, want FAIL StageBatch with %q\n%s", lie, code, want, out)
		}
	}
}

// The Python stage plugin (examples/plugins/python-stage) passes `ferry
// plugin test stage`; a copy patched to leave out its last verdict fails
// it, and its generated message modules match the .proto files when protoc
// is there to say.
func TestPluginTestPythonStageExample(t *testing.T) {
	pythonForPlugins(t)
	example := filepath.Join("..", "..", "examples", "plugins", "python-stage")
	out, code := runPluginTest(t, "stage", filepath.Join(example, "ferry-stage-pystage"))
	if code != 0 || !strings.Contains(out, "ok  5 stage cases") {
		t.Fatalf("ferry plugin test stage of the Python example: exit %d\n%s", code, out)
	}

	broken := t.TempDir()
	copyTree(t, example, broken)
	src, err := os.ReadFile(filepath.Join(broken, "pystage.py"))
	if err != nil {
		t.Fatal(err)
	}
	const ret = "        return resp\n"
	if !strings.Contains(string(src), ret) {
		t.Fatalf("pystage.py no longer has %q: update this negative control", ret)
	}
	patched := strings.Replace(string(src), ret, "        if len(resp.verdicts) > 1:\n            del resp.verdicts[-1]\n"+ret, 1)
	if err := os.WriteFile(filepath.Join(broken, "pystage.py"), []byte(patched), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runPluginTest(t, "stage", filepath.Join(broken, "ferry-stage-pystage"))
	if code == 0 || !strings.Contains(out, "FAIL  StageBatch") || !strings.Contains(out, "answered 63 of 64 deliveries") {
		t.Fatalf("ferry plugin test passed the Python stage answering fewer: exit %d\n%s", code, out)
	}

	if _, err := exec.LookPath("protoc"); err != nil {
		t.Log("protoc not on PATH: the generated modules of the Python stage example were not compared with the .proto files")
		return
	}
	gen := filepath.Join(t.TempDir(), "gen")
	if out, err := exec.Command("sh", filepath.Join(example, "gen.sh"), gen).CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	err = filepath.WalkDir(gen, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(gen, p)
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(example, "gen", rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("examples/plugins/python-stage/gen/%s is not what gen.sh makes from the .proto files now: run examples/plugins/python-stage/gen.sh", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The Python stage plugin (examples/plugins/python-stage) in a real
// pipeline under `ferry run`, its calls batched by the flow's max_batch and
// linger: 16 deliveries in flight at once (the flow's concurrency) go to the
// plugin 8 to a call, as the x-stage-batch header each passed message gets
// says, and every message reaches the sink transformed. The control:
// max_batch 1 makes every call hold one delivery.
func TestPythonStageBatchesInPipeline(t *testing.T) {
	py := pythonForPlugins(t)
	example, err := filepath.Abs(filepath.Join("..", "..", "examples", "plugins", "python-stage"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 96
	// run runs the pipeline and returns the batch sizes the sink's
	// messages came in.
	run := func(maxBatch int) []int {
		dir := t.TempDir()
		out := filepath.Join(dir, "out.jsonl")
		yaml := filepath.Join(dir, "pystage.yaml")
		if err := os.WriteFile(yaml, fmt.Appendf(nil, `name: pystage
node: {data_dir: %q}
plugins:
  dirs: [%q]
  storage: {type: memory}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: t, queues: 2}]
generators: [{name: g, topic: t, count: %d, size: 64}]
flows:
  - name: upper
    topic: t
    concurrency: 16
    stages:
      - type: plugin
        config: {plugin: pystage, config: {upper: true, tag_batch: true}, max_batch: %d, linger: 200ms, timeout: 30s}
    sink: {type: file, path: %q, format: json}
`, filepath.Join(dir, "data"), example, ferrytest.FreeAddr(t), n, maxBatch, out), 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := runFerry(t, []string{"FERRY_PYTHON=" + py}, "run", yaml)
		if code != 0 {
			t.Fatalf("ferry run with the Python stage (max_batch %d): exit %d\n%s%s", maxBatch, code, stdout, stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		ids := map[string]bool{}
		for l := range strings.Lines(string(b)) {
			var r struct {
				ID         string
				Headers    map[string]string
				Body       string
				BodyBase64 []byte `json:"body_base64"`
			}
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("sink line %q: %v", l, err)
			}
			if bytes.ContainsFunc(append([]byte(r.Body), r.BodyBase64...), func(c rune) bool { return 'a' <= c && c <= 'z' }) {
				t.Fatalf("message %s reached the sink not upper-cased by the plugin: %q", r.ID, r.Body)
			}
			size, err := strconv.Atoi(r.Headers["x-stage-batch"])
			if err != nil {
				t.Fatalf("message %s reached the sink without the plugin's x-stage-batch header: %v", r.ID, r.Headers)
			}
			ids[r.ID] = true
			sizes = append(sizes, size)
		}
		if len(ids) != n {
			t.Fatalf("the sink got %d distinct messages (%d lines), want %d", len(ids), len(sizes), n)
		}
		return sizes
	}
	sizes := run(8)
	biggest := 0
	for _, s := range sizes {
		if s < 1 || s > 8 {
			t.Fatalf("a call held %d deliveries with max_batch 8: %v", s, sizes)
		}
		biggest = max(biggest, s)
	}
	if biggest < 2 {
		t.Fatalf("every call held one delivery with 16 in flight, max_batch 8 and linger 200ms: %v", sizes)
	}
	for _, s := range run(1) {
		if s != 1 {
			t.Fatalf("control: a call held %d deliveries with max_batch 1", s)
		}
	}
}
