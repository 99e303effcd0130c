package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/config"
)

// DefaultExecTimeout bounds one run of an exec sink's command.
const DefaultExecTimeout = 30 * time.Second

// maxStderr is how much of a failed command's stderr its error keeps.
const maxStderr = 512

// execSink runs a command per message: the body on stdin, the metadata in
// the environment (FERRY_ID, FERRY_TOPIC, FERRY_QUEUE, FERRY_OFFSET,
// FERRY_ATTEMPT, FERRY_KEY, FERRY_GROUP, FERRY_FLOW and FERRY_DATA_DIR, the
// node's data directory, added to the node's own environment). Exit status 0 acknowledges; any other status, a signal or
// the timeout fails the attempt (retried), with the end of stderr in the
// error. Its stdout is discarded.
type execSink struct {
	name    string // as configured, for errors
	path    string
	args    []string
	timeout time.Duration
	flow    string
	dataDir string
}

func newExecSink(cfg config.Sink, o Options) (Sink, error) {
	path, err := exec.LookPath(cfg.Command)
	if err != nil {
		return nil, fmt.Errorf("exec sink: %w", err)
	}
	t := cfg.Timeout
	if t <= 0 {
		t = DefaultExecTimeout
	}
	return &execSink{name: cfg.Command, path: path, args: cfg.Args, timeout: t, flow: o.Flow, dataDir: o.DataDir}, nil
}

func (s *execSink) Deliver(ctx context.Context, d *client.Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.path, s.args...)
	cmd.Stdin = bytes.NewReader(d.Message.Body)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(),
		"FERRY_ID="+d.ID, "FERRY_TOPIC="+d.Topic, "FERRY_QUEUE="+strconv.Itoa(int(d.Queue)),
		"FERRY_OFFSET="+strconv.FormatInt(d.Offset, 10), "FERRY_ATTEMPT="+strconv.Itoa(d.Attempt),
		"FERRY_KEY="+d.Message.Key, "FERRY_GROUP="+d.Group, "FERRY_FLOW="+s.flow, "FERRY_DATA_DIR="+s.dataDir)
	cmd.WaitDelay = time.Second
	killGroup(cmd)
	err := cmd.Run()
	if err == nil {
		return nil
	}
	tail := strings.TrimSpace(stderr.String())
	if tail != "" {
		tail = ": " + tail
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return fmt.Errorf("%s timed out after %s%s", s.name, s.timeout, tail)
	case errors.As(err, &ee):
		return fmt.Errorf("%s: %v%s", s.name, ee.ProcessState, tail)
	}
	return fmt.Errorf("%s: %w%s", s.name, err, tail)
}

func (s *execSink) Close() error { return nil }

// tailBuffer keeps the last maxStderr bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > maxStderr {
		t.b = t.b[len(t.b)-maxStderr:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
