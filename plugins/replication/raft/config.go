package raft

import (
	"net"
	"strconv"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// Peer is one voter of the raft group.
type Peer struct {
	// ID is the node's id (node.id of its pipeline).
	ID string `json:"id"`
	// Raft is its raft address (its `listen`).
	Raft string `json:"raft"`
	// Broker is where clients reach its broker (its transport's listen):
	// routing metadata names it when it leads.
	Broker string `json:"broker"`
	// Admin is its status address (its `admin`), for `ferry cluster`.
	Admin string `json:"admin"`
}

// Config is the raft plugin's config section.
type Config struct {
	// Listen is this node's raft address (host:port), required.
	Listen string `json:"listen"`
	// Admin is this node's ReplicaLink listener (host:port): `ferry
	// cluster status`, and the catch-up of a follower that was sent a
	// snapshot (Follow). Required when the group has more than one peer.
	Admin string `json:"admin"`
	// Peers are every voter of the group, this node included. Nodes with
	// no raft state bootstrap the group with exactly this list, unless
	// Join is set.
	Peers []Peer `json:"peers"`
	// Join: a node with no raft state does not bootstrap; it waits to be
	// added to a running group (`ferry cluster add-node`). Set it on a
	// node added to a group, and on one that lost its data dir (it must
	// rejoin empty: bootstrapping would make it a voter with no log).
	Join bool `json:"join"`
	// Timing: defaults give failover well under 2 s on a LAN.
	HeartbeatTimeout   sdk.Duration `json:"heartbeat_timeout"`
	ElectionTimeout    sdk.Duration `json:"election_timeout"`
	LeaderLeaseTimeout sdk.Duration `json:"leader_lease_timeout"`
	// ApplyTimeout bounds a produce's wait for its commit; default 10s.
	ApplyTimeout sdk.Duration `json:"apply_timeout"`
	// Snapshots and log compaction. Every snapshot_interval raft checks
	// whether snapshot_threshold entries were applied since the last
	// snapshot; if so it snapshots and compacts the log, keeping
	// trailing_logs entries. A follower that lacks a compacted entry is
	// sent a snapshot and fetches the messages it lacks from a peer's
	// store. Defaults: 1048576 trailing logs, threshold 65536, 30s.
	TrailingLogs      int64        `json:"trailing_logs"`
	SnapshotThreshold int64        `json:"snapshot_threshold"`
	SnapshotInterval  sdk.Duration `json:"snapshot_interval"`
	// StoreFsync: the node's store fsyncs each applied batch itself, as
	// its flush policy says (the old way: every message is fsynced twice,
	// in the raft log and in the store). Default false: committed entries
	// are durable in the raft log already, so the store takes them without
	// an fsync of its own where it can (sdk.Syncer: the file store), and
	// what a crash makes it lose is applied again from the log
	// (docs/replication.md, "One fsync per message").
	StoreFsync bool `json:"store_fsync"`
	// TLS secures raft traffic, the catch-up and `ferry cluster` on the
	// admin listener with mutual TLS: this node's certificate, served and
	// presented, and the cluster CA that signed every node's. Empty:
	// plaintext.
	TLS security.PeerTLS `json:"tls"`
	// SecretFile names the cluster secret every peer proves it knows
	// (HMAC challenge, never sent). Empty: none.
	SecretFile string `json:"secret_file"`
}

// link is the config's peer link section.
func (c Config) link() security.PeerLink {
	return security.PeerLink{TLS: c.TLS, SecretFile: c.SecretFile}
}

func defaultConfig() Config {
	return Config{
		HeartbeatTimeout:   sdk.Duration(500 * time.Millisecond),
		ElectionTimeout:    sdk.Duration(500 * time.Millisecond),
		LeaderLeaseTimeout: sdk.Duration(250 * time.Millisecond),
		ApplyTimeout:       sdk.Duration(10 * time.Second),
		TrailingLogs:       defaultTrailingLogs,
		SnapshotThreshold:  defaultSnapshotThreshold,
		SnapshotInterval:   sdk.Duration(defaultSnapshotInterval),
	}
}

func decode(config []byte) (Config, sdk.Problems) {
	cfg := defaultConfig()
	if ps := sdk.DecodeConfig(config, &cfg); ps != nil {
		return cfg, ps
	}
	var ps sdk.Problems
	addr := func(path, v string, required bool) {
		if v == "" {
			if required {
				ps = append(ps, sdk.Problem{Path: path, Message: "is required (host:port)"})
			}
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			ps = append(ps, sdk.Problem{Path: path, Message: "must be host:port: " + err.Error()})
		}
	}
	addr("listen", cfg.Listen, true)
	// A follower sent a snapshot fetches what it lacks from its peers'
	// admin listeners: without them it could never catch up.
	multi := len(cfg.Peers) > 1
	addr("admin", cfg.Admin, multi)
	if len(cfg.Peers) == 0 {
		ps = append(ps, sdk.Problem{Path: "peers", Message: "is required: every voter, this node included"})
	}
	ids := map[string]bool{}
	for i, p := range cfg.Peers {
		base := "peers[" + strconv.Itoa(i) + "]"
		if p.ID == "" {
			ps = append(ps, sdk.Problem{Path: base + ".id", Message: "is required"})
		} else if ids[p.ID] {
			ps = append(ps, sdk.Problem{Path: base + ".id", Message: "repeats " + strconv.Quote(p.ID)})
		}
		ids[p.ID] = true
		addr(base+".raft", p.Raft, true)
		addr(base+".broker", p.Broker, true)
		addr(base+".admin", p.Admin, multi)
	}
	for path, d := range map[string]sdk.Duration{"heartbeat_timeout": cfg.HeartbeatTimeout, "election_timeout": cfg.ElectionTimeout,
		"leader_lease_timeout": cfg.LeaderLeaseTimeout, "apply_timeout": cfg.ApplyTimeout} {
		if d <= 0 {
			ps = append(ps, sdk.Problem{Path: path, Message: "must be > 0"})
		}
	}
	if cfg.TrailingLogs < 0 {
		ps = append(ps, sdk.Problem{Path: "trailing_logs", Message: "must be >= 0"})
	}
	if cfg.SnapshotThreshold < 1 {
		ps = append(ps, sdk.Problem{Path: "snapshot_threshold", Message: "must be >= 1"})
	}
	if cfg.SnapshotInterval < sdk.Duration(minSnapshotInterval) {
		ps = append(ps, sdk.Problem{Path: "snapshot_interval", Message: "must be >= " + minSnapshotInterval.String()})
	}
	if cfg.LeaderLeaseTimeout > cfg.HeartbeatTimeout {
		ps = append(ps, sdk.Problem{Path: "leader_lease_timeout", Message: "must not exceed heartbeat_timeout"})
	}
	ps = append(ps, cfg.link().Validate("")...)
	return cfg, ps
}
