package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

func init() { rootCmd.AddCommand(newTopicCmd()) }

// topicFlags are the flags every topic subcommand has.
type topicFlags struct {
	broker string
	json   bool
	tls    tlsFlags
}

func (f *topicFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.broker, "broker", "", brokerUsage)
	f.tls.add(cmd.Flags())
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
}

func newTopicCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Create, grow, delete, list and describe a broker's topics at runtime",
		Long: `Topics declared in a pipeline's topics: are created when the node starts.
These commands change and show them on a running node, through its Broker
API: create and alter are written to the node's topic metadata before they
answer, so they survive a restart. Queues are never removed. Topic names
are letters, digits, '.', '_' and '-', at most 249 characters; the prefixes
%RETRY% and %DLQ% belong to consumer groups.

On a node with a replication plugin (master-slave, raft), create, alter
and delete are made on the master or raft leader and replicated to every
node; the other nodes refuse them, naming the master or leader.`,
	}
	cmd.AddCommand(newTopicCreateCmd(), newTopicAlterCmd(), newTopicDeleteCmd(), newTopicListCmd(), newTopicDescribeCmd())
	return cmd
}

// topicChangeCmd is create or alter: NAME --queues N, printing the topic.
func topicChangeCmd(use, short string, queuesUsage string, alter bool, change func(ctx context.Context, c *client.Client, name string, queues int32, s *ferryv1.TopicSettings) (*ferryv1.TopicInfo, error)) *cobra.Command {
	var f topicFlags
	var queues int32
	var sf settingsFlags
	var waitFor []string
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if waitTimeout <= 0 {
				return fmt.Errorf("--wait-timeout must be above 0, got %s", waitTimeout)
			}
			settings, err := sf.parse(alter)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("queues") && (!alter || settings == nil) {
				if alter {
					return errors.New("alter needs --queues or a setting to change (--retention-bytes, --retention-age, --max-message-bytes)")
				}
				return errors.New(`required flag(s) "queues" not set`)
			}
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			t, err := change(ctx, c, args[0], queues, settings)
			if err != nil {
				return err
			}
			if err := waitTopicOn(ctx, f.tls, waitFor, t.Name, t.Queues, waitTimeout); err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), topicJSON{Name: t.Name, Queues: t.Queues, Settings: settingsJSONOf(t.Settings)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "topic %s: %d queue(s)\n", t.Name, t.Queues)
			if line := settingsLine(t.Settings); line != "" {
				fmt.Fprintln(cmd.OutOrStdout(), line)
			}
			return nil
		},
	}
	f.add(cmd)
	sf.add(cmd, alter)
	cmd.Flags().Int32Var(&queues, "queues", 0, queuesUsage)
	cmd.Flags().StringSliceVar(&waitFor, "wait-for", nil, "after the change, wait until each of these brokers (host:port, e.g. a master's slaves) lists the topic with its queues")
	cmd.Flags().DurationVar(&waitTimeout, "wait-timeout", 30*time.Second, "how long --wait-for waits for each broker")
	return cmd
}

// waitTopicOn waits until every broker in addrs lists topic with at least
// queues queues, each for at most timeout: on master-slave the master
// answers a change before its slaves applied it (docs/admin.md), and this
// is how a caller waits for them. An error names the first broker that did
// not, and what it lists.
func waitTopicOn(ctx context.Context, tls tlsFlags, addrs []string, topic string, queues int32, timeout time.Duration) error {
	copts, err := tls.options()
	if err != nil {
		return err
	}
	for _, addr := range addrs {
		if err := waitTopicOne(ctx, copts, addr, topic, queues, timeout); err != nil {
			return err
		}
	}
	return nil
}

