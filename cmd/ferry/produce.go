package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/logging"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

func init() { rootCmd.AddCommand(newProduceCmd()) }

// produceFlags are the flags of `ferry produce`.
type produceFlags struct {
	brokers        []string
	tls            tlsFlags
	topic          string
	mode           string
	count          int
	size           int
	file           string
	key            string
	id             string
	json           bool
	retries        int
	timeout        time.Duration
	requireDurable bool
	inflight       int
	linger         time.Duration
}

// newProduceCmd returns `ferry produce`.
func newProduceCmd() *cobra.Command {
	var f produceFlags
	cmd := &cobra.Command{
		Use:   "produce [--broker ADDR] --topic T [--mode sync|async|oneway] [--count N --size BYTES | --file F | < lines]",
		Short: "Send messages to a broker: generated ones, the lines of a file, or the lines of stdin",
		Long: `Produce sends messages to a topic through the grpc transport of the brokers
given with --broker (repeat it, or separate addresses with commas, for a
cluster; default: $FERRY_BROKER, else 127.0.0.1:7070). The messages are --count generated ones of --size random bytes, or
one per line of --file, or one per line of stdin.

--mode sync waits for each message's ack, async keeps up to --inflight
messages in flight in batches, oneway sends without waiting for any ack (and
can lose messages unnoticed). With --key every message has that key, so all
go to one queue, in order.

--id ID gives the first message the id ID and the n-th the id ID-n (in
input order), instead of ids the producer makes up: running the same command
again after an unknown outcome (a timeout, a broken connection) stores each
message once, as long as the broker still holds its id in its
de-duplication window.

With --json each message's outcome is one JSON object on stdout, in the
order the acks arrive:
  {"id","status","topic","queue","offset","error"}
status is OK, FLUSH_TIMEOUT, REPLICA_TIMEOUT, REPLICA_NOT_AVAILABLE, SENT
(oneway: sent, not acknowledged) or ERROR. A summary with the rate ends the
run, on stderr when --json is set. The exit status is 1 if any message
failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			bs, err := brokersOf(cmd, f.brokers)
			if err != nil {
				return err
			}
			f.brokers = bs
			return runProduce(ctx, f, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&f.brokers, "broker", nil, brokerUsage+"; repeat or comma-separate for a cluster")
	f.tls.add(fl)
	fl.StringVar(&f.topic, "topic", "", "topic to send to")
	fl.StringVar(&f.mode, "mode", "sync", "send mode: sync, async or oneway")
	fl.IntVar(&f.count, "count", 0, "send this many generated messages (with --size)")
	fl.IntVar(&f.size, "size", 1024, "body size of generated messages, in bytes")
	fl.StringVar(&f.file, "file", "", "send one message per line of this file")
	fl.StringVar(&f.key, "key", "", "key of every message (one queue, in order)")
	fl.StringVar(&f.id, "id", "", "id of the first message; the n-th gets ID-n: sending again stores each once")
	fl.BoolVar(&f.json, "json", false, "print one JSON object per message on stdout")
	fl.IntVar(&f.retries, "retries", client.DefaultRetries, "retries of a failed send (0: none)")
	fl.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "bound of each send attempt")
	fl.BoolVar(&f.requireDurable, "require-durable", false, "count a status weaker than OK (FLUSH_TIMEOUT, ...) as a failure")
	fl.IntVar(&f.inflight, "inflight", client.DefaultAsyncInflight, "async: messages in flight at most")
	fl.DurationVar(&f.linger, "linger", client.DefaultLinger, "async: how long a batch waits for more messages")
	_ = cmd.MarkFlagRequired("topic")
	return cmd
}

// produceLine is the JSON object printed per message with --json.
type produceLine struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Topic  string `json:"topic"`
	Queue  int32  `json:"queue"`
	Offset int64  `json:"offset"`
	Error  string `json:"error"`
}

// produceStats gathers the outcomes of a run.
type produceStats struct {
	mu        sync.Mutex
	out       io.Writer
	json      bool
	ok, weak  int
	failed    int
	sent      int // oneway
	bytes     int64
	latencies []time.Duration
	firstErr  error
}

func (s *produceStats) record(r client.Result, err error, size int, latency time.Duration, oneway bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := produceLine{ID: r.ID, Topic: r.Topic, Queue: r.Queue, Offset: r.Offset, Status: client.StatusName(r.Status)}
	switch {
	case err != nil:
		s.failed++
		line.Status, line.Error = "ERROR", err.Error()
		if s.firstErr == nil {
			s.firstErr = err
		}
		if !s.json && r.ID == "" {
			fmt.Fprintf(os.Stderr, "ferry produce: %v\n", err) // never sent: no id
		} else if !s.json {
			fmt.Fprintf(os.Stderr, "ferry produce: message %s: %v\n", r.ID, err)
		}
	case oneway:
		s.sent++
		line.Status = "SENT"
	case r.Status == ferryv1.Status_STATUS_OK:
		s.ok++
	default:
		s.weak++
	}
	if err == nil {
		s.bytes += int64(size)
		if !oneway {
			s.latencies = append(s.latencies, latency)
		}
	}
	if s.json {
		b, _ := json.Marshal(line)
		s.out.Write(append(b, '\n'))
	}
}

func (s *produceStats) summary(w io.Writer, mode, topic string, elapsed time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.ok + s.weak + s.sent
	secs := max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(w, "produced %d messages to %s in %s (%s): %.0f msgs/s, %.2f MiB/s\n",
		n, topic, elapsed.Round(time.Millisecond), mode, float64(n)/secs, float64(s.bytes)/secs/(1<<20))
	switch mode {
	case "oneway":
		fmt.Fprintf(w, "  %d sent without acks (oneway: not known to be stored), %d failed\n", s.sent, s.failed)
	default:
		fmt.Fprintf(w, "  %d OK, %d with a weaker status, %d failed\n", s.ok, s.weak, s.failed)
	}
	if len(s.latencies) > 0 {
		slices.Sort(s.latencies)
		q := func(p float64) time.Duration { return s.latencies[int(p*float64(len(s.latencies)-1))] }
		fmt.Fprintf(w, "  latency p50 %s, p99 %s, max %s\n", round(q(0.5)), round(q(0.99)), round(s.latencies[len(s.latencies)-1]))
	}
}

func round(d time.Duration) time.Duration {
	if d > time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func runProduce(ctx context.Context, f produceFlags, stdin io.Reader, stdout, stderr io.Writer) error {
	if f.mode != "sync" && f.mode != "async" && f.mode != "oneway" {
		return &exitError{code: 1, msg: fmt.Sprintf("--mode must be sync, async or oneway, got %q", f.mode)}
	}
	if f.count < 0 || f.size < 0 {
		return &exitError{code: 1, msg: "--count and --size must not be negative"}
	}
	if f.count > 0 && f.file != "" {
		return &exitError{code: 1, msg: "--count and --file exclude each other"}
	}
	var brokers []string
	for _, b := range f.brokers {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	// Lines up to the message size limit are sent; a longer one is a
	// failed message naming its line, and the lines after it are sent.
	var lines *lineReader
	switch {
	case f.count > 0:
	case f.file != "":
		fh, err := os.Open(f.file)
		if err != nil {
			return &exitError{code: 1, msg: err.Error()}
		}
		defer fh.Close()
		lines = newLineReader(fh, client.DefaultMaxMessageBytes)
	default:
		lines = newLineReader(stdin, client.DefaultMaxMessageBytes)
	}

	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	logger := logging.Slog(hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: hclog.Error, Output: stderr}))
	copts, err := f.tls.options()
	if err != nil {
		return err
	}
	c, err := client.DialCluster(dctx, brokers, append(copts, client.WithLogger(logger))...)
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("cannot reach %s: %v", strings.Join(brokers, ","), err)}
	}
	defer c.Close()
	retries := f.retries
	if retries == 0 {
		retries = client.NoRetries
	}
	opts := client.ProducerOptions{Retries: retries, Timeout: f.timeout, RequireDurable: f.requireDurable, MaxInflight: f.inflight, Linger: f.linger}
	if f.key != "" {
		opts.Selector = client.KeyHash()
	}
	p := c.NewProducer(opts)
	// Check the topic once, so that a typo is one clear error. (In a
	// cluster the topic may live on brokers other than the primary: there
	// the first send reports it.)
	if len(brokers) == 1 {
		if err := checkTopic(ctx, c, f.topic, f.timeout); err != nil {
			return &exitError{code: 1, msg: err.Error()}
		}
	}

	stats := &produceStats{out: stdout, json: f.json}
	body := make([]byte, f.size)
	_, _ = rand.Read(body)
	var sendErr error
	next := func() ([]byte, bool) {
		if lines == nil {
			if f.count == 0 {
				return nil, false
			}
			f.count--
			return body, true
		}
		for {
			b, err := lines.next()
			switch {
			case err == nil:
				return b, true
			case errors.Is(err, errLineTooLong):
				stats.record(client.Result{Topic: f.topic, Queue: -1, Offset: -1}, err, 0, 0, false)
			case errors.Is(err, io.EOF):
				return nil, false
			default:
				sendErr = fmt.Errorf("reading input: %w", err)
				return nil, false
			}
		}
	}

	start := time.Now()
	for n := 1; ctx.Err() == nil; n++ {
		b, ok := next()
		if !ok {
			break
		}
		m := client.Message{Topic: f.topic, Key: f.key, Body: b}
		if f.id != "" {
			m.ID = f.id
			if n > 1 {
				m.ID = fmt.Sprintf("%s-%d", f.id, n)
			}
		}
		sent := time.Now()
		switch f.mode {
		case "sync":
			r, err := p.SendSync(ctx, m)
			stats.record(r, err, len(b), time.Since(sent), false)
		case "oneway":
			r, err := p.SendOneway(ctx, m)
			stats.record(r, err, len(b), 0, true)
		case "async":
			err := p.SendAsync(ctx, m, func(r client.Result, err error) {
				stats.record(r, err, len(b), time.Since(sent), false)
			})
			if err != nil {
				stats.record(client.Result{Topic: f.topic, Queue: -1, Offset: -1}, err, len(b), 0, false)
			}
		}
	}
	cctx, ccancel := context.WithTimeout(context.Background(), f.timeout*time.Duration(max(retries, 0)+2))
	defer ccancel()
	if err := p.Close(cctx); err != nil && sendErr == nil {
		sendErr = err
	}
	elapsed := time.Since(start)
	sw := stdout
	if f.json {
		sw = stderr
	}
	stats.summary(sw, f.mode, f.topic, elapsed)
	if sendErr != nil {
		return &exitError{code: 1, msg: sendErr.Error()}
	}
	if stats.failed > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d message(s) failed; the first: %v", stats.failed, stats.firstErr)}
	}
	if ctx.Err() != nil {
		return &exitError{code: 1, msg: "interrupted"}
	}
	return nil
}

// checkTopic reports an unknown topic before anything is sent.
func checkTopic(ctx context.Context, c *client.Client, topic string, timeout time.Duration) error {
	if topic == "" {
		return errors.New("--topic must not be empty")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	md, err := c.Metadata(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range md.Topics {
		if t.Name == topic {
			return nil
		}
		names = append(names, t.Name)
	}
	// Not listed: ask as the producer will, so that a node that
	// auto-creates topics creates it. A bad name is the name rule's error;
	// not found, or a topic this user may not see, is the error below.
	if _, err := c.ProducerTopic(ctx, topic); err == nil || errors.Is(err, sdk.ErrInvalidArgument) {
		return err
	}
	slices.Sort(names)
	return fmt.Errorf("topic %q: %v: the broker has %s", topic, sdk.ErrNotFound, strings.Join(names, ", "))
}
