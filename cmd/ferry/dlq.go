package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/sdk"
)

func init() { rootCmd.AddCommand(newDLQCmd()) }

// dlqFlags are the flags every dlq subcommand has.
type dlqFlags struct {
	broker, group string
	json          bool
	tls           tlsFlags
}

func (f *dlqFlags) add(cmd *cobra.Command, withJSON bool) {
	cmd.Flags().StringVar(&f.broker, "broker", "", brokerUsage)
	f.tls.add(cmd.Flags())
	cmd.Flags().StringVar(&f.group, "group", "", "consumer group whose dead-letter queue to work on (required)")
	if withJSON {
		cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	}
	_ = cmd.MarkFlagRequired("group")
}

// dial connects for one dlq command, bounded by a minute.
func (f *dlqFlags) dial(cmd *cobra.Command) (context.Context, *client.Client, func(), error) {
	return dialOne(cmd, f.broker, f.tls)
}

// dialOne connects to the broker of a --broker flag for one short command,
// bounded by a minute and by SIGINT/SIGTERM; done closes it all.
func dialOne(cmd *cobra.Command, flagBroker string, tls tlsFlags) (ctx context.Context, c *client.Client, done func(), err error) {
	broker, err := brokerOf(cmd, flagBroker)
	if err != nil {
		return nil, nil, nil, err
	}
	copts, err := tls.options()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	c, err = client.Dial(ctx, broker, append(copts, client.WithLogger(quietSlog(hclog.Error)))...)
	if err != nil {
		cancel()
		stop()
		return nil, nil, nil, err
	}
	return ctx, c, func() { c.Close(); cancel(); stop() }, nil
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, re-drive and purge a consumer group's dead letters",
		Long: `A consumer group's dead-letter queue holds the messages it gave up on: after
their last attempt (the retry stage's max_attempts, 16 by default) or at once
for a permanent error. Each keeps its body, key and headers, and says why
(reason, last error), how often it was tried and where it came from.

The queue is the one queue of the topic %DLQ%<group>. It is never consumed;
these commands read it through a cursor (the offset committed for the group
named %DLQ%<group> itself): the live dead letters are those from the cursor
to the end. purge moves the cursor forward. redrive sends copies of the
messages back to the group, through its retry topic (due at once, attempt 1
again, only this group sees them), then moves the cursor past them; running
it again after an interruption re-drives nothing twice. Messages behind the
cursor stay stored until retention removes them, and show still prints them.`,
	}
	cmd.AddCommand(newDLQListCmd(), newDLQShowCmd(), newDLQRedriveCmd(), newDLQPurgeCmd())
	return cmd
}

func newDLQListCmd() *cobra.Command {
	var f dlqFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "list --group G",
		Short: "List a group's live dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := f.dial(cmd)
			if err != nil {
				return err
			}
			defer done()
			dls, st, err := c.DeadLetters(ctx, f.group, limit)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if f.json {
				return writeJSON(out, dlqListJSON{Group: f.group, Depth: st.Depth(), Start: st.Start, End: st.End, Cursor: st.Cursor, DeadLetters: jsonLetters(dls, st)})
			}
			printDLQList(out, f.group, st, dls)
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many (0: all)")
	return cmd
}

func printDLQList(w io.Writer, group string, st client.DLQState, dls []client.DeadLetter) {
	gone := st.Cursor - st.Start
	switch {
	case st.Depth() == 0 && st.End == 0:
		fmt.Fprintf(w, "group %s has no dead letters\n", group)
		return
	case st.Depth() == 0:
		fmt.Fprintf(w, "group %s has no live dead letters (%d stored, all purged or re-driven)\n", group, st.End-st.Start)
		return
	}
	fmt.Fprintf(w, "group %s: %d dead letter(s), DLQ offsets %d..%d", group, st.Depth(), st.Cursor, st.End-1)
	if gone > 0 {
		fmt.Fprintf(w, " (%d before them purged or re-driven)", gone)
	}
	fmt.Fprintln(w)
	if int64(len(dls)) < st.Depth() {
		fmt.Fprintf(w, "showing the first %d (--limit)\n", len(dls))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OFFSET\tORIGINAL\tID\tATTEMPTS\tLAST FAILURE\tREASON: LAST ERROR")
	for _, dl := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", dl.DLQOffset, origin(dl), dl.ID, dl.Attempts, when(dl.LastFailure),
			oneLine(dl.Reason+": "+dl.LastError, 100))
	}
	tw.Flush()
}