func waitTopicOne(ctx context.Context, copts []client.Option, addr, topic string, queues int32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	notThere := func(seen string) error {
		return fmt.Errorf("--wait-for %s: topic %q with %d queue(s) not there after %s (the broker %s); the change is made on the node that answered, and reaches this one when it links", addr, topic, queues, timeout, seen)
	}
	c, err := client.Dial(ctx, addr, append(copts, client.WithLogger(quietSlog(hclog.Error)))...)
	if err != nil {
		if ctx.Err() != nil {
			return notThere("does not answer")
		}
		return fmt.Errorf("--wait-for %s: %w", addr, err)
	}
	defer c.Close()
	seen := "does not answer"
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		md, err := c.Metadata(cctx)
		ccancel()
		if err == nil {
			seen = "does not list it"
			for _, t := range md.Topics {
				if t.Name == topic {
					if t.Queues >= queues {
						return nil
					}
					seen = fmt.Sprintf("lists it with %d queue(s)", t.Queues)
				}
			}
		}
		select {
		case <-ctx.Done():
			return notThere(seen)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func newTopicCreateCmd() *cobra.Command {
	return topicChangeCmd("create NAME --queues N", "Create a topic", "number of queues (1 to 1024)", false,
		func(ctx context.Context, c *client.Client, name string, queues int32, s *ferryv1.TopicSettings) (*ferryv1.TopicInfo, error) {
			return c.CreateTopicWith(ctx, name, queues, s)
		})
}

func newTopicAlterCmd() *cobra.Command {
	return topicChangeCmd("alter NAME [--queues N] [--retention-bytes SIZE] [--retention-age D] [--max-message-bytes SIZE]",
		"Grow a topic to N queues (queues are never removed), or change its settings", "the new number of queues, above the topic's", true,
		func(ctx context.Context, c *client.Client, name string, queues int32, s *ferryv1.TopicSettings) (*ferryv1.TopicInfo, error) {
			return c.AlterTopicWith(ctx, name, queues, s)
		})
}

type topicJSON struct {
	Name   string           `json:"name"`
	Queues int32            `json:"queues"`
	Detail []topicQueueJSON `json:"queue_offsets,omitempty"`
	// Bytes the store holds for the topic, the sum of its queues'
	// (describe only); BytesUnknown when the store cannot say for some
	// queue (then Bytes is absent: unknown, not 0).
	Bytes        *int64 `json:"bytes,omitempty"`
	BytesUnknown bool   `json:"bytes_unknown,omitempty"`
	// Groups are the consumer groups that consume it (describe only).
	Groups []string `json:"groups,omitempty"`
	// Settings are the topic's own, absent when it has none.
	Settings *topicSettingsJSON `json:"settings,omitempty"`
}

func newTopicDeleteCmd() *cobra.Command {
	var f topicFlags
	var yes, force bool
	cmd := &cobra.Command{
		Use:   "delete NAME --yes",
		Short: "Delete a topic: its messages and its groups' offsets on it",
		Long: `delete takes a topic out of the node's routing at once (its producers and
consumers get "not found"), deletes its messages and every group's offsets on
it from the store, and removes it from the node's topic metadata, for good:
a topic created again with the name starts empty. The store frees the space
later (the file store: when retention removes the segments that held it).

It asks for --yes. It is refused for a topic consumer groups consume (live
members, or offsets committed on it) unless --force, for a group's internal
topic, for a topic the pipeline declares (remove it there and restart
first), with a store that cannot delete, and on a replicated node.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return fmt.Errorf("deleting topic %q removes its messages for good: pass --yes", args[0])
			}
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			groups, err := c.DeleteTopic(ctx, args[0], force)
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), struct {
					Name    string   `json:"name"`
					Deleted bool     `json:"deleted"`
					Groups  []string `json:"groups"`
				}{args[0], true, nonNil(groups)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "topic %s deleted\n", args[0])
			if len(groups) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "the offsets of group(s) %s on it are deleted with it\n", strings.Join(groups, ", "))
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the delete")
	cmd.Flags().BoolVar(&force, "force", false, "delete even while consumer groups consume it")
	return cmd
}

type topicQueueJSON struct {
	Queue int32 `json:"queue"`
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// Bytes the store holds for the queue; absent when it cannot say.
	Bytes *int64 `json:"bytes,omitempty"`
}

func newTopicListCmd() *cobra.Command {
	var f topicFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the broker's topics and their queue counts (consumer groups' internal topics left out)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			md, err := c.Metadata(ctx)
			if err != nil {
				return err
			}
			out := make([]topicJSON, 0, len(md.Topics))
			for _, t := range md.Topics {
				out = append(out, topicJSON{Name: t.Name, Queues: t.Queues})
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tQUEUES")
			for _, t := range out {
				fmt.Fprintf(tw, "%s\t%d\n", t.Name, t.Queues)
			}
			return tw.Flush()
		},
	}
	f.add(cmd)
	return cmd
}

func newTopicDescribeCmd() *cobra.Command {
	var f topicFlags
	cmd := &cobra.Command{
		Use:   "describe NAME",
		Short: "Show a topic's queues with the range of offsets each holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialOne(cmd, f.broker, f.tls)
			if err != nil {
				return err
			}
			defer done()
			t, err := describeTopic(ctx, c, args[0])
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			printTopic(cmd.OutOrStdout(), t)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// describeTopic reads topic name's queue count, then each queue's offsets.
func describeTopic(ctx context.Context, c *client.Client, name string) (topicJSON, error) {
	md, err := c.Metadata(ctx)
	if err != nil {
		return topicJSON{}, err
	}
	var queues int32 = -1
	var settings *ferryv1.TopicSettings
	for _, t := range md.Topics {
		if t.Name == name {
			queues, settings = t.Queues, t.Settings
		}
	}
	if queues < 0 {
		return topicJSON{}, fmt.Errorf("topic %q: %w on the broker", name, sdk.ErrNotFound)
	}
	refs := make([]*ferryv1.QueueRef, queues)
	for i := range refs {
		refs[i] = &ferryv1.QueueRef{Topic: name, Queue: int32(i)}
	}
	offs, err := c.QueueSizes(ctx, refs)
	if err != nil {
		return topicJSON{}, err
	}
	t := topicJSON{Name: name, Queues: queues, Settings: settingsJSONOf(settings)}
	var total int64
	for _, o := range offs {
		t.Detail = append(t.Detail, topicQueueJSON{Queue: o.Queue, Start: o.Start, End: o.End, Bytes: o.Bytes})
		if o.Bytes == nil {
			t.BytesUnknown = true
		} else {
			total += *o.Bytes
		}
	}
	if !t.BytesUnknown {
		t.Bytes = &total
	}
	groups, err := c.ListGroups(ctx)
	if err != nil && !errors.Is(err, errors.ErrUnsupported) { // an older broker lists no groups
		return topicJSON{}, err
	}
	for _, g := range groups {
		if slices.Contains(g.Topics, name) {
			t.Groups = append(t.Groups, g.Name)
		}
	}
	return t, nil
}

func printTopic(w io.Writer, t topicJSON) {
	var msgs int64
	for _, q := range t.Detail {
		msgs += q.End - q.Start
	}
	size := "bytes unknown (the store cannot say)"
	if t.Bytes != nil {
		size = fmt.Sprintf("%d bytes", *t.Bytes)
	}
	fmt.Fprintf(w, "topic %s: %d queue(s), %d message(s) stored, %s\n", t.Name, t.Queues, msgs, size)
	if len(t.Groups) > 0 {
		fmt.Fprintf(w, "consumed by: %s\n", strings.Join(t.Groups, ", "))
	}
	if t.Settings != nil {
		fmt.Fprintln(w, t.Settings.line())
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "QUEUE\tSTART\tEND\tMESSAGES\tBYTES")
	for _, q := range t.Detail {
		b := "unknown"
		if q.Bytes != nil {
			b = strconv.FormatInt(*q.Bytes, 10)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\n", q.Queue, q.Start, q.End, q.End-q.Start, b)
	}
	tw.Flush()
}
