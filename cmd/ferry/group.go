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
	Group    string              `json:"group"`
	Members  []groupMemberJSON   `json:"members"`
	Queues   []groupQueueJSON    `json:"queues"`
	Internal []internalTopicJSON `json:"internal_topics"`
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
			g := groupJSON{Group: d.Group, Members: []groupMemberJSON{}, Queues: []groupQueueJSON{}, Internal: internalJSON(d.Internal)}
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
		topic, toTime              string
		queues                     []int32
		earliest, latest           bool
		toOffset                   int64
		force, dryRun, offsetGiven bool
	)
	cmd := &cobra.Command{
		Use:   "reset-offsets GROUP --topic T (--to-earliest | --to-latest | --to-offset N) [--queues 0,2]",
		Short: "Move a group's committed offsets on a topic (refused while it has live members, unless --force)",
		Long: `reset-offsets moves the offsets group GROUP has committed on topic T, for
every queue of the topic or those of --queues: to each queue's first stored
message (--to-earliest), past its last (--to-latest: only new messages), or
to one offset (--to-offset N, which every queue reset must hold: between its
start and its end). The group's consumers start there when they next take
the queues. --to-time is not built yet (the stores cannot seek by time).

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
			if toTime != "" {
				ts, err := time.Parse(time.RFC3339Nano, toTime)
				if err != nil {
					return fmt.Errorf("--to-time %q: want RFC 3339, like 2026-12-06T21:00:00Z: %v", toTime, err)
				}
				req.To, req.TimestampUnixNano, n = ferryv1.ResetTo_RESET_TO_TIME, ts.UnixNano(), n+1
			}
			if n != 1 {
				return fmt.Errorf("say where to reset with exactly one of --to-earliest, --to-latest, --to-offset N, --to-time T")
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
			fmt.Fprintf(cmd.OutOrStdout(), "group %s: %s %d queue(s) of %s\n", args[0], verb, len(out.Queues), topic)
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
	cmd.Flags().StringVar(&toTime, "to-time", "", "reset to the first message at or after this time (RFC 3339; not built yet)")
	cmd.Flags().BoolVar(&force, "force", false, "reset even while the group has live members")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	return cmd
}

type deleteGroupJSON struct {
	Group    string              `json:"group"`
	Deleted  bool                `json:"deleted"`
	Internal []internalTopicJSON `json:"internal_topics"`
}

func newGroupDeleteCmd() *cobra.Command {
	var f topicFlags
	cmd := &cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a group's committed offsets (refused while it has live members)",
		Long: `delete removes the offsets group GROUP committed; consumers that join it
later start as a new group would. It is refused while the group has live
members. Messages in its %RETRY% and %DLQ% topics stay until retention
removes them (ferry dlq still reads the dead letters).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			internal, err := c.DeleteGroup(ctx, args[0])
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
	f.add(cmd)
	return cmd
}