func newDLQShowCmd() *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:   "show --group G OFFSET...",
		Short: "Show dead letters in full: headers, history and body",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var offsets []int64
			for _, a := range args {
				n, err := strconv.ParseInt(a, 10, 64)
				if err != nil || n < 0 {
					return &exitError{code: 2, msg: fmt.Sprintf("OFFSET must be a DLQ offset as dlq list shows it, got %q", a)}
				}
				offsets = append(offsets, n)
			}
			ctx, c, done, err := f.dial(cmd)
			if err != nil {
				return err
			}
			defer done()
			st, err := c.DLQ(ctx, f.group)
			if err != nil {
				return err
			}
			var dls []client.DeadLetter
			for _, off := range offsets {
				dl, err := c.DeadLetterAt(ctx, f.group, off)
				if err != nil {
					return err
				}
				dls = append(dls, dl)
			}
			out := cmd.OutOrStdout()
			if f.json {
				return writeJSON(out, jsonLetters(dls, st))
			}
			for i, dl := range dls {
				if i > 0 {
					fmt.Fprintln(out)
				}
				printDeadLetter(out, f.group, st, dl)
			}
			return nil
		},
	}
	f.add(cmd, true)
	return cmd
}

func printDeadLetter(w io.Writer, group string, st client.DLQState, dl client.DeadLetter) {
	m := dl.Message
	status := "live"
	if dl.DLQOffset < st.Cursor {
		status = "purged or re-driven"
	}
	fmt.Fprintf(w, "dead letter %d of group %s (%s)\n", dl.DLQOffset, group, status)
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s:\t%s\n", k, v) }
	row("id", dl.ID)
	row("original", origin(dl))
	row("key", strconv.Quote(m.Key))
	row("reason", dl.Reason)
	row("last error", dl.LastError)
	row("attempts", strconv.Itoa(dl.Attempts))
	row("first failure", when(dl.FirstFailure))
	row("last failure", when(dl.LastFailure))
	if m.BornUnixNano > 0 {
		row("produced", when(time.Unix(0, m.BornUnixNano)))
	}
	tw.Flush()
	var keys []string
	for k := range m.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintln(w, "  headers:")
	for _, k := range keys {
		fmt.Fprintf(w, "    %s: %s\n", k, m.Headers[k])
	}
	fmt.Fprintf(w, "  body (%d bytes):\n", len(m.Body))
	if utf8.Valid(m.Body) {
		for _, line := range strings.Split(strings.TrimRight(string(m.Body), "\n"), "\n") {
			fmt.Fprintf(w, "    %s\n", line)
		}
		return
	}
	dump := m.Body
	if len(dump) > 256 {
		dump = dump[:256]
	}
	for _, line := range strings.Split(strings.TrimRight(hex.Dump(dump), "\n"), "\n") {
		fmt.Fprintf(w, "    %s\n", line)
	}
	if len(dump) < len(m.Body) {
		fmt.Fprintf(w, "    … %d more bytes\n", len(m.Body)-len(dump))
	}
}

