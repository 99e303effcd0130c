package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/security"
)

func init() { rootCmd.AddCommand(newClusterCmd()) }

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show a replicated cluster's roles, offsets and lag; promote a slave",
		Long: `The cluster commands talk to each node's replication plugin, not to the
broker's transport: master–slave (async, sync) on its replication address
(plugins.replication.config.listen), raft on its admin address
(plugins.replication.config.admin). Give the addresses, or a node's pipeline
file: its replication section names every node of the cluster.

Links secured with TLS or a cluster secret (plugins.replication.config.tls,
secret_file; docs/security.md) need them here too: a pipeline file given
brings its own; with --nodes or --node, pass --peer-ca, --peer-cert,
--peer-key (a certificate of the cluster CA, with client auth) and
--secret-file.`,
	}
	var link peerFlags
	var (
		nodes   []string
		asJSON  bool
		timeout time.Duration
	)
	statusCmd := &cobra.Command{
		Use:   "status [PIPELINE.yaml ...] [--nodes ADDR,ADDR,...]",
		Args:  cobra.ArbitraryArgs,
		Short: "Roles, epochs, end offsets and replication lag of every node",
		Example: `  ferry cluster status pipelines/cluster/raft-1.yaml
  ferry cluster status --nodes 127.0.0.1:7271,127.0.0.1:7272`,
		RunE: func(cmd *cobra.Command, args []string) error {
			peers, err := link.peers()
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			for _, path := range args {
				addrs, err := clusterAddrs(path)
				if err != nil {
					return &exitError{code: 2, msg: err.Error()}
				}
				if !link.given() {
					if peers, err = pipelinePeers(path); err != nil {
						return &exitError{code: 2, msg: err.Error()}
					}
				}
				nodes = append(nodes, addrs...)
			}
			nodes = uniq(nodes)
			if len(nodes) == 0 {
				return &exitError{code: 2, msg: "name the nodes: a pipeline file of one of them, or --nodes ADDR,ADDR,..."}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			sts := make([]*ferryv1.ReplicationStatusResponse, len(nodes))
			errs := make([]error, len(nodes))
			for i, a := range nodes {
				sts[i], errs[i] = replicationStatus(ctx, peers, a)
			}
			if asJSON {
				return printClusterJSON(cmd.OutOrStdout(), nodes, sts, errs)
			}
			printClusterStatus(cmd.OutOrStdout(), nodes, sts, errs)
			for _, err := range errs {
				if err == nil {
					return nil
				}
			}
			return &exitError{code: 1, msg: "no node answered"}
		},
	}
	statusCmd.Flags().StringSliceVar(&nodes, "nodes", nil, "replication (master–slave) or admin (raft) addresses of the nodes")
	statusCmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	statusCmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "bound on the whole command")
	link.add(statusCmd.Flags())

	var (
		node  string
		force bool
	)
	promoteCmd := &cobra.Command{
		Use:   "promote (SLAVE.yaml | --node ADDR) [--force]",
		Short: "Promote a slave to master (master–slave replication)",
		Long: `Promote makes a slave the master: the node whose pipeline file is given, or
whose replication address (plugins.replication.config.listen) is ADDR. Rules:
  1. only a slave is promoted;
  2. refused while a master is reachable (the slave's link to it is up, or a
     peer answers as master), unless --force: two masters could take writes;
  3. with sync replication, refused while the slave lacks messages of the last
     end offsets it heard from its master (an acked message could be missing),
     unless --force; with async it is allowed and the answer says how many
     messages the slave was known to lack;
  4. the new master's epoch (one more than any seen) is persisted: it stays
     master across restarts, and an old master that comes back steps down.`,
		Example: `  ferry cluster promote pipelines/cluster/slave.yaml
  ferry cluster promote --node 127.0.0.1:7272`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peers, err := link.peers()
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			switch {
			case len(args) == 1 && node != "":
				return &exitError{code: 2, msg: "give the slave's pipeline file or --node, not both"}
			case len(args) == 1:
				addr, err := replicationListen(args[0])
				if err != nil {
					return &exitError{code: 2, msg: err.Error()}
				}
				node = addr
				if !link.given() {
					if peers, err = pipelinePeers(args[0]); err != nil {
						return &exitError{code: 2, msg: err.Error()}
					}
				}
			case node == "":
				return &exitError{code: 2, msg: "name the slave: its pipeline file, or --node ADDR (its replication address)"}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			cc, err := dialReplication(peers, node)
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := ferryv1.NewReplicaLinkClient(cc).Promote(ctx, &ferryv1.PromoteRequest{Force: force})
			if err != nil {
				if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
					return &exitError{code: 1, msg: "promote refused: " + st.Message()}
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), resp.Detail)
			return nil
		},
	}
	promoteCmd.Flags().StringVar(&node, "node", "", "replication address of the slave to promote")
	promoteCmd.Flags().StringVar(&node, "broker", "", "old name of --node (it is the replication address, not the broker's)")
	_ = promoteCmd.Flags().MarkDeprecated("broker", "use --node (or the slave's pipeline file)")
	promoteCmd.Flags().BoolVar(&force, "force", false, "promote even though a master is reachable or the slave is behind")
	promoteCmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "bound on the command")
	link.add(promoteCmd.Flags())
	cmd.AddCommand(statusCmd, promoteCmd, newAddNodeCmd(), newRemoveNodeCmd())
	return cmd
}

