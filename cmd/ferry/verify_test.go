package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/verify"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// verifyReport is the part of results.json these tests read.
type verifyReport struct {
	Verdict string   `json:"verdict"`
	Reasons []string `json:"reasons"`
	Result  struct {
		Sent, Stored int
		Acked        int `json:"acked_ok"`
		Lost         int `json:"lost"`
		Duplicated   int `json:"duplicated"`
		Unexpected   int `json:"unexpected"`
		OutOfOrder   int `json:"out_of_order"`
	} `json:"result"`
	Faults []struct {
		Target   string `json:"target"`
		Injected int64  `json:"injected_ns"`
		Healed   int64  `json:"healed_ns"`
		Error    string `json:"error"`
	} `json:"faults"`
	Sends []struct {
		ID string `json:"id"`
	} `json:"sends"`
	Groups []struct {
		Group       string `json:"group"`
		Delivered   int    `json:"delivered"`
		Redelivered int    `json:"redelivered"`
		Missing     int    `json:"missing"`
		Lost        int    `json:"lost"`
		Unexpected  int    `json:"unexpected"`
		OutOfOrder  int    `json:"out_of_order"`
		NotStored   int    `json:"delivered_not_stored"`
		Restarts    int    `json:"consumer_restarts"`
	} `json:"groups"`
}

