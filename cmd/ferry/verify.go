package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/verify"
)

func init() { rootCmd.AddCommand(newVerifyCmd()) }

func newVerifyCmd() *cobra.Command {
	var (
		o            verify.Options
		faults       string
		asJSON       bool
		passwordFile string
	)
	cmd := &cobra.Command{
		Use:   "verify PIPELINE.yaml [PIPELINE.yaml ...]",
		Short: "Run a pipeline's node under faults and check that no acknowledged message was lost",
		Long: `Verify starts the node PIPELINE.yaml describes, on a temporary data dir and a
free loopback port, drives it with producers of unique, checkable messages
(one key each; --mode sync, async or oneway) while it injects faults, heals, reads the topic back
through the Broker API and checks every send against what is stored:

  lost          acknowledged OK, not stored
  duplicated    stored more than once
  unexpected    stored, never sent
  out of order  a key's acknowledged messages stored in another order
  wrong offset  stored elsewhere than its acknowledgement said

Each consumer group (--groups, default 1; a ferry consume process) consumes
during the run and must deliver every stored message at least once by the
end (a member killed between processing and commit redelivers: counted,
not a failure). Verify reports what became of sends acknowledged with a
weaker status and of
sends whose outcome is unknown (stored or not). A loss the pipeline does not
permit, or any of the other four, fails the run: the verdict is printed, and
the exit status is 1.

Faults (--faults, comma-separated, times from the start): kill:broker@5s-7s
kills the node and its plugins with SIGKILL and starts it again at 7s
(default: a second later); kill:storage@3s and kill:transport@9s kill one
plugin process, which the node restarts; kill:consumer@8s kills each group's
ferry consume process and starts another; pause:broker@4s-6s stops the node
and its plugins with SIGSTOP and continues them at 6s (pause:storage and
pause:transport: one plugin process); power-loss@12s-13s makes the file
store drop what it did not fsync and die, kills the rest of the node, and
starts it again. Under flush async a power loss may lose what was
acknowledged within the store's flush_interval before it, and no more; on
flush sync, and for kills, nothing acknowledged may be lost. Without
--faults: a storage kill near a quarter of the run, the node killed near the
half, a transport kill near three quarters, placed by --seed.

With --out DIR the results stay there: results.json (every send, every
fault, the figures), latency.png (latency of each send over time and
acknowledgements per second, the faults shaded) and node.log.

Several files are one cluster, a file a node (raft, or a master and its
slaves: pipelines/cluster/): each node gets a temporary data dir and free
loopback ports, the peer addresses in the files are rewritten to match, and
each link between two nodes runs through a proxy of verify's. A fault's
target is then a node's id, leader (the raft leader or the master when
it begins) or follower (a node following it then), and storage, transport, replication name that plugin of the
leader. kill:leader@5s-7s kills the leader and restarts it at 7s; in
master–slave replication a kill of the master is its machine's death: its
links are cut, it stays down and verify promotes the slave. pause:NODE
stops a node (make it longer than the election timeout);
partition:NODE@4s-6s drops every byte on its links, delay:NODE@4s-6s holds
each --link-delay, reset:NODE@4s closes them. A link fault may overlap a
node's fault. Raft and sync replication may lose nothing acknowledged;
async may lose what the master acknowledged before it died (reported as
lost at the master's death). power-loss:NODE@4s-5s cuts a node's power
(its file store drops what it did not fsync) and restarts it at 5s.
Consumer groups consume from the leader (the master) and follow it when it
changes. After the heal every node's own store is read back too, and a
node that lacks what the leader holds fails the run.

TLS: the nodes run with the TLS of their files (certificates from the
files; verify generates none). Verify's calls to the replication and raft
admin listeners present each node's own tls and secret_file; when the
transports serve TLS, its producers, read-back and groups need --tls-ca,
and --tls-cert and --tls-key under mutual TLS; see docs/verify.md.

Users: the files' security section (users, ACLs) stays. When the files
have users, verify's producers, read-back and groups authenticate as
--user (its password from --password-file or $FERRY_PASSWORD), or under
mutual TLS by a client certificate naming a certificate user; a run
without them is refused before anything starts.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			o.Pipeline, o.Pipelines, o.Exe = args[0], args, exe
			if o.Auth, err = verifyAuth(o.Auth.User, passwordFile); err != nil {
				return err
			}
			o.Auth.FromEnv = !cmd.Flags().Changed("user")
			o.Logger = quietSlog(hclog.Error) // the faults break streams on purpose
			if faults != "" {
				if o.Faults, err = verify.ParseFaults(faults, o.Duration); err != nil {
					return err
				}
			}
			if !asJSON {
				o.Progress = cmd.ErrOrStderr()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := verify.Run(ctx, o)
			if err != nil {
				return err
			}
			if o.OutDir != "" {
				if err := rep.WriteFiles(); err != nil {
					return fmt.Errorf("writing the results to %s: %w", o.OutDir, err)
				}
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else if err := rep.WriteTable(cmd.OutOrStdout()); err != nil {
				return err
			}
			if rep.Verdict != "pass" {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.Duration, "duration", 20*time.Second, "how long the producers send")
	f.IntVar(&o.Producers, "producers", 4, "producers, each with keys of its own")
	f.IntVar(&o.Keys, "keys", 1, "keys per producer, 1 to 10000: its messages take them in turn, and the order is checked per key")
	f.StringVar(&o.Mode, "mode", "sync", "their send mode: sync, async (--inflight in flight each) or oneway (promises nothing)")
	f.IntVar(&o.Inflight, "inflight", 256, "async: messages in flight per producer")
	f.Float64Var(&o.Rate, "rate", 0, "messages per second per producer (open loop: latency from when each was due); 0: as fast as answers allow")
	f.IntVar(&o.Size, "size", 256, "message body bytes (at least 64)")
	f.StringVar(&o.Topic, "topic", "", "the topic to send to (default: the pipeline's first)")
	f.IntVar(&o.Groups, "groups", 1, "consumer groups consuming the topic during the run (each a ferry consume process); 0: none")
	f.StringVar(&o.Delivery, "delivery", "push", "the groups' delivery: push or pull")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 2*time.Minute, "after the heal, how long each group may take to deliver every stored message; what it has not by then is missing")
	f.StringVar(&faults, "faults", "", "fault schedule, e.g. kill:broker@5s-7s,kill:storage@12s (default: one of each, placed by --seed)")
	f.Uint64Var(&o.Seed, "seed", 1, "places the default faults; the same seed, the same schedule")
	f.DurationVar(&o.LinkDelay, "link-delay", 100*time.Millisecond, "what a delay fault adds on each link between nodes")
	f.StringVar(&o.TLS.CA, "tls-ca", "", "the files' transports serve TLS: the CA (PEM) that signed the brokers' certificates, which must name 127.0.0.1")
	f.StringVar(&o.TLS.Cert, "tls-cert", "", "the files ask for mutual TLS (tls.client_ca_file): a client certificate (PEM) that CA trusts, for verify's producers, read-back and groups")
	f.StringVar(&o.TLS.Key, "tls-key", "", "the key (PEM) of --tls-cert")
	f.StringVar(&o.Auth.User, "user", os.Getenv(EnvUser), "the files have users (security): verify's producers, read-back and groups authenticate as this user (default $"+EnvUser+"), allowed Pub and Sub on the topic and Sub on Group:v* (a super user will do)")
	f.StringVar(&passwordFile, "password-file", "", "file whose first line is the password of --user (default: $"+EnvPassword+")")
	f.StringVar(&o.OutDir, "out", "", "keep results.json, latency.png and node.log in this directory")
	f.BoolVar(&asJSON, "json", false, "print the whole report as JSON instead of the table")
	return cmd
}

// verifyAuth is --user with its password (from --password-file, else
// $FERRY_PASSWORD); an error (exit status 2) when one comes without the
// other.
func verifyAuth(user, passwordFile string) (verify.ClientAuth, error) {
	t := tlsFlags{user: user, passwordFile: passwordFile}
	switch {
	case user == "" && passwordFile != "":
		return verify.ClientAuth{}, &exitError{code: 2, msg: "--password-file needs --user (or $" + EnvUser + ")"}
	case user == "":
		return verify.ClientAuth{}, nil
	}
	password, err := t.password()
	if err != nil {
		return verify.ClientAuth{}, err
	}
	return verify.ClientAuth{User: user, Password: password}, nil
}
