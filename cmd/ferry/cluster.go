package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	cmd.AddCommand(statusCmd, promoteCmd)
	return cmd
}

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
	for i, st := range sts {
		if errs[i] != nil || (st.Role != "master" && st.Role != "leader") || len(st.Replicas) == 0 {
			continue
		}
		if st.Mode == "raft" {
			// A raft node reports its own log there (followers' progress
			// is raft's, not listed).
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
