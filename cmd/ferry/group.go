package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

func init() { rootCmd.AddCommand(newGroupCmd()) }

func newGroupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "List, describe, reset and delete a broker's consumer groups",
		Long: `A consumer group is its live members, the offsets it committed and its
%RETRY% and %DLQ% topics. These commands show and change them on a running
node, through its Broker API.

reset-offsets and delete are refused while the group has live members (stop
its consumers first); reset-offsets --force resets anyway, but live members
keep their positions and commit them over the reset. On a node with a
replication plugin, reset-offsets runs on the node that takes produce and
replicates as every commit does; delete is refused there for now.`,
	}
	cmd.AddCommand(newGroupListCmd(), newGroupDescribeCmd(), newGroupResetCmd(), newGroupDeleteCmd())
	return cmd
}

type groupSummaryJSON struct {
	Name    string   `json:"name"`
	Members int32    `json:"members"`
	Topics  []string `json:"topics"`
	Lag     int64    `json:"lag"`
}

func newGroupListCmd() *cobra.Command {
	var f topicFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the consumer groups the broker knows, with live members, topics and lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			gs, err := c.ListGroups(ctx)
			if err != nil {
				return err
			}
			out := make([]groupSummaryJSON, 0, len(gs))
			for _, g := range gs {
				out = append(out, groupSummaryJSON{Name: g.Name, Members: g.Members, Topics: nonNil(g.Topics), Lag: g.Lag})
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tMEMBERS\tLAG\tTOPICS")
			for _, g := range out {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", g.Name, g.Members, g.Lag, strings.Join(g.Topics, ","))
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

type groupJSON struct {
	Group string `json:"group"`
	// Ephemeral: the broker deletes the group once its last member has
	// been gone for the node's ephemeral_group_ttl; DeleteAt is when,
	// while it has no members.
	Ephemeral bool                `json:"ephemeral"`
	DeleteAt  *time.Time          `json:"delete_at,omitempty"`
	Members   []groupMemberJSON   `json:"members"`
	Queues    []groupQueueJSON    `json:"queues"`
	Internal  []internalTopicJSON `json:"internal_topics"`
}

type groupMemberJSON struct {
	ID            string    `json:"id"`
	Topics        []string  `json:"topics"`
	Queues        []string  `json:"queues"` // topic/queue
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Expires       time.Time `json:"expires"`
}

type groupQueueJSON struct {
	Topic     string `json:"topic"`
	Queue     int32  `json:"queue"`
	Start     int64  `json:"start"`
	End       int64  `json:"end"`
	Committed int64  `json:"committed"`
	Lag       int64  `json:"lag"`
	Member    string `json:"member,omitempty"`
}

type internalTopicJSON struct {
	Topic    string `json:"topic"`
	Messages int64  `json:"messages"`
}

func internalJSON(in []*ferryv1.InternalTopicSize) []internalTopicJSON {
	out := make([]internalTopicJSON, 0, len(in))
	for _, t := range in {
		out = append(out, internalTopicJSON{Topic: t.Topic, Messages: t.Messages})
	}
	return out
}

func newGroupDescribeCmd() *cobra.Command {
	var f topicFlags
	cmd := &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a group's live members and, per queue, its committed offset and lag",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			d, err := c.DescribeGroup(ctx, args[0])
			if err != nil {
				return err
			}
			g := groupJSON{Group: d.Group, Ephemeral: d.Ephemeral, Members: []groupMemberJSON{}, Queues: []groupQueueJSON{}, Internal: internalJSON(d.Internal)}
			if d.Ephemeral && d.DeleteAtUnixNano > 0 {
				at := time.Unix(0, d.DeleteAtUnixNano).UTC()
				g.DeleteAt = &at
			}
			for _, m := range d.Members {
				mj := groupMemberJSON{ID: m.Id, Topics: nonNil(m.Topics), Queues: []string{},
					LastHeartbeat: time.Unix(0, m.LastHeartbeatUnixNano).UTC(), Expires: time.Unix(0, m.ExpiresUnixNano).UTC()}
				for _, q := range m.Queues {
					mj.Queues = append(mj.Queues, q.Topic+"/"+strconv.Itoa(int(q.Queue)))
				}
				g.Members = append(g.Members, mj)
			}
			for _, q := range d.Queues {
				g.Queues = append(g.Queues, groupQueueJSON{Topic: q.Topic, Queue: q.Queue, Start: q.Start, End: q.End, Committed: q.Committed, Lag: q.Lag, Member: q.Member})
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), g)
			}
			printGroup(cmd.OutOrStdout(), g, time.Now())
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func printGroup(w io.Writer, g groupJSON, now time.Time) {
	var lag int64
	for _, q := range g.Queues {
		lag += q.Lag
	}
	fmt.Fprintf(w, "group %s: %d live member(s), lag %d\n", g.Group, len(g.Members), lag)
	switch {
	case g.Ephemeral && g.DeleteAt != nil:
		fmt.Fprintf(w, "ephemeral: deleted at %s (in %s) unless a member joins first\n",
			g.DeleteAt.Format(time.RFC3339), max(g.DeleteAt.Sub(now), 0).Round(time.Second))
	case g.Ephemeral:
		fmt.Fprintln(w, "ephemeral: deleted once its last member has been gone for the node's ephemeral_group_ttl")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(g.Members) > 0 {
		fmt.Fprintln(tw, "\nMEMBER\tLAST HEARTBEAT\tQUEUES")
		for _, m := range g.Members {
			// The group's retry topic's queues, which every member
			// holds a share of too, only counted.
			var own []string
			retry := 0
			for _, q := range m.Queues {
				if strings.HasPrefix(q, sdk.RetryTopic(g.Group)+"/") {
					retry++
				} else {
					own = append(own, q)
				}
			}
			queues := strings.Join(own, ",")
			if queues == "" {
				queues = "-"
			}
			if retry > 0 {
				queues += fmt.Sprintf(" (+%d retry queues)", retry)
			}
			fmt.Fprintf(tw, "%s\t%s ago\t%s\n", m.ID, now.Sub(m.LastHeartbeat).Round(100*time.Millisecond), queues)
		}
	}
	if len(g.Queues) > 0 {
		fmt.Fprintln(tw, "\nTOPIC\tQUEUE\tSTART\tEND\tCOMMITTED\tLAG\tMEMBER")
		for _, q := range g.Queues {
			committed, member := "-", q.Member
			if q.Committed >= 0 {
				committed = strconv.FormatInt(q.Committed, 10)
			}
			if member == "" {
				member = "-"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%s\n", q.Topic, q.Queue, q.Start, q.End, committed, q.Lag, member)
		}
	}
	tw.Flush()
	var parts []string
	for _, t := range g.Internal {
		parts = append(parts, fmt.Sprintf("%s %d message(s)", t.Topic, t.Messages))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(parts, ", "))
	}
}

type resetJSON struct {
	Group  string           `json:"group"`
	DryRun bool             `json:"dry_run"`
	Queues []resetQueueJSON `json:"queues"`
}

type resetQueueJSON struct {
	Topic     string `json:"topic"`
	Queue     int32  `json:"queue"`
	Previous  int64  `json:"previous"`
	Committed int64  `json:"committed"`
}

func newGroupResetCmd() *cobra.Command {
	var (
		f                          topicFlags
		topic, toTime, byDuration  string
		queues                     []int32
		earliest, latest           bool
		toOffset                   int64
		force, dryRun, offsetGiven bool
	)
	cmd := &cobra.Command{
		Use:   "reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-offset N | --to-datetime T | --by-duration D) [--queues 0,2]",
		Short: "Move a group's committed offsets on a topic (refused while it has live members, unless --force)",
		Long: `reset-offsets moves the offsets group GROUP has committed on topic T, for
every queue of the topic or those of --queues: to each queue's first stored
message (--to-earliest), past its last (--to-latest: only new messages), or
to one offset (--to-offset N, which every queue reset must hold: between its
start and its end), or to a time: each queue's first message stored at or
after it (--to-datetime 2026-12-06T10:00:00Z, RFC 3339; or --by-duration,
that long before now: PT10M or P1DT2H as Kafka writes it, or a negative Go
duration, -10m). The time compared is when the broker stored each message,
by the broker's clock; a time after every message is the queue's end, one
before them all its start. --by-duration counts back from this machine's
clock. The store must seek by time (the file and memory stores do). The
group's consumers start there when they next take the queues.

It is refused while the group has live members, which would keep their
positions and commit them over the reset; --force resets anyway. --dry-run
prints what would change.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			offsetGiven = cmd.Flags().Changed("to-offset")
			req := &ferryv1.ResetOffsetsRequest{Group: args[0], Topic: topic, Queues: queues, Force: force, DryRun: dryRun}
			n := 0
			if earliest {
				req.To, n = ferryv1.ResetTo_RESET_TO_EARLIEST, n+1
			}
			if latest {
				req.To, n = ferryv1.ResetTo_RESET_TO_LATEST, n+1
			}
			if offsetGiven {
				req.To, req.Offset, n = ferryv1.ResetTo_RESET_TO_OFFSET, toOffset, n+1
			}
			var at time.Time
			if toTime != "" {
				ts, err := time.Parse(time.RFC3339Nano, toTime)
				if err != nil {
					return fmt.Errorf("--to-datetime %q: want RFC 3339 with a zone, like 2026-12-06T21:00:00Z or 2026-12-06T22:00:00+01:00", toTime)
				}
				at, n = ts, n+1
			}
			if byDuration != "" {
				back, err := parseAgo(byDuration)
				if err != nil {
					return fmt.Errorf("--by-duration %q: %v", byDuration, err)
				}
				at, n = time.Now().Add(-back), n+1
			}
			if !at.IsZero() {
				req.To, req.TimestampUnixNano = ferryv1.ResetTo_RESET_TO_TIME, at.UnixNano()
			}
			if n != 1 {
				return fmt.Errorf("say where to reset with exactly one of --to-earliest, --to-latest, --to-offset N, --to-datetime T, --by-duration D")
			}
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			qs, err := c.ResetOffsets(ctx, req)
			if err != nil {
				return err
			}
			out := resetJSON{Group: args[0], DryRun: dryRun, Queues: []resetQueueJSON{}}
			for _, q := range qs {
				out.Queues = append(out.Queues, resetQueueJSON{Topic: q.Topic, Queue: q.Queue, Previous: q.Previous, Committed: q.Committed})
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			verb := "reset"
			if dryRun {
				verb = "would reset (dry run, nothing changed)"
			}
			where := ""
			if !at.IsZero() {
				where = " to the first messages stored at or after " + at.UTC().Format(time.RFC3339Nano)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %s: %s %d queue(s) of %s%s\n", args[0], verb, len(out.Queues), topic, where)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tQUEUE\tPREVIOUS\tNEW")
			for _, q := range out.Queues {
				prev := "-"
				if q.Previous >= 0 {
					prev = strconv.FormatInt(q.Previous, 10)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", q.Topic, q.Queue, prev, q.Committed)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&topic, "topic", "", "topic whose offsets to reset (required)")
	_ = cmd.MarkFlagRequired("topic")
	cmd.Flags().Int32SliceVar(&queues, "queues", nil, "queues to reset, like 0,2 (default: every queue of the topic)")
	cmd.Flags().BoolVar(&earliest, "to-earliest", false, "reset to each queue's first stored message")
	cmd.Flags().BoolVar(&latest, "to-latest", false, "reset past each queue's last message (consume only new ones)")
	cmd.Flags().Int64Var(&toOffset, "to-offset", 0, "reset every queue to this offset")
	cmd.Flags().StringVar(&toTime, "to-datetime", "", "reset to the first message stored at or after this time (RFC 3339, like 2026-12-06T10:00:00Z)")
	cmd.Flags().StringVar(&toTime, "to-time", "", "the same as --to-datetime")
	_ = cmd.Flags().MarkHidden("to-time")
	cmd.Flags().StringVar(&byDuration, "by-duration", "", "reset to the first message stored at or after this long ago (PT10M, P1DT2H, or -10m)")
	cmd.Flags().BoolVar(&force, "force", false, "reset even while the group has live members")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	return cmd
}

// parseAgo reads how long ago --by-duration means: an ISO 8601 duration as
// Kafka's --by-duration takes it (PnDTnHnMnS, weeks, months and years
// apart; a leading '-' changes nothing, it is in the past either way) or a
// negative Go duration (-10m, -1h30m). A positive Go duration is refused:
// it would name the future, which holds no message.
func parseAgo(s string) (time.Duration, error) {
	iso := strings.TrimPrefix(s, "-")
	if strings.HasPrefix(iso, "P") {
		d, err := parseISODuration(iso)
		if err != nil {
			return 0, err
		}
		return d, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want an ISO 8601 duration like PT10M or P1DT2H, or a negative Go duration like -10m")
	}
	if d > 0 {
		return 0, fmt.Errorf("a positive duration is in the future; for 10 minutes ago write -10m or PT10M")
	}
	return -d, nil
}

// parseISODuration parses PnDTnHnMnS (each part optional, seconds may have
// a fraction).
func parseISODuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("want an ISO 8601 duration like PT10M, PT1H30M or P1DT2H (days, hours, minutes, seconds)")
	rest, ok := strings.CutPrefix(s, "P")
	if !ok || rest == "" || rest == "T" {
		return 0, bad
	}
	var total time.Duration
	inTime := false
	seen := ""
	for rest != "" {
		if rest[0] == 'T' {
			if inTime {
				return 0, bad
			}
			inTime, rest = true, rest[1:]
			if rest == "" {
				return 0, bad
			}
			continue
		}
		i := strings.IndexAny(rest, "DHMS")
		if i <= 0 {
			return 0, bad
		}
		unit := rest[i]
		v, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || v < 0 || (unit != 'S' && strings.Contains(rest[:i], ".")) {
			return 0, bad
		}
		if strings.ContainsRune(seen, rune(unit)) || (unit == 'D') == inTime {
			return 0, bad
		}
		seen += string(unit)
		per := map[byte]time.Duration{'D': 24 * time.Hour, 'H': time.Hour, 'M': time.Minute, 'S': time.Second}[unit]
		total += time.Duration(v * float64(per))
		rest = rest[i+1:]
	}
	return total, nil
}

type deleteGroupJSON struct {
	Group    string              `json:"group"`
	Deleted  bool                `json:"deleted"`
	Internal []internalTopicJSON `json:"internal_topics"`
}

func newGroupDeleteCmd() *cobra.Command {
	var f topicFlags
	var force bool
	cmd := &cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a group's committed offsets (refused while it has live members, unless --force)",
		Long: `delete removes the offsets group GROUP committed; consumers that join it
later start as a new group would (from its reset policy). On a replicated
node (raft leader, master) the offsets are deleted on every node. It is
refused while the group has live members on the node; --force deletes
anyway, but live members keep their positions and may commit them again.
Messages in its %RETRY% and %DLQ% topics stay until retention
removes them (ferry dlq still reads the dead letters).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			internal, err := c.DeleteGroup(ctx, args[0], force)
			if err != nil {
				return err
			}
			out := deleteGroupJSON{Group: args[0], Deleted: true, Internal: internalJSON(internal)}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %s deleted: its committed offsets are removed\n", args[0])
			for _, t := range out.Internal {
				if t.Messages > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s still holds %d message(s), kept until retention removes them\n", t.Topic, t.Messages)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even while the group has live members")
	f.add(cmd)
	return cmd
}
