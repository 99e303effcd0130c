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
	// Lost are messages acknowledged OK that the group never delivered,
	// whether the topic still holds them (Missing) or lost them too (the
	// run's result says whether the pipeline permits that).
	Lost int `json:"lost"`
	// Unexpected are messages of the run the group delivered that no
	// producer sent: a failure.
	Unexpected int `json:"unexpected"`
	// OutOfOrder counts a key's acknowledged messages the group delivered
	// for the first time after one of the same queue sent later: a
	// failure (redeliveries, which go back to the committed offset, are
	// not counted).
	OutOfOrder int `json:"out_of_order"`
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
	exe, topic, group, delivery, prefix string
	logf                                *os.File
	args                                []string // added to each member's command line (its TLS flags)
	env                                 []string // added to each member's environment (its user)
	// broker says where a new member joins: the node's broker, or on a
	// cluster the leader's (or master's) as it is then.
	broker func() string

	// op serializes what ends a member (kill, move, stop), so that two of
	// them never race on one process.
	op sync.Mutex

	mu     sync.Mutex
	at     string // the broker of the member running now
	counts map[string]int
	// first is each key's messages in each queue, in the order the group
	// first delivered them (the order checked is per key and queue, as
	// Check's: queues are consumed independently).
	first    map[string][]string
	where    map[string]string // a first delivery's queue/offset and broker
	cmd      *exec.Cmd
	done     chan struct{}
	restarts int
	exits    int  // members that ended on their own (restarted too)
	stopping bool // stop or kill is ending the member: no restart
}

func newConsumer(exe string, broker func() string, topic, group, delivery, prefix string, logf *os.File) *consumer {
	return &consumer{exe: exe, broker: broker, topic: topic, group: group, delivery: delivery, prefix: prefix, logf: logf, counts: map[string]int{}, first: map[string][]string{}, where: map[string]string{}}
}

// start runs a new member of the group, at the broker c.broker names now.
func (c *consumer) start() error {
	addr := c.broker()
	args := append([]string{"consume", "--broker", addr, "--topic", c.topic, "--group", c.group,
		"--mode", c.delivery, "--json", "--session-timeout", "3s"}, c.args...)
	cmd := exec.Command(c.exe, args...)
	cmd.Stderr = c.logf
	if c.env != nil {
		cmd.Env = append(os.Environ(), c.env...)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := startTied(cmd); err != nil {
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
			c.op.Lock()
			c.mu.Lock()
			still := c.cmd == cmd && !c.stopping // no kill, move or stop came first
			c.mu.Unlock()
			if still {
				_ = c.start()
			}
			c.op.Unlock()
		}
	}()
	c.mu.Lock()
	c.cmd, c.done, c.at = cmd, done, addr
	c.mu.Unlock()
	return nil
}

// read records each delivery line of a consumer's stdout.
func (c *consumer) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var d struct {
			ID     string `json:"id"`
			Key    string `json:"key"`
			Queue  int32  `json:"queue"`
			Offset int64  `json:"offset"`
		}
		if json.Unmarshal(sc.Bytes(), &d) != nil || !strings.HasPrefix(d.ID, c.prefix) {
			continue
		}
		c.mu.Lock()
		c.counts[d.ID]++
		if c.counts[d.ID] == 1 {
			k := fmt.Sprintf("%s\x00%d", d.Key, d.Queue)
			c.first[k] = append(c.first[k], d.ID)
			c.where[d.ID] = fmt.Sprintf("%d/%d from %s", d.Queue, d.Offset, c.at)
		}
		c.mu.Unlock()
	}
}

// kill ends the member with SIGKILL, between whatever it was doing, and
// starts a new one.
func (c *consumer) kill() error {
	c.op.Lock()
	defer c.op.Unlock()
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
	c.op.Lock()
	defer c.op.Unlock()
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

// move ends the member gracefully (SIGTERM: it commits what it settled and
// leaves the group) and starts one at the broker c.broker names now, when
// that is not where the member runs: a cluster's leader changed, and an
// application's consumer would follow it. It reports whether it moved.
func (c *consumer) move() (bool, error) {
	c.op.Lock()
	defer c.op.Unlock()
	to := c.broker()
	c.mu.Lock()
	cmd, done, at := c.cmd, c.done, c.at
	if cmd == nil || at == to || to == "" {
		c.mu.Unlock()
		return false, nil
	}
	c.stopping = true
	c.mu.Unlock()
	fmt.Fprintf(c.logf, "--- ferry verify: the consumer of group %s moves from %s to the leader %s at %s\n", c.group, at, to, time.Now().Format(time.RFC3339Nano))
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	c.mu.Lock()
	c.restarts++
	c.stopping = false
	c.mu.Unlock()
	return true, c.start()
}

// follow moves the member to the leader whenever it changes, until ctx
// ends (a cluster run).
func (c *consumer) follow(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.move(); err != nil {
				fmt.Fprintf(c.logf, "--- ferry verify: the consumer of group %s could not move: %v\n", c.group, err)
			}
		}
	}
}

// result compares the deliveries with what the topic holds (stored) and
// with what the producers sent (sends).
func (c *consumer) result(stored []Stored, sends []Send) *GroupResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := &GroupResult{Group: c.group, Delivery: c.delivery, Restarts: c.restarts + c.exits}
	sent := make(map[string]*Send, len(sends))
	for i := range sends {
		sent[sends[i].ID] = &sends[i]
		if s := &sends[i]; s.Outcome == OutcomeOK && c.counts[s.ID] == 0 {
			g.Lost++
		}
	}
	for _, ids := range c.first {
		// A key's acknowledged messages, in the order first delivered:
		// their sequence numbers must rise.
		last, lastID := int64(-1), ""
		for _, id := range ids {
			s := sent[id]
			if s == nil || s.Outcome != OutcomeOK {
				continue
			}
			if s.Seq < last {
				g.OutOfOrder++
				if len(g.Examples) < maxExamples {
					g.Examples = append(g.Examples, fmt.Sprintf("out of order %s (at %s) after seq %d (at %s)", id, c.where[id], last, c.where[lastID]))
				}
				continue
			}
			last, lastID = s.Seq, id
		}
	}
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
		if sent[id] == nil {
			g.Unexpected++
			if len(g.Examples) < maxExamples {
				g.Examples = append(g.Examples, "delivered, never sent "+id)
			}
		}
		if !held[id] {
			g.NotStored++
			if len(g.Examples) < maxExamples {
				g.Examples = append(g.Examples, "delivered, not stored "+id)
			}
		}
	}
	return g
}
