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
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/verify"
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
// It returns every send and what its producer was told (core/verify's
// record of a send: acknowledged OK where, or of unknown outcome).
func crashLoop(t *testing.T, storageConfig string, rounds int) ([]verify.Send, string) {
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
	var (
		mu    sync.Mutex
		sends []verify.Send
	)
	for round := 0; round < rounds; round++ {
		r.start()
		cl, err := client.Dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithTimeout(context.Background(), 700*time.Millisecond)
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			id := fmt.Sprintf("r%dw%d", round, w)
			p := cl.NewProducer(client.ProducerOptions{ID: id, Retries: client.NoRetries, Timeout: 2 * time.Second})
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					key := fmt.Sprint(i % 7)
					res, err := p.SendSync(ctx, client.Message{Topic: "t", Key: key, Body: []byte("payload")})
					if res.ID == "" {
						continue
					}
					// A key's sends from one producer are in order
					// (each after the previous one's answer); keys
					// are per producer for the order check.
					s := verify.Send{ID: res.ID, Key: id + "/" + key, Seq: int64(i), Outcome: verify.OutcomeUnknown, Queue: -1, Offset: -1}
					if err == nil {
						s.Status, s.Outcome = res.Status, verify.OutcomeWeak
						if res.Status == ferryv1.Status_STATUS_OK {
							s.Outcome, s.Queue, s.Offset = verify.OutcomeOK, res.Queue, res.Offset
						}
					}
					mu.Lock()
					sends = append(sends, s)
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
	return sends, filepath.Join(dir, "data")
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

// checkCrashes compares what producers were told with what survived, with
// core/verify's checker (the one definition of lost, duplicated, unexpected,
// out of order and wrong offset that ferry verify uses), reports every
// failure but loss, and returns the result. Offsets must also be dense.
func checkCrashes(t *testing.T, sends []verify.Send, stored map[int32][]*sdk.Message) *verify.Result {
	t.Helper()
	var log []verify.Stored
	for q, msgs := range stored {
		for i, m := range msgs {
			if m.Offset != int64(i) {
				t.Errorf("queue %d: message %d has offset %d (offsets must be dense)", q, i, m.Offset)
			}
			log = append(log, verify.Stored{ID: m.Id, Key: m.Key, Queue: q, Offset: m.Offset})
		}
	}
	// The checker knows a stored message's key from its send (the
	// producer and the key): the store holds the message's key alone.
	keys := make(map[string]string, len(sends))
	for _, s := range sends {
		keys[s.ID] = s.Key
	}
	for i := range log {
		if k, ok := keys[log[i].ID]; ok {
			log[i].Key = k
		}
	}
	r := verify.Check(sends, log)
	if r.Duplicated > 0 || r.Unexpected > 0 || r.OutOfOrder > 0 || r.WrongOffset > 0 || r.RefusedStored > 0 {
		t.Errorf("duplicated %d, unexpected %d, out of order %d, wrong offset %d, refused but stored %d; e.g. %v",
			r.Duplicated, r.Unexpected, r.OutOfOrder, r.WrongOffset, r.RefusedStored, r.Examples)
	}
	return r
}

// Issue 3's crash test: a broker with flush: sync is killed again and again,
// each time with the storage losing what it had not fsynced. Every
// acknowledged message survives exactly once, where its producer was told.
// The lying-disk hook's variable is set (cmd/ferry/faults_on.go): it must
// arm nothing in a node that no ferry verify started, even in this test
// build, or the crashes would lose fsynced messages.
func TestCrashSyncFlushLosesNothingAcked(t *testing.T) {
	t.Setenv("FERRY_FAULT_POWER_LOSS_LYING_DISK", "1")
	const config = `{"flush": "sync", "segment_bytes": "64KiB"}`
	sends, dir := crashLoop(t, config, 4)
	r := checkCrashes(t, sends, readStore(t, dir, config))
	if r.Acked < 100 {
		t.Fatalf("only %d messages acknowledged: the test did not load the broker", r.Acked)
	}
	t.Logf("flush sync: %d acknowledged, %d tried, %d lost", r.Acked, r.Sent, r.Lost)
	if r.Lost != 0 {
		t.Errorf("%d acknowledged messages lost with flush: sync, e.g. %v", r.Lost, r.Examples["lost"])
	}
}

// The negative control: with flush: async (acks from the page cache) the
// same crashes lose acknowledged messages, and the checker sees it.
func TestCrashAsyncFlushLosesAckedMessages(t *testing.T) {
	const config = `{"flush": "async", "flush_interval": "1h", "flush_bytes": "1GiB", "segment_bytes": "64KiB"}`
	sends, dir := crashLoop(t, config, 2)
	r := checkCrashes(t, sends, readStore(t, dir, config))
	t.Logf("flush async: %d acknowledged, %d tried, %d lost", r.Acked, r.Sent, r.Lost)
	if r.Lost == 0 {
		t.Errorf("no loss seen with flush: async and no fsync before the crash: the checker is blind")
	}
}
