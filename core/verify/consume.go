package verify

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// GroupResult is what a consumer group delivered, against what the topic
// holds at the end.
type GroupResult struct {
	Group    string `json:"group"`
	Delivery string `json:"delivery"`
	// Delivered counts distinct messages of the run the group delivered;
	// Redelivered the extra deliveries (at least once permits them: a
	// consumer killed between processing and commit gets its messages
	// again).
	Delivered   int `json:"delivered"`
	Redelivered int `json:"redelivered"`
	// Missing are stored messages the group never delivered before the
	// drain's deadline: a failure.
	Missing int `json:"missing"`
	// NotStored are messages the group delivered that the topic does not
	// hold at the end: possible only when a power loss dropped them after
	// they were read (flush async); otherwise a failure.
	NotStored int      `json:"delivered_not_stored"`
	Restarts  int      `json:"consumer_restarts"`
	Examples  []string `json:"examples,omitempty"`
}

// consumer is a `ferry consume` process of one group, restarted when a fault
// kills it; it records every delivery it prints.
type consumer struct {
	exe, addr, topic, group, delivery, prefix string
	logf                                      *os.File

	mu       sync.Mutex
	counts   map[string]int
	cmd      *exec.Cmd
	done     chan struct{}
	restarts int
	exits    int  // members that ended on their own (restarted too)
	stopping bool // stop or kill is ending the member: no restart
}

func newConsumer(exe, addr, topic, group, delivery, prefix string, logf *os.File) *consumer {
	return &consumer{exe: exe, addr: addr, topic: topic, group: group, delivery: delivery, prefix: prefix, logf: logf, counts: map[string]int{}}
}

// start runs a new member of the group.
func (c *consumer) start() error {
	cmd := exec.Command(c.exe, "consume", "--broker", c.addr, "--topic", c.topic, "--group", c.group,
		"--mode", c.delivery, "--json", "--session-timeout", "3s")
	cmd.Stderr = c.logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		c.read(out)
		err := cmd.Wait()
		close(done)
		c.mu.Lock()
		again := !c.stopping && c.cmd == cmd
		if again {
			c.exits++
		}
		c.mu.Unlock()
		if again {
			// A member that gave up (its broker was gone too long) is
			// replaced, as an application's supervisor would.
			fmt.Fprintf(c.logf, "--- ferry verify: the consumer of group %s exited (%v); starting another\n", c.group, err)
			time.Sleep(200 * time.Millisecond)
			_ = c.start()
		}
	}()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	return nil
}

// read records each delivery line of a consumer's stdout.
func (c *consumer) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var d struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &d) != nil || !strings.HasPrefix(d.ID, c.prefix) {
			continue
		}
		c.mu.Lock()
		c.counts[d.ID]++
		c.mu.Unlock()
	}
}

// kill ends the member with SIGKILL, between whatever it was doing, and
// starts a new one.
func (c *consumer) kill() error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.stopping = true
	c.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("no consumer runs")
	}
	fmt.Fprintf(c.logf, "--- ferry verify: kill -9 of the consumer of group %s (pid %d) at %s\n", c.group, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano))
	_ = cmd.Process.Kill()
	<-done
	c.mu.Lock()
	c.restarts++
	c.stopping = false
	c.mu.Unlock()
	return c.start()
}

// drain waits until the group delivered every id of stored, or the
// deadline passed, then stops the member.
func (c *consumer) drain(ctx context.Context, stored []Stored, deadline time.Duration) {
	until := time.Now().Add(deadline)
	for time.Now().Before(until) && ctx.Err() == nil {
		c.mu.Lock()
		all := true
		for _, m := range stored {
			if c.counts[m.ID] == 0 {
				all = false
				break
			}
		}
		c.mu.Unlock()
		if all {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.stop()
}

func (c *consumer) stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.cmd, c.stopping = nil, true
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// result compares the deliveries with what the topic holds.
func (c *consumer) result(stored []Stored) *GroupResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := &GroupResult{Group: c.group, Delivery: c.delivery, Restarts: c.restarts + c.exits}
	held := make(map[string]bool, len(stored))
	for _, m := range stored {
		held[m.ID] = true
		if c.counts[m.ID] == 0 {
			g.Missing++
			if len(g.Examples) < maxExamples {
				g.Examples = append(g.Examples, "missing "+m.ID)
			}
		}
	}
	for id, n := range c.counts {
		g.Delivered++
		g.Redelivered += n - 1
		if !held[id] {
			g.NotStored++
			if len(g.Examples) < maxExamples {
				g.Examples = append(g.Examples, "delivered, not stored "+id)
			}
		}
	}
	return g
}
