package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// nodeSettings is topic's settings as broker's Metadata lists them (nil:
// none, or the node does not answer); listed reports whether it lists the
// topic.
func nodeSettings(broker, topic string) (s *ferryv1.TopicSettings, listed bool) {
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, false
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := ferryv1.NewBrokerClient(cc).Metadata(ctx, &ferryv1.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, false
	}
	for _, ti := range r.Topics {
		if ti.Name == topic {
			return ti.Settings, true
		}
	}
	return nil, false
}

// waitSettings waits until broker lists topic with max_message_bytes max
// and retention_bytes ret.
func waitSettings(t *testing.T, node, broker, topic string, max, ret int64) {
	t.Helper()
	eventually(t, topicWait, fmt.Sprintf("%s lists topic %s with max_message_bytes %d, retention_bytes %d", node, topic, max, ret), func() bool {
		s, ok := nodeSettings(broker, topic)
		return ok && s.GetMaxMessageBytes() == max && s.GetRetentionBytes() == ret
	})
}

// runSettingsNode starts `ferry run` with the file store in 4 KiB segments
// on dir, and returns a connected client and a stop function.
func runSettingsNode(t *testing.T, dir, addr string) (*client.Client, func()) {
	t.Helper()
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: topic-settings
node: {data_dir: %q}
plugins:
  storage: {type: file, config: {flush: sync, segment_bytes: 4KiB}}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: orders, queues: 1}, {name: declared, queues: 1, max_message_bytes: 512, retention_age: 1h}]