// membersTarget is where a membership change is sent: the admin addresses
// to find the leader among, and the peer link to reach them with.
type membersTarget struct {
	link    peerFlags
	nodes   []string
	timeout time.Duration
}

func (m *membersTarget) add(fs *pflag.FlagSet, timeout time.Duration) {
	fs.StringSliceVar(&m.nodes, "nodes", nil, "admin addresses (plugins.replication.config.admin) of the group's nodes, to find the leader among")
	fs.DurationVar(&m.timeout, "timeout", timeout, "bound on the whole command")
	m.link.add(fs)
}

// changeMembers sends req to the group's leader among addrs, finding it
// again while leadership moves, until ctx ends.
func changeMembers(ctx context.Context, peers *security.Peers, addrs []string, req *ferryv1.ChangeMembersRequest) (*ferryv1.ChangeMembersResponse, error) {
	var last error
	for {
		var leader string
		var best uint64
		for _, a := range addrs {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := replicationStatus(sctx, peers, a)
			cancel()
			if err == nil && st.Role == "leader" && (leader == "" || st.Epoch > best) {
				leader, best = a, st.Epoch
			}
		}
		if leader == "" {
			last = fmt.Errorf("no node of %v answers as the raft leader", addrs)
		} else {
			cc, err := dialReplication(peers, leader)
			if err != nil {
				return nil, err
			}
			resp, err := ferryv1.NewReplicaLinkClient(cc).ChangeMembers(ctx, req)
			cc.Close()
			if err == nil {
				return resp, nil
			}
			st, _ := status.FromError(err)
			switch {
			case st.Code() == codes.FailedPrecondition && strings.HasPrefix(st.Message(), "not the raft leader"),
				st.Code() == codes.FailedPrecondition && strings.Contains(st.Message(), "leadership lost"):
				last = err // leadership moved: find the leader again
			case st.Code() == codes.FailedPrecondition || st.Code() == codes.InvalidArgument:
				return nil, &exitError{code: 1, msg: req.Op + " refused: " + st.Message()}
			default:
				return nil, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func printMembers(w io.Writer, resp *ferryv1.ChangeMembersResponse) {
	fmt.Fprintln(w, resp.Detail)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT\tSUFFRAGE")
	for _, s := range resp.Servers {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Id, s.Raft, s.Suffrage)
	}
	tw.Flush()
}

func newAddNodeCmd() *cobra.Command {
	var (
		m       membersTarget
		id      string
		raft    string
		broker  string
		admin   string
		catchUp time.Duration
	)
	cmd := &cobra.Command{
		Use:   "add-node (NEW.yaml | --id ID --raft ADDR --broker ADDR --admin ADDR --nodes ADDR,...)",
		Short: "Add a node to a raft group: a non-voter until it caught up, then a voter",
		Long: `add-node adds a node to a running raft group. Start the new node first, with
join: true in its replication config (it then waits to be added instead of
bootstrapping a group of its own) and a peers list that names every node of
the group and itself. add-node then asks the group's leader to:
  1. record the node's broker and admin addresses in the raft log (every node
     routes clients to it and fetches a catch-up from it when it leads);
  2. add it as a non-voter: it receives the log (or a snapshot, and fetches
     the messages from a peer's store) without counting for the quorum;
  3. once it applied every entry the leader had when it was added, make it a
     voter.
A node that does not catch up within --catch-up-timeout stays a non-voter;
add-node fails and says so. Given NEW.yaml, the new node's pipeline, its id,
addresses and the group's admin addresses come from it; otherwise give them
with the flags. Edit the other nodes' pipelines to list the new node too:
until they do, they report the difference (ferry cluster status) and change
nothing. A node that lost its data dir is replaced the same way: remove-node,
restart it empty with join: true, add-node (docs/replication.md).`,
		Example: `  ferry cluster add-node pipelines/cluster/raft-4.yaml
  ferry cluster add-node --id r4 --raft 127.0.0.1:7264 --broker 127.0.0.1:7254 --admin 127.0.0.1:7274 --nodes 127.0.0.1:7271`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peers, err := m.link.peers()
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			addrs := m.nodes
			if len(args) == 1 {
				n, others, err := newNodeOf(args[0])
				if err != nil {
					return &exitError{code: 2, msg: err.Error()}
				}
				id, raft, broker, admin = cmp.Or(id, n.ID), cmp.Or(raft, n.Raft), cmp.Or(broker, n.Broker), cmp.Or(admin, n.Admin)
				addrs = append(addrs, others...)
				if !m.link.given() {
					if peers, err = pipelinePeers(args[0]); err != nil {
						return &exitError{code: 2, msg: err.Error()}
					}
				}
			}
			var missing []string
			for flag, v := range map[string]string{"--id": id, "--raft": raft, "--broker": broker, "--admin": admin} {
				if v == "" {
					missing = append(missing, flag)
				}
			}
			if addrs = uniq(addrs); len(addrs) == 0 {
				missing = append(missing, "--nodes")
			}
			if len(missing) > 0 {
				sort.Strings(missing)
				return &exitError{code: 2, msg: "name the new node: its pipeline file, or " + strings.Join(missing, ", ")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), m.timeout)
			defer cancel()
			resp, err := changeMembers(ctx, peers, addrs, &ferryv1.ChangeMembersRequest{Op: "add", Id: id, Raft: raft, Broker: broker, Admin: admin, CatchUpTimeoutMs: catchUp.Milliseconds()})
			if err != nil {
				return err
			}
			printMembers(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the new node's id (node.id)")
	cmd.Flags().StringVar(&raft, "raft", "", "its raft address (plugins.replication.config.listen)")
	cmd.Flags().StringVar(&broker, "broker", "", "its broker address (its transport's listen)")
	cmd.Flags().StringVar(&admin, "admin", "", "its admin address (plugins.replication.config.admin)")
	cmd.Flags().DurationVar(&catchUp, "catch-up-timeout", 5*time.Minute, "how long it may take to catch up before it would be made a voter")
	m.add(cmd.Flags(), 10*time.Minute)
	return cmd
}

func newRemoveNodeCmd() *cobra.Command {
	var m membersTarget
	cmd := &cobra.Command{
		Use:   "remove-node ID (PIPELINE.yaml | --nodes ADDR,...)",
		Short: "Remove a node from a raft group",
		Long: `remove-node asks the raft group's leader to remove the node ID from the
group's configuration (raft RemoveServer). The leader can remove itself: it
steps down and the others elect a new leader. A removed node still running
takes no writes (it is never leader again; its broker answers NOT_LEADER) and
reports that it is not a member; stop it, and take it out of the other
nodes' pipelines. PIPELINE.yaml is any node's pipeline: the admin addresses of
its peers are where the leader is looked for.`,
		Example: `  ferry cluster remove-node r4 pipelines/cluster/raft-1.yaml
  ferry cluster remove-node r4 --nodes 127.0.0.1:7271,127.0.0.1:7272`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			peers, err := m.link.peers()
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			addrs := m.nodes
			if len(args) == 2 {
				more, err := clusterAddrs(args[1])
				if err != nil {
					return &exitError{code: 2, msg: err.Error()}
				}
				addrs = append(addrs, more...)
				if !m.link.given() {
					if peers, err = pipelinePeers(args[1]); err != nil {
						return &exitError{code: 2, msg: err.Error()}
					}
				}
			}
			if addrs = uniq(addrs); len(addrs) == 0 {
				return &exitError{code: 2, msg: "name the group: a pipeline file of one of its nodes, or --nodes ADDR,ADDR,..."}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), m.timeout)
			defer cancel()
			resp, err := changeMembers(ctx, peers, addrs, &ferryv1.ChangeMembersRequest{Op: "remove", Id: args[0]})
			if err != nil {
				return err
			}
			printMembers(cmd.OutOrStdout(), resp)
			return nil
		},
	}
	m.add(cmd.Flags(), 2*time.Minute)
	return cmd
}

// newNodeOf reads a new raft node's pipeline: the node (its id, raft and
// admin listen, and its broker address from its own peers entry) and the
// admin addresses of the other peers.
func newNodeOf(path string) (raftPeer, []string, error) {
	p, err := config.Load(path)
	if err != nil {
		return raftPeer{}, nil, err
	}
	ref := p.Plugins.Replication
	if ref.Type != "raft" {
		return raftPeer{}, nil, fmt.Errorf("%s: plugins.replication.type is %q: add-node is for raft groups", path, ref.Type)
	}
	n := raftPeer{ID: p.Node.ID}
	n.Raft, _ = ref.Config["listen"].(string)
	n.Admin, _ = ref.Config["admin"].(string)
	var others []string
	ps, _ := ref.Config["peers"].([]any)
	for _, e := range ps {
		m, _ := e.(map[string]any)
		id, _ := m["id"].(string)
		a, _ := m["admin"].(string)
		if id == n.ID {
			n.Broker, _ = m["broker"].(string)
		} else if a != "" {
			others = append(others, a)
		}
	}
	if n.Broker == "" {
		return raftPeer{}, nil, fmt.Errorf("%s: plugins.replication.config.peers does not list this node (%s) with its broker address", path, n.ID)
	}
	if len(others) == 0 {
		return raftPeer{}, nil, fmt.Errorf("%s: plugins.replication.config.peers lists no other node with an admin address: nowhere to find the group's leader", path)
	}
	return n, others, nil
}

// raftPeer is a raft node's addresses, as a pipeline's peers entry gives them.
type raftPeer struct{ ID, Raft, Broker, Admin string }

// dialReplication connects to a node's replication (or raft admin)
// listener with the cluster's peer handshake.
func dialReplication(peers *security.Peers, addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(peers.GRPC()))
}

func replicationStatus(ctx context.Context, peers *security.Peers, addr string) (*ferryv1.ReplicationStatusResponse, error) {
	cc, err := dialReplication(peers, addr)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	return ferryv1.NewReplicaLinkClient(cc).Status(ctx, &ferryv1.ReplicationStatusRequest{})
}

func sumEnds(offs []*ferryv1.QueueOffsets) int64 {
	n := int64(0)
	for _, o := range offs {
		n += o.End
	}
	return n
}

// printClusterStatus prints one line per node, then one per replica a
// master reports.
func printClusterStatus(w io.Writer, nodes []string, sts []*ferryv1.ReplicationStatusResponse, errs []error) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICATION\tNODE\tROLE\tMODE\tEPOCH\tBROKER\tMESSAGES\tLAG\tMASTER")
	// Lag is counted against the master or leader among the nodes asked.
	leaderMsgs := int64(-1)
	for i, st := range sts {
		if errs[i] == nil && (st.Role == "master" || st.Role == "leader") {
			leaderMsgs = sumEnds(st.Offsets)
		}
	}
	for i, a := range nodes {
		if errs[i] != nil {
			msg := errs[i].Error()
			if st, ok := status.FromError(errs[i]); ok {
				msg = st.Message()
			}
			fmt.Fprintf(tw, "%s\t-\tunreachable\t-\t-\t-\t-\t-\t%s\n", a, msg)
			continue
		}
		st := sts[i]
		lag, master := "-", "-"
		if st.Role != "master" && st.Role != "leader" {
			if leaderMsgs >= 0 {
				lag = fmt.Sprint(max(0, leaderMsgs-sumEnds(st.Offsets)))
			} else if len(st.Replicas) > 0 {
				lag = fmt.Sprint(st.Replicas[0].Lag)
			}
			link := "down"
			if st.LeaderConnected {
				link = "up"
			}
			if st.LeaderNode != "" {
				master = fmt.Sprintf("%s (%s), link %s", st.LeaderNode, st.LeaderAddress, link)
			} else {
				master = "none known, link " + link
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", a, st.Node, st.Role, st.Mode, st.Epoch, st.Address, sumEnds(st.Offsets), lag, master)
	}
	tw.Flush()
	// raft: where a node's pipeline and the group's live configuration
	// disagree (reported by the node, never applied by it).
	for i, st := range sts {
		if errs[i] == nil && st.MembershipConflict != "" {
			fmt.Fprintf(w, "\nMEMBERSHIP of %s: %s\n", st.Node, st.MembershipConflict)
		}
	}
	for i, st := range sts {
		if errs[i] != nil || (st.Role != "master" && st.Role != "leader") || len(st.Replicas) == 0 {
			continue
		}
		if st.Mode == "raft" {
			// A raft node reports its own log there (followers' progress
			// is raft's, not listed), and the group's configuration.
			if len(st.Servers) > 0 {
				var ms []string
				for _, s := range st.Servers {
					ms = append(ms, s.Id+" ("+s.Suffrage+")")
				}
				fmt.Fprintf(w, "\nraft group as %s knows it: %s\n", st.Node, strings.Join(ms, ", "))
			}
			fmt.Fprintf(w, "\nraft log of %s:\n", st.Node)
		} else {
			fmt.Fprintf(w, "\nreplicas of %s:\n", st.Node)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tBROKER\tCONNECTED\tLAG\tSTATE")
		for _, r := range st.Replicas {
			state := "ok"
			if r.Diverged {
				state = "DIVERGED: " + r.Detail
			} else if r.Detail != "" {
				state = r.Detail
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%s\n", r.Node, r.Address, r.Connected, r.Lag, state)
		}
		tw.Flush()
	}
}

func printClusterJSON(w io.Writer, nodes []string, sts []*ferryv1.ReplicationStatusResponse, errs []error) error {
	type node struct {
		Replication string                             `json:"replication"`
		Error       string                             `json:"error,omitempty"`
		Status      *ferryv1.ReplicationStatusResponse `json:"status,omitempty"`
	}
	out := make([]node, len(nodes))
	for i, a := range nodes {
		out[i] = node{Replication: a, Status: sts[i]}
		if errs[i] != nil {
			out[i].Error = strings.TrimSpace(errs[i].Error())
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// clusterAddrs lists the addresses `ferry cluster status` asks, read from a
// node's pipeline: for master–slave its replication listen address and its
// peers, for raft the admin address of every peer.
func clusterAddrs(path string) ([]string, error) {
	typ, rc, err := replicationSection(path)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "raft":
		var addrs []string
		if a, _ := rc["admin"].(string); a != "" {
			addrs = append(addrs, a)
		}
		peers, _ := rc["peers"].([]any)
		for i, p := range peers {
			m, _ := p.(map[string]any)
			a, _ := m["admin"].(string)
			if a == "" {
				return nil, fmt.Errorf("%s: plugins.replication.config.peers[%d] has no admin address: ferry cluster reaches raft nodes there", path, i)
			}
			addrs = append(addrs, a)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("%s: plugins.replication.config.admin is not set: ferry cluster reaches raft nodes there", path)
		}
		return uniq(addrs), nil
	default:
		l, err := listenOf(path, rc)
		if err != nil {
			return nil, err
		}
		addrs := []string{l}
		peers, _ := rc["peers"].([]any)
		for _, p := range peers {
			if a, ok := p.(string); ok {
				addrs = append(addrs, a)
			}
		}
		return uniq(addrs), nil
	}
}

// replicationListen is the replication address of a master–slave node.
func replicationListen(path string) (string, error) {
	typ, rc, err := replicationSection(path)
	if err != nil {
		return "", err
	}
	if typ == "raft" {
		return "", fmt.Errorf("%s: raft nodes are never promoted by hand: raft elects its leader", path)
	}
	return listenOf(path, rc)
}

func listenOf(path string, rc map[string]any) (string, error) {
	l, _ := rc["listen"].(string)
	if l == "" {
		return "", fmt.Errorf("%s: plugins.replication.config.listen is not set", path)
	}
	return l, nil
}

// replicationSection loads a pipeline (validated like `ferry run` would,
// environment overrides included) and returns its replication plugin's type
// and config.
func replicationSection(path string) (string, map[string]any, error) {
	p, err := config.Load(path)
	if err != nil {
		return "", nil, err
	}
	ref := p.Plugins.Replication
	if ref.Type == "" || ref.Type == "none" {
		return "", nil, fmt.Errorf("%s: the pipeline has no replication plugin (plugins.replication.type is %q)", path, ref.Type)
	}
	return ref.Type, ref.Config, nil
}

// peerFlags are how `ferry cluster` proves it belongs to a cluster whose
// links are secured, when no pipeline file says.
type peerFlags struct{ ca, cert, key, secret string }

func (f *peerFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.ca, "peer-ca", "", "secured links: the cluster CA (PEM), as tls.ca_file of the replication config")
	fs.StringVar(&f.cert, "peer-cert", "", "secured links: a certificate of the cluster CA (PEM, with client auth), as tls.cert_file")
	fs.StringVar(&f.key, "peer-key", "", "secured links: the key of --peer-cert (PEM)")
	fs.StringVar(&f.secret, "secret-file", "", "secured links: the cluster secret file, as secret_file")
}

func (f peerFlags) given() bool { return f.ca != "" || f.cert != "" || f.key != "" || f.secret != "" }

func (f peerFlags) peers() (*security.Peers, error) {
	l := security.PeerLink{TLS: security.PeerTLS{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca}, SecretFile: f.secret}
	if ps := l.Validate(""); len(ps) > 0 {
		var msgs []string
		for _, p := range ps {
			msgs = append(msgs, "--"+map[string]string{"tls.cert_file": "peer-cert", "tls.key_file": "peer-key", "tls.ca_file": "peer-ca", "secret_file": "secret-file"}[p.Path]+": "+p.Message)
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	return security.NewPeers(l, "ferry cluster", nil)
}

// pipelinePeers is the peer link of a node's pipeline: its replication
// section's tls and secret_file.
func pipelinePeers(path string) (*security.Peers, error) {
	_, rc, err := replicationSection(path)
	if err != nil {
		return nil, err
	}
	var l security.PeerLink
	if t, ok := rc["tls"].(map[string]any); ok {
		l.TLS.CertFile, _ = t["cert_file"].(string)
		l.TLS.KeyFile, _ = t["key_file"].(string)
		l.TLS.CAFile, _ = t["ca_file"].(string)
	}
	l.SecretFile, _ = rc["secret_file"].(string)
	p, err := security.NewPeers(l, "ferry cluster", nil)
	if err != nil {
		return nil, fmt.Errorf("%s: plugins.replication.config: %w", path, err)
	}
	return p, nil
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	out := ss[:0:0]
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