func newDLQRedriveCmd() *cobra.Command {
	var f dlqFlags
	var count int
	cmd := &cobra.Command{
		Use:   "redrive --group G [--count N]",
		Short: "Send dead letters back to their group for another round of attempts",
		Long: `Redrive sends the group's live dead letters (all, or the oldest --count)
back to the group: each goes to the group's retry topic, due at once, on
attempt 1 with a full set of retries, keeping its id, key, body, headers and
failure history. Then the DLQ cursor moves past it. A running member of the
group gets it within its next fetch; if none runs, it waits for one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 0 {
				return &exitError{code: 2, msg: "--count must not be negative"}
			}
			ctx, c, done, err := f.dial(cmd)
			if err != nil {
				return err
			}
			defer done()
			sent, err := c.RedriveDeadLetters(ctx, f.group, count)
			out := cmd.OutOrStdout()
			if len(sent) > 0 {
				fmt.Fprintf(out, "re-drove %d dead letter(s) of group %s (DLQ offsets %d..%d) to the group's retry topic %s\n",
					len(sent), f.group, sent[0].DLQOffset, sent[len(sent)-1].DLQOffset, sdk.RetryTopic(f.group))
			} else if err == nil {
				fmt.Fprintf(out, "group %s has no live dead letters to re-drive\n", f.group)
			}
			if err != nil {
				return err
			}
			return printLeft(ctx, out, c, f.group)
		},
	}
	f.add(cmd, false)
	cmd.Flags().IntVar(&count, "count", 0, "re-drive the oldest N only (0: all)")
	return cmd
}

func newDLQPurgeCmd() *cobra.Command {
	var f dlqFlags
	var count int
	var all bool
	cmd := &cobra.Command{
		Use:   "purge --group G (--all | --count N)",
		Short: "Drop dead letters: they are no longer listed, counted or re-driven",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all == (count > 0) || count < 0 {
				return &exitError{code: 2, msg: "give either --all or --count N (N > 0)"}
			}
			ctx, c, done, err := f.dial(cmd)
			if err != nil {
				return err
			}
			defer done()
			before, err := c.DLQ(ctx, f.group)
			if err != nil {
				return err
			}
			n, err := c.PurgeDeadLetters(ctx, f.group, count)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if n == 0 {
				fmt.Fprintf(out, "group %s has no live dead letters to purge\n", f.group)
			} else {
				fmt.Fprintf(out, "purged %d dead letter(s) of group %s (DLQ offsets %d..%d)\n", n, f.group, before.Cursor, before.Cursor+n-1)
			}
			return printLeft(ctx, out, c, f.group)
		},
	}
	f.add(cmd, false)
	cmd.Flags().IntVar(&count, "count", 0, "purge the oldest N")
	cmd.Flags().BoolVar(&all, "all", false, "purge every live dead letter")
	return cmd
}

func printLeft(ctx context.Context, w io.Writer, c *client.Client, group string) error {
	depth, err := c.DLQDepth(ctx, group)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d live dead letter(s) left\n", depth)
	return nil
}

// origin names where a dead letter was first stored: topic/queue@offset.
func origin(dl client.DeadLetter) string {
	if dl.Topic == "" {
		return "?"
	}
	return fmt.Sprintf("%s/%d@%d", dl.Topic, dl.Queue, dl.Offset)
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > n {
		s = string([]rune(s)[:n-1]) + "…"
	}
	return s
}

// dlqLetterJSON is one dead letter in --json output.
type dlqLetterJSON struct {
	DLQOffset    int64             `json:"dlq_offset"`
	Live         bool              `json:"live"`
	ID           string            `json:"id"`
	Topic        string            `json:"topic"`
	Queue        int32             `json:"queue"`
	Offset       int64             `json:"offset"`
	Key          string            `json:"key"`
	Attempts     int               `json:"attempts"`
	Reason       string            `json:"reason"`
	LastError    string            `json:"last_error"`
	FirstFailure *time.Time        `json:"first_failure,omitempty"`
	LastFailure  *time.Time        `json:"last_failure,omitempty"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body,omitempty"`
	BodyHex      string            `json:"body_hex,omitempty"`
}

type dlqListJSON struct {
	Group       string          `json:"group"`
	Depth       int64           `json:"depth"`
	Start       int64           `json:"start"`
	End         int64           `json:"end"`
	Cursor      int64           `json:"cursor"`
	DeadLetters []dlqLetterJSON `json:"dead_letters"`
}

func jsonLetters(dls []client.DeadLetter, st client.DLQState) []dlqLetterJSON {
	out := make([]dlqLetterJSON, 0, len(dls))
	for _, dl := range dls {
		j := dlqLetterJSON{DLQOffset: dl.DLQOffset, Live: dl.DLQOffset >= st.Cursor, ID: dl.ID, Topic: dl.Topic, Queue: dl.Queue, Offset: dl.Offset,
			Key: dl.Message.Key, Attempts: dl.Attempts, Reason: dl.Reason, LastError: dl.LastError, Headers: dl.Message.Headers}
		if !dl.FirstFailure.IsZero() {
			t := dl.FirstFailure.UTC()
			j.FirstFailure = &t
		}
		if !dl.LastFailure.IsZero() {
			t := dl.LastFailure.UTC()
			j.LastFailure = &t
		}
		if utf8.Valid(dl.Message.Body) {
			j.Body = string(dl.Message.Body)
		} else {
			j.BodyHex = hex.EncodeToString(dl.Message.Body)
		}
		out = append(out, j)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
