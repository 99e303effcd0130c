package engine_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/ferrytest"
	"github.com/ferrymq/ferry/plugins/storage/file"
)

// acked is what a producer was told about one message.
type acked struct {
	queue  int32
	offset int64
}

// crashRun is one life of a broker in the crash test.
type crashRun struct {
	t    *testing.T
	bin  string
	yaml string
	addr string
	cmd  *exec.Cmd
}

func (r *crashRun) start() {
	r.cmd = exec.Command(r.bin, "run", "--log-level", "warn", r.yaml)
	r.cmd.Stderr = os.Stderr
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	waitFor(r.t, 30*time.Second, "the broker to listen", func() bool {
		cl, err := client.Dial(context.Background(), r.addr)
		if err == nil {
			cl.Close()
		}
		return err == nil
	})
}

// crash makes the storage plugin lose its page cache and die, and kills the
// broker with SIGKILL.
func (r *crashRun) crash() {
	var storage int
	for _, pid := range children(r.cmd.Process.Pid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "storage/file") {
			storage = pid
		}
	}
	if storage == 0 {
		r.t.Fatal("no storage plugin process")
	}
	if err := syscall.Kill(storage, syscall.SIGUSR1); err != nil {
		r.t.Fatal(err)
	}
	waitFor(r.t, 10*time.Second, "the storage plugin to die", func() bool { return !aliveNotZombie(storage) })
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

func aliveNotZombie(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(st), ") Z ")
}

// crashLoop runs rounds of: start the broker, produce with sync sends from
// several producers for a while, then crash storage and broker together.
// It returns what the producers were told and every id they tried.
func crashLoop(t *testing.T, storageConfig string, rounds int) (map[string]acked, map[string]bool, string) {
	dir := t.TempDir()
	addr := ferrytest.FreeAddr(t)
	yaml := filepath.Join(dir, "broker.yaml")
	if err := os.WriteFile(yaml, []byte(fmt.Sprintf(`name: crash
node: {data_dir: %q}
plugins:
  storage: {type: file, config: %s}
  transport: {type: grpc, config: {listen: %q}}
topics: [{name: t, queues: 4}]
`, filepath.Join(dir, "data"), storageConfig, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &crashRun{t: t, bin: ferrytest.BinaryWithTags(t, "ferry_faults"), yaml: yaml, addr: addr}
	var mu sync.Mutex
	ack := map[string]acked{}
	tried := map[string]bool{}
	for round := 0; round < rounds; round++ {
		r.start()
		cl, err := client.Dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithTimeout(context.Background(), 700*time.Millisecond)
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			p := cl.NewProducer(client.ProducerOptions{ID: fmt.Sprintf("r%dw%d", round, w), Retries: client.NoRetries, Timeout: 2 * time.Second})
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					res, err := p.SendSync(ctx, client.Message{Topic: "t", Key: fmt.Sprint(i % 7), Body: []byte("payload")})
					mu.Lock()
					if res.ID != "" {
						tried[res.ID] = true
					}
					if err == nil && res.Status == sdk.Status(1) {
						ack[res.ID] = acked{res.Queue, res.Offset}
					}
					mu.Unlock()
				}
			}()
		}
		// Crash while the producers are still sending.
		time.Sleep(500 * time.Millisecond)
		r.crash()
		stop()
		wg.Wait()
		cl.Close()
	}
	return ack, tried, filepath.Join(dir, "data")
}

// readStore opens the store left by the crashes and returns every message.
func readStore(t *testing.T, dataDir, config string) map[int32][]*sdk.Message {
	s := file.New()
	if err := s.Configure(context.Background(), []byte(config), &sdk.Environment{DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := map[int32][]*sdk.Message{}
	for q := int32(0); q < 4; q++ {
		for off := int64(0); ; {
			resp, err := s.Read(context.Background(), &sdk.ReadRequest{Topic: "t", Queue: q, Offset: off, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Messages) == 0 {
				break
			}
			out[q] = append(out[q], resp.Messages...)
			off = resp.Messages[len(resp.Messages)-1].Offset + 1
		}
	}
	return out
}

// checkCrashes compares what producers were told with what survived and
// returns how many acknowledged messages were lost.
func checkCrashes(t *testing.T, ack map[string]acked, tried map[string]bool, stored map[int32][]*sdk.Message) (lost int) {
	seen := map[string]acked{}
	for q, msgs := range stored {
		for i, m := range msgs {
			if m.Offset != int64(i) {
				t.Errorf("queue %d: message %d has offset %d (offsets must be dense)", q, i, m.Offset)
			}
			if prev, dup := seen[m.Id]; dup {
				t.Errorf("%s stored twice: %v and %d/%d", m.Id, prev, q, m.Offset)
			}
			seen[m.Id] = acked{q, m.Offset}
			if !tried[m.Id] {
				t.Errorf("unexpected message %s at %d/%d: no producer sent it", m.Id, q, m.Offset)
			}
		}
	}
	for id, a := range ack {
		got, ok := seen[id]
		switch {
		case !ok:
			lost++
		case got != a:
			t.Errorf("%s acknowledged at %v but stored at %v", id, a, got)
		}
	}
	return lost
}

// Issue 3's crash test: a broker with flush: sync is killed again and again,
// each time with the storage losing what it had not fsynced. Every
// acknowledged message survives exactly once, where its producer was told.
func TestCrashSyncFlushLosesNothingAcked(t *testing.T) {
	const config = `{"flush": "sync", "segment_bytes": "64KiB"}`
	ack, tried, dir := crashLoop(t, config, 4)
	if len(ack) < 100 {
		t.Fatalf("only %d messages acknowledged: the test did not load the broker", len(ack))
	}
	lost := checkCrashes(t, ack, tried, readStore(t, dir, config))
	t.Logf("flush sync: %d acknowledged, %d tried, %d lost", len(ack), len(tried), lost)
	if lost != 0 {
		t.Errorf("%d acknowledged messages lost with flush: sync", lost)
	}
}

// The negative control: with flush: async (acks from the page cache) the
// same crashes lose acknowledged messages, and the checker sees it.
func TestCrashAsyncFlushLosesAckedMessages(t *testing.T) {
	const config = `{"flush": "async", "flush_interval": "1h", "flush_bytes": "1GiB", "segment_bytes": "64KiB"}`
	ack, tried, dir := crashLoop(t, config, 2)
	lost := checkCrashes(t, ack, tried, readStore(t, dir, config))
	t.Logf("flush async: %d acknowledged, %d tried, %d lost", len(ack), len(tried), lost)
	if lost == 0 {
		t.Errorf("no loss seen with flush: async and no fsync before the crash: the checker is blind")
	}
}