`, filepath.Join(dir, "data"), addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	node := exec.Command(ferryBin, "run", "--log-level", "warn", yaml)
	node.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncBuffer
	node.Stdout, node.Stderr = &out, &out
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = syscall.Kill(-node.Process.Pid, syscall.SIGTERM)
			_ = node.Wait()
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("--- node output:\n%s", out.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		c, err := client.Dial(ctx, addr, client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err == nil {
			return c, func() { c.Close(); stop() }
		}
		if ctx.Err() != nil {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A topic's own settings on one `ferry run` (issue 15): max_message_bytes
// refuses a bigger produce with INVALID_ARGUMENT naming the topic and the
// limit, and takes it once raised by `ferry topic alter`, while a topic
// without the setting takes it all along (the control) and the node's
// plugins live on; retention_bytes drops the topic's old segments on the
// file store's next retention pass while its newer messages stay readable
// and the other topic keeps everything; describe shows the settings, and
// they survive a restart.
func TestTopicSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	c, stop := runSettingsNode(t, dir, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The pipeline's topics declare settings too.
	if s, _ := nodeSettings(addr, "declared"); s.GetMaxMessageBytes() != 512 || s.GetRetentionAgeNanos() != int64(time.Hour) {
		t.Fatalf("topic declared with max_message_bytes 512, retention_age 1h in the pipeline has %v", s)
	}
	if code, out := topicCLI(t, addr, "create", "logs", "--queues", "1", "--retention-bytes", "8KiB", "--max-message-bytes", "1KiB"); code != 0 || !strings.Contains(out, "max_message_bytes 1024") {
		t.Fatalf("create with settings: exit %d\n%s", code, out)
	}
	for _, bad := range [][]string{
		{"create", "neg", "--queues", "1", "--max-message-bytes", "8MiB"},
		{"alter", "logs", "--retention-age", "soon"},
		{"alter", "logs"},
	} {
		if code, out := topicCLI(t, addr, bad...); code == 0 {
			t.Errorf("ferry topic %v: exit 0, want an error\n%s", bad, out)
		} else {
			t.Logf("ferry topic %v: %s", bad, strings.TrimSpace(out))
		}
	}

	p := c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second})
	// Retention by size: 100 messages of ~1 KiB in 4 KiB segments, the
	// first in the log (a segment goes once no queue reads from it: the
	// topics share the log).
	body := func(i int) []byte { return fmt.Appendf(nil, "m-%04d-%s", i, strings.Repeat("x", 1000)) }
	for i := range 100 {
		if _, err := p.SendSync(ctx, client.Message{Topic: "logs", Body: body(i)}); err != nil {
			t.Fatal(err)
		}
	}
	storeDir := filepath.Join(dir, "data", "storage-file")
	first := filepath.Join(storeDir, "00000000000000000000.log")
	describe := func() topicJSON {
		out, stderr, code := runFerry(t, nil, "topic", "describe", "logs", "--broker", addr, "--json")
		if code != 0 {
			t.Fatalf("describe: exit %d: %s", code, stderr)
		}
		var d topicJSON
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		return d
	}
	var d topicJSON
	eventually(t, topicWait, "logs keeps at most 8KiB and its oldest segment files go", func() bool {
		d = describe()
		segs, _ := filepath.Glob(filepath.Join(storeDir, "*.log"))
		return d.Detail[0].Start > 0 && *d.Detail[0].Bytes <= 8<<10 && d.Detail[0].End == 100 && len(segs) > 0 && !fileExists(first)
	})
	if d.Settings == nil || d.Settings.RetentionBytes != 8<<10 || d.Settings.MaxMessageBytes != 1<<10 {
		t.Fatalf("describe --json settings: %+v", d.Settings)
	}
	// The newest messages are read; the old ones are gone.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := ferryv1.NewBrokerClient(cc).Fetch(ctx, &ferryv1.FetchRequest{Topic: "logs", Positions: []*ferryv1.FetchPosition{{Queue: 0, Offset: d.Detail[0].Start}}, MaxMessages: 1000, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Messages); n == 0 || n > 9 || !strings.HasPrefix(string(resp.Messages[n-1].Body), "m-0099-") {
		t.Fatalf("fetch of logs from 0 after retention: %d messages; want at most 8 KiB of the newest, ending with m-0099", n)
	}
	for i := range 100 {
		if _, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: body(i)}); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 1500)
	_, err = p.SendSync(ctx, client.Message{Topic: "logs", Body: big})
	if !errors.Is(err, sdk.ErrInvalidArgument) || !strings.Contains(err.Error(), `topic "logs"`) || !strings.Contains(err.Error(), "max_message_bytes of 1024") {
		t.Fatalf("a 1500-byte produce to logs (max_message_bytes 1KiB): %v; want INVALID_ARGUMENT naming the topic and the limit", err)
	}
	if r, err := p.SendSync(ctx, client.Message{Topic: "orders", Body: big}); err != nil || r.Status != ferryv1.Status_STATUS_OK {
		t.Fatalf("control: the same produce to orders (no setting): %v %v", r, err)
	}
	if code, out := topicCLI(t, addr, "alter", "logs", "--max-message-bytes", "2KiB"); code != 0 {
		t.Fatalf("alter max_message_bytes: exit %d\n%s", code, out)
	}
	if r, err := p.SendSync(ctx, client.Message{Topic: "logs", Body: big}); err != nil || r.Status != ferryv1.Status_STATUS_OK {
		t.Fatalf("the 1500-byte produce after raising max_message_bytes to 2KiB: %v %v", r, err)
	}

	if o, err := c.QueueSizes(ctx, []*ferryv1.QueueRef{{Topic: "orders"}}); err != nil || o[0].Start != 0 || o[0].End != 101 {
		t.Fatalf("control: orders (no retention of its own) holds %v (%v); want 0..101", o, err)
	}
	out, stderr, code := runFerry(t, nil, "topic", "describe", "logs", "--broker", addr)
	if code != 0 || !strings.Contains(out, "settings: retention_bytes 8192 per queue, max_message_bytes 2048") {
		t.Fatalf("describe: exit %d\n%s%s", code, out, stderr)
	}

	// After a restart: the same settings, applied.
	stop()
	c, _ = runSettingsNode(t, dir, addr)
	p = c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second})
	if s, _ := nodeSettings(addr, "logs"); s.GetMaxMessageBytes() != 2<<10 || s.GetRetentionBytes() != 8<<10 {
		t.Fatalf("after a restart logs has settings %v", s)
	}
	if _, err := p.SendSync(ctx, client.Message{Topic: "logs", Body: make([]byte, 3000)}); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Fatalf("after a restart a 3000-byte produce to logs (max 2KiB): %v; want INVALID_ARGUMENT", err)
	}
	if code, out := topicCLI(t, addr, "alter", "logs", "--max-message-bytes", "default"); code != 0 || strings.Contains(out, "max_message_bytes") {
		t.Fatalf("alter --max-message-bytes default: exit %d\n%s", code, out)
	}
	if r, err := p.SendSync(ctx, client.Message{Topic: "logs", Body: make([]byte, 3000)}); err != nil || r.Status != ferryv1.Status_STATUS_OK {
		t.Fatalf("the 3000-byte produce after unsetting max_message_bytes: %v %v", r, err)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// On a 3-node raft group a topic's settings go through the log: created
// with settings on the leader, every node lists them; an alter made while
// a follower is down reaches it when it comes back, and its restart keeps
// them.
func TestRaftTopicSettingsReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	for _, nd := range nodes {
		nd.start(t, bin)
	}
	onLeader(t, nodes, "create", "logs", "--queues", "2", "--max-message-bytes", "1KiB", "--retention-bytes", "64KiB")
	for _, nd := range nodes {
		waitSettings(t, nd.id, nd.broker, "logs", 1<<10, 64<<10)
	}
	leader, _ := waitLeader(t, nodes, "a raft leader")
	var down *raftNode
	for _, nd := range nodes {
		if nd != leader {
			down = nd
			break
		}
	}
	down.kill(t)
	var others []*raftNode
	for _, nd := range nodes {
		if nd != down {
			others = append(others, nd)
		}
	}
	onLeader(t, others, "alter", "logs", "--max-message-bytes", "2KiB")
	for _, nd := range others {
		waitSettings(t, nd.id, nd.broker, "logs", 2<<10, 64<<10)
	}
	down.start(t, bin)
	waitSettings(t, down.id, down.broker, "logs", 2<<10, 64<<10)
}

// On master–slave (async) a topic's settings reach the slave with the
// master's topic set: at the create, at an alter of settings only, and
// they stay after the slave's restart.
func TestMasterSlaveTopicSettingsReplicated(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "async", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "async", sb, sr, []string{mr}, "5s")
	master.start(t, bin)
	slave.start(t, bin)
	eventually(t, topicWait, "slave linked to master", func() bool {
		st, err := clusterStatus(context.Background(), sr)
		return err == nil && st.LeaderConnected
	})
	if code, out := topicCLI(t, mb, "create", "logs", "--queues", "2", "--max-message-bytes", "1KiB"); code != 0 {
		t.Fatalf("create on the master: exit %d\n%s", code, out)
	}
	waitSettings(t, "slave", sb, "logs", 1<<10, 0)
	if code, out := topicCLI(t, mb, "alter", "logs", "--retention-bytes", "1MiB"); code != 0 {
		t.Fatalf("alter on the master: exit %d\n%s", code, out)
	}
	waitSettings(t, "slave", sb, "logs", 1<<10, 1<<20)
	slave.kill(t)
	slave.start(t, bin)
	waitSettings(t, "slave", sb, "logs", 1<<10, 1<<20)
}
