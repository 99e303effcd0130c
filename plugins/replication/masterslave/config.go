package masterslave

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security"
)

// Modes of the plugin, which are also its type names.
const (
	ModeAsync = "async"
	ModeSync  = "sync"
)

// Defaults and limits.
const (
	defaultMinReplicas = 1
	defaultTimeout     = 3 * time.Second
	heartbeatEvery     = 500 * time.Millisecond
	silenceLimit       = 3 * time.Second
	peerCheckEvery     = 2 * time.Second
	frameMessages      = 1024    // per frame
	frameBytes         = 1 << 20 // per frame, about
	maxUnacked         = 65536   // messages sent to a slave and not yet confirmed
)

// tailMessages is how many recent messages per queue the master keeps in
// memory for live shipping; older ones are read back from storage (a
// variable so that tests can make catch-up read storage).
var tailMessages = 16384

// Config is the plugin's config section.
type Config struct {
	// Listen is this node's replication address (host:port), required:
	// slaves follow a master here and `ferry cluster` talks to it.
	Listen string `json:"listen"`
	// Peers are the other nodes' replication addresses.
	Peers []string `json:"peers"`
	// MinReplicas (sync) is how many slaves must hold a batch before the
	// producer gets OK; default 1.
	MinReplicas int `json:"min_replicas"`
	// Timeout (sync) bounds the wait for them; default 3s.
	Timeout sdk.Duration `json:"timeout"`
	// ReplicateBeforeFlush ships a batch to the slaves as soon as the
	// master's store has written it, so that the master's fsync and the
	// replication overlap (RocketMQ's SYNC_MASTER + SYNC_FLUSH); default
	// false: a batch is shipped once the master made it durable. The
	// producer is answered only once both are done either way. With it, an
	// OS crash of the master can leave a slave holding messages the master
	// lost (never answered OK), which the master then refuses as diverged.
	ReplicateBeforeFlush bool `json:"replicate_before_flush"`
	// TLS secures the links between the nodes (and to `ferry cluster`)
	// with mutual TLS: this node's certificate, served and presented, and
	// the cluster CA that signed every node's. Empty: plaintext.
	TLS security.PeerTLS `json:"tls"`
	// SecretFile names the cluster secret every peer proves it knows
	// (HMAC challenge, never sent). Empty: none.
	SecretFile string `json:"secret_file"`
	// Masters lists the node ids this node takes for a master: a slave
	// follows, a master steps down to, and promote counts as reachable
	// only a master whose certificate names one of them (checked at the
	// TLS handshake of the link and against the master's answers).
	// Requires tls with verify_node_id, the only proof of a peer's node
	// id. Empty: any node of the cluster CA that answers as master.
	Masters []string `json:"masters"`
}

// link is the config's peer link section.
func (c Config) link() security.PeerLink {
	return security.PeerLink{TLS: c.TLS, SecretFile: c.SecretFile}
}

func defaultConfig() Config {
	return Config{MinReplicas: defaultMinReplicas, Timeout: sdk.Duration(defaultTimeout)}
}

func (p *Plugin) decode(config []byte) (Config, sdk.Problems) {
	cfg := defaultConfig()
	if ps := sdk.DecodeConfig(config, &cfg); ps != nil {
		return cfg, ps
	}
	var ps sdk.Problems
	if cfg.Listen == "" {
		ps = append(ps, sdk.Problem{Path: "listen", Message: "is required (host:port of this node's replication listener)"})
	} else if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		ps = append(ps, sdk.Problem{Path: "listen", Message: "must be host:port: " + err.Error()})
	}
	for i, a := range cfg.Peers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			ps = append(ps, sdk.Problem{Path: "peers[" + strconv.Itoa(i) + "]", Message: "must be host:port: " + err.Error()})
		}
	}
	if cfg.MinReplicas < 1 || cfg.MinReplicas > 16 {
		ps = append(ps, sdk.Problem{Path: "min_replicas", Message: "must be 1..16"})
	}
	if cfg.Timeout <= 0 {
		ps = append(ps, sdk.Problem{Path: "timeout", Message: "must be > 0"})
	}
	ps = append(ps, cfg.link().Validate("")...)
	seen := map[string]bool{}
	for i, id := range cfg.Masters {
		path := "masters[" + strconv.Itoa(i) + "]"
		switch {
		case id == "" || len(id) > 128 || strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
			ps = append(ps, sdk.Problem{Path: path, Message: fmt.Sprintf("%q is not a node id: 1 to 128 printable characters without spaces", id)})
		case seen[id]:
			ps = append(ps, sdk.Problem{Path: path, Message: fmt.Sprintf("node id %q is listed twice", id)})
		}
		seen[id] = true
	}
	if len(cfg.Masters) > 0 && !cfg.TLS.NodeIDsVerified() {
		ps = append(ps, sdk.Problem{Path: "masters", Message: "applies only with tls (cert_file, key_file, ca_file) and tls.verify_node_id not false: " +
			"a master's node id is proven only by its certificate (with secret_file alone every holder of the secret can answer as any node)"})
	}
	return cfg, ps
}