// validateResults checks results.json against the documented schema
// (docs/verify-results.schema.json).
func validateResults(t *testing.T, data []byte) error {
	t.Helper()
	c := jsonschema.NewCompiler()
	sch, err := c.Compile("../../docs/verify-results.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return sch.Validate(v)
}

func readVerifyReport(t *testing.T, dir string) verifyReport {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validateResults(t, data); err != nil {
		t.Fatalf("results.json does not validate against docs/verify-results.schema.json: %v", err)
	}
	// The negative control: the same with a verdict the schema does not
	// know fails.
	if err := validateResults(t, bytes.Replace(data, []byte(`"verdict": "`), []byte(`"verdict": "maybe-`), 1)); err == nil {
		t.Fatal("the schema took a verdict of maybe-pass")
	}
	var r verifyReport
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	f, err := os.Open(filepath.Join(dir, "latency.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if cfg, err := png.DecodeConfig(f); err != nil || cfg.Width < 100 || cfg.Height < 100 {
		t.Fatalf("latency.png: %v %+v", err, cfg)
	}
	return r
}

// ferry verify of the durable broker pipeline (flush sync), with the node
// and each of its plugins killed (-9) under load, a power loss (the store
// drops what it did not fsync), a pause (SIGSTOP, SIGCONT) and its consumer
// killed: nothing acknowledged is lost, nothing is stored twice, the group
// delivers every stored message, and every fault was injected and healed.
func TestVerifyBrokerUnderKills(t *testing.T) {
	out := t.TempDir()
	stdout, stderr, code := runFerry(t, nil, "verify", "../../pipelines/broker.yaml", "--duration", "8s", "--producers", "3",
		"--faults", "kill:transport@1s,kill:broker@2s-2500ms,power-loss@3500ms-4s,kill:consumer@4500ms,kill:storage@5500ms,pause:broker@6500ms-7s", "--out", out)
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r := readVerifyReport(t, out)
	if r.Verdict != "pass" || r.Result.Lost != 0 || r.Result.Duplicated != 0 || r.Result.Unexpected != 0 || r.Result.OutOfOrder != 0 {
		t.Fatalf("report: %+v", r)
	}
	if r.Result.Acked < 100 || r.Result.Stored < r.Result.Acked || len(r.Sends) != r.Result.Sent {
		t.Fatalf("too little happened to prove anything: %+v", r.Result)
	}
	if len(r.Faults) != 6 {
		t.Fatalf("faults: %+v", r.Faults)
	}
	for _, f := range r.Faults {
		if f.Error != "" || f.Healed < f.Injected || f.Injected <= 0 {
			t.Errorf("fault %+v", f)
		}
	}
	if len(r.Groups) != 1 || r.Groups[0].Missing != 0 || r.Groups[0].NotStored != 0 || r.Groups[0].Delivered != r.Result.Stored || r.Groups[0].Restarts < 1 {
		t.Errorf("the group (killed once): %+v; want every stored message delivered", r.Groups)
	}
	log, _ := os.ReadFile(filepath.Join(out, "node.log"))
	for _, want := range []string{"kill -9 of the transport plugin", "kill -9 of the node and its plugins", "power loss (storage pid", "power-loss hook armed", "kill -9 of the storage plugin", "plugin restarted", "SIGSTOP to the node", "SIGCONT to the node"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("node.log lacks %q", want)
		}
	}
}

// The negative control: a store that drops every 10th message it
// acknowledges fails the verdict, exit status 1, naming the loss.
func TestVerifyFailsALossyStore(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "ferry-storage-lossy"), "./testdata/lossystore").CombinedOutput(); err != nil {
		t.Fatalf("build lossystore: %v\n%s", err, out)
	}
	yaml := filepath.Join(dir, "lossy.yaml")
	if err := os.WriteFile(yaml, []byte(`name: lossy
plugins:
  dirs: [`+dir+`]
  storage: {type: lossy}
  transport: {type: grpc, config: {listen: 127.0.0.1:1}}
topics: [{name: orders, queues: 2}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	stdout, stderr, code := runFerry(t, nil, "verify", yaml, "--duration", "3s", "--producers", "2", "--faults", "kill:transport@1s", "--out", out)
	if code != 1 || !strings.Contains(stdout, "verdict: fail") || !strings.Contains(stdout, "acknowledged message(s) lost") {
		t.Fatalf("exit %d, want 1 and a failed verdict naming the loss\n%s\n%s", code, stdout, stderr)
	}
	r := readVerifyReport(t, out)
	if r.Verdict != "fail" || r.Result.Lost == 0 || r.Result.Lost > r.Result.Acked/5 {
		t.Fatalf("report: %+v (want about a tenth of the acked lost)", r.Result)
	}
}

// Runs verify cannot make are refused with what is wrong, before anything
// starts.
func TestVerifyRefuses(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mem := write("mem.yaml", "name: mem\nplugins: {storage: {type: memory}}\ntopics: [{name: t}]\n")
	http := write("http.yaml", "name: h\nplugins: {transport: {type: http, config: {listen: 127.0.0.1:1}}}\ntopics: [{name: t}]\n")
	pw := write("pw", "x\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"verify", mem, "--faults", "kill:broker@1s"}, "the memory store keeps nothing"},
		{[]string{"verify", http}, "drives a node through the grpc transport"},
		{[]string{"verify", mem, "--faults", "kill:transport@1s", "--topic", "nope"}, `declares no topic "nope"`},
		{[]string{"verify", mem, "--faults", "crash:broker@1s"}, "the kind must be kill, pause, power-loss, partition, delay or reset"},
		{[]string{"verify", mem, "--faults", "partition:broker@1s"}, "a link fault names a node of a cluster"},
		{[]string{"verify", mem, "--faults", "partition:leader@1s"}, "a single node has no links between nodes"},
		{[]string{"verify", "../../pipelines/cluster/raft-1.yaml"}, "give every pipeline file of the cluster"},
		{[]string{"verify", "../../pipelines/cluster/raft-1.yaml", "../../pipelines/cluster/raft-2.yaml"}, `names "raft-3", which is the node.id of none of the files given`},
		{[]string{"verify", "../../pipelines/cluster/master.yaml", "../../pipelines/cluster/raft-1.yaml"}, `one cluster, one replication`},
		{[]string{"verify", "../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml", "--faults", "kill:nobody@1s"}, `no node has id "nobody" (the nodes: master, slave, or leader, or follower)`},
		{[]string{"verify", "../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml", "--faults", "kill:broker@1s"}, "a cluster has several brokers"},
		{[]string{"verify", "../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml", "--faults", "power-loss@1s"}, "fault power-loss@1s-1s: a cluster has several brokers: name a node's id, or leader"},
		{[]string{"verify", "../../pipelines/cluster/master.yaml", "../../pipelines/cluster/slave.yaml", "--faults", "power-loss:storage@1s"}, "a power loss hits a node"},
		{[]string{"verify", "../../pipelines/cluster/raft-1.yaml", "../../pipelines/cluster/raft-2.yaml", "../../pipelines/cluster/raft-3.yaml", "--faults", "pause:leader@1s-1400ms"}, "not longer than the election timeout 500ms"},
		{[]string{"verify", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"verify", mem, "--faults", "kill:follower@1s"}, `target "follower" is not one of broker`},
		{[]string{"verify", mem, "--faults", "kill:transport@1s", "--user", "who", "--password-file", pw}, "--user who given, but no pipeline file has users"},
	} {
		stdout, stderr, code := runFerry(t, nil, c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("ferry %v: exit %d, want 1 with %q\n%s%s", c.args, code, c.want, stdout, stderr)
		}
	}
}

// Under flush async a power loss loses what was acknowledged since the last
// fsync: verify finds that loss (the checker sees it), and passes the run
// because each lost message was acknowledged within flush_interval before
// the power loss, which is what flush async permits. The consumer group
// still delivers everything stored (it failed before log epochs: it skipped
// the messages appended after the restart).
func TestVerifyPowerLossUnderFlushAsync(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "async.yaml")
	if err := os.WriteFile(yaml, []byte(`name: async
plugins:
  storage: {type: file, config: {flush: async, flush_interval: 2s, flush_bytes: 256MiB}}
  transport: {type: grpc, config: {listen: 127.0.0.1:1}}
topics: [{name: orders, queues: 2}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// The lying-disk hook's variable is set, and a release build ignores it
	// (TestVerifyPowerLossBeyondFlushAsyncFails: a test build's does not).
	stdout, stderr, code := runFerry(t, []string{envPowerLossLyingDisk + "=1"}, "verify", yaml, "--duration", "5s", "--producers", "2", "--faults", "power-loss@2500ms-3s", "--out", out)
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		LostAtPowerLoss int   `json:"lost_at_power_loss"`
		LossWindow      int64 `json:"loss_window_ns"`
		Groups          []struct {
			Delivered int `json:"delivered"`
			Missing   int `json:"missing"`
		} `json:"groups"`
		Result struct {
			Lost  int `json:"lost"`
			Acked int `json:"acked_ok"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Result.Lost == 0 || r.LostAtPowerLoss != r.Result.Lost || r.LossWindow <= 0 || r.LossWindow > int64(2250*time.Millisecond) {
		t.Fatalf("lost %d, lost at power loss %d, window %v; want some lost, all within the flush interval\n%s", r.Result.Lost, r.LostAtPowerLoss, time.Duration(r.LossWindow), stdout)
	}
	// The group delivers every message stored, the ones appended after the
	// restart at offsets the lost ones had too (the consumer's position
	// was past the log's new end: it moves back to where the broker's new
	// epoch began, not to the end it sees).
	if len(r.Groups) != 1 || r.Groups[0].Missing != 0 || r.Groups[0].Delivered == 0 {
		t.Fatalf("group: %+v; want every stored message delivered\n%s", r.Groups, stdout)
	}
	if !strings.Contains(stdout, "lost at power loss") {
		t.Errorf("the table does not say what the power loss cost:\n%s", stdout)
	}
}

// envPowerLossLyingDisk is faults_on.go's EnvFaultPowerLossLyingDisk
// (defined only in test builds).
const envPowerLossLyingDisk = "FERRY_FAULT_POWER_LOSS_LYING_DISK"

// The verdict on a power loss under flush async, end to end, can fail: a
// test build's node that verify started, with the lying-disk hook, drops at
// the power loss the newer half of what its store fsynced too, messages
// acknowledged long before the flush interval that preceded the cut. Verify
// must exit 1, saying the loss is beyond what flush async permits and
// naming the power loss it followed. (The release build ignores the hook's
// variable: TestVerifyPowerLossUnderFlushAsync sets it and passes.)
func TestVerifyPowerLossBeyondFlushAsyncFails(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "async.yaml")
	if err := os.WriteFile(yaml, []byte(`name: async
plugins:
  storage: {type: file, config: {flush: async, flush_interval: 200ms, flush_bytes: 256MiB}}
  transport: {type: grpc, config: {listen: 127.0.0.1:1}}
topics: [{name: orders, queues: 2}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	bin := ferrytest.BinaryWithTags(t, "ferry_faults")
	stdout, stderr, code := runFerryBin(t, bin, []string{envPowerLossLyingDisk + "=1"}, "verify", yaml, "--duration", "5s", "--producers", "2", "--faults", "power-loss@2500ms-3s", "--out", out)
	if code != 1 || !strings.Contains(stdout, "verdict: fail") {
		t.Fatalf("exit %d, want 1 and verdict fail\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"flush async may lose at a power loss only what was acknowledged within flush_interval 200ms", " before power-loss@2.5s-3s)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout)
		}
	}
	t.Logf("%s", stdout)
}

// The power-loss hook is not reachable from a node that a running ferry
// verify did not start: a token file that is readable by others, that is not
// verify's, or that names a process other than ferry verify arms nothing.
func TestPowerLossHookRefusesStrangers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	self := strconv.Itoa(os.Getpid()) // a test binary, not ferry verify
	for _, c := range []struct {
		path, want string
	}{
		{write("open", verify.PowerLossMagic+" "+self+" 00\n", 0o644), "not a private regular file"},
		{write("magic", "something "+self+" 00\n", 0o600), "not a token of ferry verify"},
		{write("pid", verify.PowerLossMagic+" "+self+" 00\n", 0o600), "is not a running ferry verify"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		t.Setenv(verify.EnvPowerLoss, c.path)
		if _, err := verifyPowerLoss(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("token %s: %v, want an error with %q", filepath.Base(c.path), err, c.want)
		}
	}
}

// Async producers (a window in flight, batches per queue) under a node kill
// keep every acked message and each key's order; oneway sends promise
// nothing, and verify says what of them was stored, failing nothing for it.
func TestVerifyAsyncAndOneway(t *testing.T) {
	for _, c := range []struct {
		mode, faults, rate, keys string
	}{
		// Five keys per producer: their messages are in flight
		// together, and each key's order is checked.
		{"async", "kill:broker@1s-1500ms", "", "5"},
		{"oneway", "kill:transport@1s", "", ""},
		// Paced: at most 100 a second from each of the 2 producers.
		{"async", "kill:transport@1s", "100", ""},
	} {
		out := t.TempDir()
		args := []string{"verify", "../../pipelines/broker.yaml", "--mode", c.mode, "--duration", "3s", "--producers", "2", "--faults", c.faults, "--out", out}
		want := c.mode + " producer(s)"
		if c.keys != "" {
			args = append(args, "--keys", c.keys)
			want += " of " + c.keys + " keys each"
		}
		if c.rate != "" {
			args = append(args, "--rate", c.rate)
			want += " at " + c.rate + " msgs/s each"
		}
		stdout, stderr, code := runFerry(t, nil, args...)
		if code != 0 || !strings.Contains(stdout, "verdict: pass") || !strings.Contains(stdout, want) {
			t.Fatalf("%s %s: exit %d\n%s\n%s", c.mode, c.rate, code, stdout, stderr)
		}
		data, err := os.ReadFile(filepath.Join(out, "results.json"))
		if err != nil {
			t.Fatal(err)
		}
		var probe struct {
			Rate   float64 `json:"rate"`
			Keys   int     `json:"keys_per_producer"`
			Result struct {
				Sent   int `json:"sent"`
				Acked  int `json:"acked_ok"`
				Oneway int `json:"oneway"`
			} `json:"result"`
		}
		if err := json.Unmarshal(data, &probe); err != nil {
			t.Fatal(err)
		}
		if wantKeys := map[string]int{"": 1, "5": 5}[c.keys]; probe.Keys != wantKeys {
			t.Errorf("keys_per_producer %d in results.json, want %d", probe.Keys, wantKeys)
		}
		if c.rate != "" {
			// Never faster than the pace (a loaded machine may be slower);
			// unpaced, the same run sends thousands.
			if probe.Rate != 100 || probe.Result.Sent > 2*100*3+2 || probe.Result.Acked < 100 {
				t.Errorf("paced at %s: rate %v in results.json, sent %d, acked %d; want at most %d sent", c.rate, probe.Rate, probe.Result.Sent, probe.Result.Acked, 2*100*3+2)
			}
			continue
		}
		if c.mode == "async" && probe.Result.Sent <= 2*100*3+2 {
			// The control of the paced case: unpaced, far more.
			t.Errorf("unpaced async sent only %d", probe.Result.Sent)
		}
		acked, oneway := probe.Result.Acked, probe.Result.Oneway
		if c.mode == "async" && (acked < 100 || oneway != 0) || c.mode == "oneway" && (oneway < 100 || acked != 0) {
			t.Errorf("%s: acked %v, oneway %v", c.mode, acked, oneway)
		}
	}
}

// The pipeline's users and ACLs stay under verify: its producers,
// read-back and group authenticate as the user given (--user,
// --password-file), here one allowed only what verify needs (Pub and Sub
// on the topic, Sub on its groups), through a kill of the node. The
// controls: without credentials the run is refused before anything starts,
// naming what to give; with a wrong password the node refuses verify at
// start, which fails naming the credentials (the node kept its users).
func TestVerifyWithUsers(t *testing.T) {
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), 4)
	if err != nil {
		t.Fatal(err)
	}
	yaml := filepath.Join(dir, "secure.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: secure
plugins:
  storage: {type: file, config: {flush: sync}}
  transport: {type: grpc, config: {listen: 127.0.0.1:1}}
topics: [{name: orders, queues: 2}]
security:
  users:
    - name: verifier
      password_hash: %q
      policies:
        - {resources: ["Topic:orders"], actions: [Pub, Sub]}
        - {resources: ["Group:v*"], actions: [Sub]}
`, hash)), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, pw string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, bad := write("pw", "s3cret"), write("wrong", "guess")

	_, stderr, code := runFerry(t, nil, "verify", yaml, "--duration", "3s")
	if code != 1 || !strings.Contains(stderr, "has users (security.users, users_file)") || !strings.Contains(stderr, "give --user NAME and its password") {
		t.Fatalf("without credentials: exit %d, want 1 naming what to give\n%s", code, stderr)
	}
	_, stderr, code = runFerry(t, nil, "verify", yaml, "--duration", "3s", "--user", "verifier", "--password-file", bad)
	if code != 1 || !strings.Contains(stderr, "refused verify's credentials") || !strings.Contains(stderr, "wrong password") {
		t.Fatalf("with a wrong password: exit %d, want 1 naming the credentials\n%s", code, stderr)
	}

	out := t.TempDir()
	stdout, stderr, code := runFerry(t, nil, "verify", yaml, "--duration", "4s", "--producers", "2", "--user", "verifier", "--password-file", good,
		"--faults", "kill:broker@1500ms-2s", "--out", out)
	if code != 0 || !strings.Contains(stdout, "verdict: pass") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	r := readVerifyReport(t, out)
	if r.Result.Lost != 0 || r.Result.Acked < 50 || len(r.Groups) != 1 || r.Groups[0].Missing != 0 || r.Groups[0].Delivered != r.Result.Stored {
		t.Fatalf("report: %+v, groups %+v", r.Result, r.Groups)
	}
	data, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var u struct{ User string }
	if err := json.Unmarshal(data, &u); err != nil || u.User != "verifier" {
		t.Fatalf("results.json user %q (%v), want verifier", u.User, err)
	}
}
