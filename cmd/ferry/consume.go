package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/client"
)

// consumeOptions are the flags of `ferry consume`.
type consumeOptions struct {
	broker, topic, group, member, mode string
	onCorrupt                          string
	count                              int
	idle, delay, sessionTimeout        time.Duration
	json, body                         bool
	concurrency                        int
	startLatest                        bool
	ephemeral                          bool
	tls                                tlsFlags
}

func init() { rootCmd.AddCommand(newConsumeCmd()) }

func newConsumeCmd() *cobra.Command {
	var o consumeOptions
	cmd := &cobra.Command{
		Use:   "consume [--broker ADDR] --topic T --group G [--body] [--json]",
		Short: "Consume a topic as a member of a consumer group and print each message",
		Long: `Consume joins consumer group G on topic T at the broker ADDR (its grpc
transport) and prints one line per message delivered to it, at least once:
a message's offset is committed only after it was printed. It shares the
topic's queues with the group's other members and takes part in its retries
and dead-lettering like any consumer.

  --mode push   the consumer fetches ahead and calls the handler (default)
  --mode pull   long-poll batches, acknowledge each message explicitly

It runs until SIGINT/SIGTERM, or until --count messages were printed, or
until no message came for --idle. Messages fetched but not printed then are
left for the group (delivered again). The summary goes to stderr.

Each line is
  TOPIC/QUEUE@OFFSET id=ID attempt=N key="K" SIZEB
and with --body the body follows: body="…" (quoted as Go does, so that a
line is one message) when it is valid UTF-8, else body_base64=… .

With --json each line is one object:
  {"id":…,"topic":…,"queue":…,"offset":…,"attempt":…,"key":…,
   "headers":{…},"body":"…"}
where id, topic, queue and offset name the original message (the same on
every attempt), attempt counts its deliveries to the group, and the body is
"body" (text) when it is valid UTF-8, else "body_base64".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			b, err := brokerOf(cmd, o.broker)
			if err != nil {
				return err
			}
			o.broker = b
			n, err := consume(ctx, o, cmd.OutOrStdout())
			fmt.Fprintf(cmd.ErrOrStderr(), "ferry consume: %d message(s) from %s, group %s\n", n, o.topic, o.group)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.broker, "broker", "", brokerUsage)
	o.tls.add(f)
	f.StringVar(&o.topic, "topic", "", "topic to consume (required)")
	f.StringVar(&o.group, "group", "", "consumer group (required, unless --ephemeral)")
	f.BoolVar(&o.ephemeral, "ephemeral", false, "join the group as ephemeral: the broker deletes it (offsets, retry and dead-letter topics) once its last member has been gone for the node's ephemeral_group_ttl; without --group, a group of its own")
	f.StringVar(&o.member, "member", "", "this member's id in the group (default: host-pid-random)")
	f.StringVar(&o.mode, "mode", "push", "delivery: push or pull")
	f.IntVar(&o.count, "count", 0, "exit after this many messages (0: no limit)")
	f.DurationVar(&o.idle, "idle", 0, "exit when no message came for this long (0: never)")
	f.BoolVar(&o.json, "json", false, "print one JSON object per message (with its headers and body)")
	f.BoolVar(&o.body, "body", false, "print each message's body after its metadata (text, or base64 if not UTF-8)")
	f.IntVar(&o.concurrency, "concurrency", 1, "messages handled at once")
	f.DurationVar(&o.delay, "delay", 0, "pretend each message takes this long to process (before it is printed)")
	f.DurationVar(&o.sessionTimeout, "session-timeout", client.DefaultSessionTimeout, "how long the broker keeps this member in the group after its last heartbeat")
	f.BoolVar(&o.startLatest, "latest", false, "a group that never committed starts at the end of the topic (default: its beginning)")
	f.StringVar(&o.onCorrupt, "on-corrupt", "stop", "a message whose stored record is damaged: stop (that queue stops there, the others go on), skip (logged, committed past) or dlq (skip after a placeholder in the group's dead-letter queue)")
	_ = cmd.MarkFlagRequired("topic")
	return cmd
}

// consumeAction is what ferry consume does with a message it is given:
// print it, or (test builds' faults, consume_faults_on.go) skip or hold it.
type consumeAction int

const (
	consumePrint consumeAction = iota
	consumeSkip
	consumeHold
)

// consumedLine is what --json prints per message. Exactly one of Body and
// BodyBase64 is set for a non-empty body: Body when it is valid UTF-8.
type consumedLine struct {
	ID         string            `json:"id"`
	Topic      string            `json:"topic"`
	Queue      int32             `json:"queue"`
	Offset     int64             `json:"offset"`
	Attempt    int               `json:"attempt"`
	Key        string            `json:"key"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       string            `json:"body,omitempty"`
	BodyBase64 string            `json:"body_base64,omitempty"`
}

// newConsumedLine is d as --json prints it.
func newConsumedLine(d *client.Delivery) consumedLine {
	l := consumedLine{ID: d.ID, Topic: d.Topic, Queue: d.Queue, Offset: d.Offset, Attempt: d.Attempt, Key: d.Message.Key, Headers: d.Message.Headers}
	if b := d.Message.Body; utf8.Valid(b) {
		l.Body = string(b)
	} else {
		l.BodyBase64 = base64.StdEncoding.EncodeToString(b)
	}
	return l
}

// bodyField is a body as a plain line with --body ends: body="…" (Go
// quoting) for valid UTF-8, else body_base64=….
func bodyField(b []byte) string {
	if utf8.Valid(b) {
		return "body=" + strconv.Quote(string(b))
	}
	return "body_base64=" + base64.StdEncoding.EncodeToString(b)
}

// consume runs `ferry consume` and returns how many messages it printed.
func consume(ctx context.Context, o consumeOptions, out io.Writer) (int64, error) {
	if o.mode != "push" && o.mode != "pull" {
		return 0, &exitError{code: 2, msg: fmt.Sprintf("--mode must be push or pull, got %q", o.mode)}
	}
	onCorrupt, err := client.ParseCorruptPolicy(o.onCorrupt)
	if err != nil || o.onCorrupt == "" {
		return 0, &exitError{code: 2, msg: fmt.Sprintf("--on-corrupt must be stop, skip or dlq, got %q", o.onCorrupt)}
	}
	if o.group == "" && !o.ephemeral {
		return 0, &exitError{code: 2, msg: "--group is required (or --ephemeral, for a group of its own)"}
	}
	if o.count < 0 || o.idle < 0 || o.concurrency < 1 || o.sessionTimeout <= 0 {
		return 0, &exitError{code: 2, msg: "--count and --idle must not be negative, --concurrency must be at least 1, --session-timeout positive"}
	}
	log := quietSlog(hclog.Warn)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	copts, err := o.tls.options()
	if err != nil {
		cancel()
		return 0, err
	}
	c, err := client.Dial(dctx, o.broker, append(copts, client.WithLogger(log))...)
	cancel()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	opts := client.ConsumerOptions{Topic: o.topic, Group: o.group, Member: o.member, Concurrency: o.concurrency, SessionTimeout: o.sessionTimeout,
		OnCorrupt: onCorrupt, Ephemeral: o.ephemeral}
	if o.startLatest {
		opts.StartAt = client.StartCommittedOrLatest
	}
	cons, err := c.NewConsumer(opts)
	if err != nil {
		return 0, err
	}
	if o.ephemeral && o.group == "" {
		fmt.Fprintf(os.Stderr, "ephemeral group %s\n", cons.Group())
	}

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu      sync.Mutex
		printed atomic.Int64
		last    atomic.Int64 // unix nanos of the last message
		// given counts the messages handed to handle; held is one the
		// test builds' hold fault prints after the next (under mu).
		given int64
		held  func() error
	)
	last.Store(time.Now().UnixNano())
	enc := json.NewEncoder(out)
	// handle prints d once it is "processed"; false when --count is reached
	// already (d is then left for the group).
	handle := func(ctx context.Context, d *client.Delivery) (bool, error) {
		if o.delay > 0 {
			t := time.NewTimer(o.delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return false, ctx.Err()
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if o.count > 0 && printed.Load() >= int64(o.count) {
			return false, nil
		}
		emit := func() error {
			if o.json {
				return enc.Encode(newConsumedLine(d))
			}
			line := fmt.Sprintf("%s/%d@%d id=%s attempt=%d key=%q %dB", d.Topic, d.Queue, d.Offset, d.ID, d.Attempt, d.Message.Key, len(d.Message.Body))
			if o.body {
				line += " " + bodyField(d.Message.Body)
			}
			_, err := fmt.Fprintln(out, line)
			return err
		}
		given++
		switch consumeFault(given) {
		case consumeSkip:
			return true, nil
		case consumeHold:
			held = emit
			return true, nil
		}
		err := emit()
		if err == nil && held != nil {
			err, held = held(), nil
		}
		if err != nil {
			return false, err
		}
		last.Store(time.Now().UnixNano())
		if n := printed.Add(1); o.count > 0 && n >= int64(o.count) {
			stop()
		}
		return true, nil
	}
	if o.idle > 0 {
		go func() {
			t := time.NewTicker(min(o.idle/4, 100*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-t.C:
					if time.Since(time.Unix(0, last.Load())) >= o.idle {
						stop()
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	if o.mode == "push" {
		errOut := errors.New("writing the output failed")
		err := cons.Consume(ctx, func(ctx context.Context, d *client.Delivery) error {
			ok, err := handle(ctx, d)
			switch {
			case err != nil && ctx.Err() == nil:
				stop()
				return fmt.Errorf("%w: %v", errOut, err)
			case !ok:
				<-ctx.Done() // --count reached: leave d for the group
				return ctx.Err()
			}
			return nil
		})
		return printed.Load(), err
	}

	if err := cons.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 0, err
	}
	defer cons.Close()
	for ctx.Err() == nil {
		ds, err := cons.Fetch(ctx, 0)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			log.Warn("ferry consume: fetch failed; retrying", "error", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for _, d := range ds {
			ok, err := handle(ctx, d)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return printed.Load(), err
			}
			if !ok {
				break
			}
			d.Ack()
		}
	}
	return printed.Load(), cons.Close()
}
