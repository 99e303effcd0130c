package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/plugintest"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/sdk/sdktest"
	"github.com/ferrymq/ferry/internal/freeport"
)

// newPluginTestCmd returns `ferry plugin test`.
func newPluginTestCmd() *cobra.Command {
	var configFile, run, client, addr string
	var dirs []string
	var durable, verbose, snapshots bool
	var bound, consensusBound time.Duration
	var syncReplicas int
	cmd := &cobra.Command{
		Use:   "test KIND PATH|TYPE",
		Short: "Run the conformance suite of KIND against a plugin executable (any language) or a plugin type",
		Long: `Runs the conformance cases of KIND against the plugin: an executable at PATH
(anything with a / in it), or a TYPE built in or found in the --dir directories.
Every case starts the plugin with the plugin host exactly as ferry run does
(several times in the cases that restart it), on a fresh data directory, and
configures it with the section in --config (YAML or JSON, what goes under
plugins.KIND.config). Prints every case with PASS, FAIL and why, or SKIP and
why; exits 0 only if no case failed.

KIND is storage, transport, replication or stage. The transport and replication
suites serve the plugin a test core that plays the broker and run every case
on the shared-memory rings and on gRPC. transport: --client broker drives the
client cases through ferry.v1.Broker at --addr, or at the free address that
replaces $ADDR in the config file; without a client only the host-contract
cases run. replication: two plugin processes per case, node 0 the master;
each node's section is the config file's with $LISTEN (its address) and
$PEERS (the other's) replaced; --sync-replicas is the plugin's level. A
consensus plugin (mode replicate_first, like raft) gets three plugin
processes per case: a config file with $MEMBERS is taken as one, each
member's section with $LISTEN, $ADMIN (its admin listener), $NODE (its node
id) and $MEMBERS (every member as {"id", "raft", "admin", "broker"}, the raft
plugin's peers) replaced; --snapshots says the config makes the plugin
compact its log after a few entries (the snapshot catch-up case). The
built-in raft type gets such a section of its own when none is given.
docs/plugins.md says what each case checks.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, target := args[0], args[1]
			if kind != sdk.KindStorage && kind != sdk.KindTransport && kind != sdk.KindReplication && kind != sdk.KindStage {
				return fmt.Errorf("plugin kind %q: ferry plugin test has suites for %s, %s, %s and %s", kind, sdk.KindStorage, sdk.KindTransport, sdk.KindReplication, sdk.KindStage)
			}
			var section []byte
			if configFile != "" {
				var err error
				if section, err = readSection(configFile); err != nil {
					return err
				}
			}
			tmp, err := os.MkdirTemp("", "ferry-plugin-test")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			level := hclog.Off
			if verbose {
				level = hclog.Info
			}
			t := plugintest.Target{Registry: builtins(), Type: target, Dirs: dirs,
				Logger: hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: level, Output: cmd.ErrOrStderr()})}
			if strings.Contains(target, "/") {
				dir, typ, err := plugintest.ForExecutable(kind, target, tmp)
				if err != nil {
					return err
				}
				t.Type, t.Dirs = typ, []string{dir}
			} else if !builtins().Known(kind, target, dirs) {
				return fmt.Errorf("no %s plugin %q: not built in (%s) and no %s in --dir %v",
					kind, target, strings.Join(builtins().Types(kind, nil), ", "), pluginhost.ExecutableName(kind, target), dirs)
			}
			out := cmd.OutOrStdout()
			failed, n := 0, 0
			start := time.Now()
			caseStart := time.Now()
			report := func(r sdktest.Result) {
				n++
				d := time.Since(caseStart).Round(time.Millisecond)
				caseStart = time.Now()
				switch r.Status() {
				case "PASS":
					fmt.Fprintf(out, "PASS  %s (%s)\n", r.Name, d)
				case "SKIP":
					why, _ := sdktest.Skipped(r.Err)
					fmt.Fprintf(out, "SKIP  %s: %s\n", r.Name, why)
				default:
					failed++
					fmt.Fprintf(out, "FAIL  %s (%s): %v\n", r.Name, d, r.Err)
				}
			}
			switch kind {
			case sdk.KindStorage:
				f := sdktest.StorageFeatures{Config: section, Durable: durable}
				plugintest.Storage(context.Background(), t, f, run, tmp, report)
			case sdk.KindTransport:
				f, err := transportFeatures(out, target, configFile != "", section, client, addr)
				if err != nil {
					return err
				}
				f.Bound = bound
				plugintest.Transport(context.Background(), t, f, run, tmp, report)
			case sdk.KindReplication:
				f := replicationFeatures(target, configFile != "", section, syncReplicas, snapshots)
				f.Bound, f.ConsensusBound = bound, consensusBound
				plugintest.Replication(context.Background(), t, f, run, tmp, report)
			case sdk.KindStage:
				plugintest.Stage(context.Background(), t, sdktest.StageFeatures{Config: section}, run, tmp, report)
			}
			if n == 0 {
				return fmt.Errorf("--run %q selects no case", run)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d %s cases failed (%s)", failed, n, kind, time.Since(start).Round(time.Millisecond))
			}
			fmt.Fprintf(out, "ok  %d %s cases (%s)\n", n, kind, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "file with the plugin's config section (YAML or JSON)")
	cmd.Flags().StringSliceVar(&dirs, "dir", nil, "plugin directories to find TYPE in")
	cmd.Flags().BoolVar(&durable, "durable", false, "storage: the plugin claims durability: also run the restart cases")
	cmd.Flags().StringVar(&client, "client", "", "transport: the client the client-driven cases use: broker (the transport serves ferry.v1.Broker gRPC, plaintext) or none (host-contract cases only); default broker for the built-in grpc type, none otherwise")
	cmd.Flags().StringVar(&addr, "addr", "", "transport: where the transport configured by --config listens, for --client; default the free address that replaces $ADDR in the config file")
	cmd.Flags().DurationVar(&bound, "bound", sdktest.DefaultBound, "transport, replication: how long the plugin may take to pass on a drain or a cancellation, connect a slave or ship a batch")
	cmd.Flags().DurationVar(&consensusBound, "consensus-bound", sdktest.DefaultConsensusBound, "replication, consensus plugins: how long the plugin may take to elect a leader, commit a batch or catch a member up")
	cmd.Flags().IntVar(&syncReplicas, "sync-replicas", -1, "replication: replicas a batch must reach before OK (the plugin's configured level; 0: asynchronous); default 1 for the built-in sync type, 0 otherwise")
	cmd.Flags().BoolVar(&snapshots, "snapshots", false, "replication, consensus plugins: the --config section makes the plugin compact its log after a few entries, and its status reports log_first_index: also run the snapshot catch-up case (default true for the built-in raft type without --config)")
	cmd.Flags().StringVar(&run, "run", "", "only these cases (comma-separated names; a trailing * matches a prefix; transport and replication cases also by PLANE/NAME, e.g. grpc/ConsensusElection)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show the host's and the plugin's log lines on stderr")
	return cmd
}

// readSection reads a plugin's config section from a YAML or JSON file and
// returns it as JSON, as the plugin receives it.
func readSection(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	m, err := yaml.Parser().Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("--config %s: not YAML or JSON: %w", path, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

// transportFeatures makes the transport suite's features from the command's
// flags and says on out which cases the client can drive. A config section
// holding $ADDR gets a free loopback address there (per run); the built-in
// grpc and http types get a section of their own when none is given.
func transportFeatures(out io.Writer, target string, haveConfig bool, section []byte, client, addr string) (sdktest.TransportFeatures, error) {
	if !haveConfig {
		switch target {
		case "grpc":
			section = []byte(`{"listen": "$ADDR", "shutdown_timeout": "30s"}`)
		case "http":
			section = []byte(`{"listen": "$ADDR"}`)
		}
	}
	if client == "" {
		client = "none"
		if target == "grpc" {
			client = "broker"
		}
	}
	if bytes.Contains(section, []byte("$ADDR")) {
		free, err := freeAddr()
		if err != nil {
			return sdktest.TransportFeatures{}, err
		}
		section = bytes.ReplaceAll(section, []byte("$ADDR"), []byte(free))
		if addr == "" {
			addr = free
		}
	}
	f := sdktest.TransportFeatures{Config: section}
	switch client {
	case "none":
		fmt.Fprintf(out, "host-contract cases only (--client none): the client-driven cases need a client of the transport's protocol\n")
	case "broker":
		if addr == "" {
			return f, fmt.Errorf("--client broker needs the address the transport listens on: --addr, or $ADDR in the --config file")
		}
		fmt.Fprintf(out, "host-contract and client-driven cases, the client speaking ferry.v1.Broker gRPC to %s\n", addr)
		f.Client = sdktest.BrokerClient(addr)
	default:
		return f, fmt.Errorf("--client %q: must be broker or none", client)
	}
	return f, nil
}

// freeAddr returns a loopback address whose port was free a moment ago
// (internal/freeport).
func freeAddr() (string, error) {
	a, err := freeport.Addrs(1)
	if err != nil {
		return "", err
	}
	return a[0], nil
}

// raftTestSection is the built-in raft type's section for `ferry plugin
// test` without --config: the plugin's default timing (heartbeat and
// election 500ms, as a user's cluster runs; its plugin processes run
// outside the race detector, and a leadership change while a case runs is
// tried again), and a log compacted every few entries, for the snapshot
// catch-up case.
const raftTestSection = `{"listen": "$LISTEN", "admin": "$ADMIN", "peers": "$MEMBERS",
	"heartbeat_timeout": "500ms", "election_timeout": "500ms", "leader_lease_timeout": "250ms",
	"snapshot_threshold": 4, "trailing_logs": 0, "snapshot_interval": "20ms"}`

// replicationFeatures makes the replication suite's features: node i's
// section is the config file's with $LISTEN replaced by the node's address
// and $PEERS by the list of the other nodes' addresses; the built-in sync
// and async types get a section of their own when none is given. A section
// with $MEMBERS is a consensus plugin's (sdktest.ConsensusSection); the built-in raft
// type gets raftTestSection.
func replicationFeatures(target string, haveConfig bool, section []byte, syncReplicas int, snapshots bool) sdktest.ReplicationFeatures {
	if !haveConfig && (target == "sync" || target == "async") {
		section = []byte(`{"listen": "$LISTEN", "peers": "$PEERS", "timeout": "1s"}`)
	}
	if !haveConfig && target == "raft" {
		section, snapshots = []byte(raftTestSection), true
	}
	if bytes.Contains(section, []byte("$MEMBERS")) {
		return sdktest.ReplicationFeatures{ConsensusConfig: sdktest.ConsensusSection(section), Snapshots: snapshots}
	}
	if syncReplicas < 0 {
		syncReplicas = 0
		if target == "sync" {
			syncReplicas = 1
		}
	}
	f := sdktest.ReplicationFeatures{SyncReplicas: syncReplicas}
	if bytes.Contains(section, []byte("$LISTEN")) {
		f.NodeConfig = func(i int, addrs []string) []byte {
			var peers []string
			for j, a := range addrs {
				if j != i {
					peers = append(peers, a)
				}
			}
			p, _ := json.Marshal(peers)
			b := bytes.ReplaceAll(section, []byte(`"$PEERS"`), p)
			b = bytes.ReplaceAll(b, []byte("$PEERS"), p)
			return bytes.ReplaceAll(b, []byte("$LISTEN"), []byte(addrs[i]))
		}
	}
	return f
}
