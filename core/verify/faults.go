package verify

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// Fault is one scheduled fault: a pause (kind "pause": SIGSTOP of the node,
// target "broker", or of one plugin process from At, SIGCONT at Until);
// kill -9 of the node (target "broker", with
// its plugins: the node is down from At until Until, then started again on
// the same data) or of one of its plugin processes (target "storage" or
// "transport": the node's plugin host restarts it); or a power loss (kind
// "power-loss", target "broker"): the file store drops what it did not
// fsync and dies, the rest of the node is killed, and it is started again at
// Until.
//
// In a cluster (several pipeline files) the target of a kill or a pause is
// a node (its node.id), "leader" (the raft leader or the master when the
// fault begins) or "follower" (a node following that leader: a raft
// follower, a slave); storage, transport and replication name that plugin of
// the leader. The link faults act on every link into and out of their
// target node, through the proxy verify puts on each: "partition" drops
// every byte from At until Until, "delay" holds each chunk Delay, "reset"
// closes the links at At (the peers reconnect).
type Fault struct {
	Kind string `json:"kind" jsonschema:"enum=kill,enum=pause,enum=power-loss,enum=partition,enum=delay,enum=reset"`
	// Target: broker, storage, transport, replication, consumer; in a
	// cluster also leader, follower or a node's id.
	Target string        `json:"target"`
	At     time.Duration `json:"at_ns"`
	Until  time.Duration `json:"until_ns"` // broker: when it is restarted; else = At
	// Delay is what a delay fault adds to each chunk on the links.
	Delay time.Duration `json:"delay_ns,omitempty"`
}

// link says whether f is a fault of the links between nodes.
func (f Fault) link() bool { return f.Kind == "partition" || f.Kind == "delay" || f.Kind == "reset" }

func (f Fault) String() string {
	if f.Kind == "power-loss" && f.Target == "broker" {
		return fmt.Sprintf("power-loss@%s-%s", f.At, f.Until)
	}
	if f.Kind == "power-loss" {
		return fmt.Sprintf("power-loss:%s@%s-%s", f.Target, f.At, f.Until)
	}
	if f.Kind == "pause" || f.Kind == "partition" || f.Kind == "delay" {
		return fmt.Sprintf("%s:%s@%s-%s", f.Kind, f.Target, f.At, f.Until)
	}
	if f.Until > f.At {
		return fmt.Sprintf("%s:%s@%s-%s", f.Kind, f.Target, f.At, f.Until)
	}
	return fmt.Sprintf("%s:%s@%s", f.Kind, f.Target, f.At)
}

// faultTargets are a single node's targets.
var faultTargets = map[string]bool{"broker": true, "storage": true, "transport": true, "replication": true, "consumer": true}

// pluginTargets are the plugin processes a fault can hit.
var pluginTargets = map[string]bool{"storage": true, "transport": true, "replication": true}

var faultKinds = map[string]bool{"kill": true, "pause": true, "power-loss": true, "partition": true, "delay": true, "reset": true}

// validTarget: a known target, or a node's id (letters, digits, - _ .).
func validTarget(t string) bool {
	if t == "" {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// ParseFaults reads a schedule: comma-separated KIND:TARGET@AT[-UNTIL], with
// times from the workload's start (Go durations: 5s, 1500ms), e.g.
// "kill:broker@5s-7s,kill:storage@12s,power-loss@15s". KIND is kill; TARGET
// is broker (the node with its plugins; down until UNTIL, default AT+1s),
// storage or transport (one plugin process, restarted by the node at once).
// power-loss@AT[-UNTIL] takes no target: the node loses power; on a
// cluster power-loss:NODE@AT[-UNTIL] names the node (its id, leader or
// follower), or
// power-loss:all every node at once (a site's power cut).
// pause:TARGET@AT[-UNTIL] stops the node (or one plugin process) with
// SIGSTOP and continues it at UNTIL (default AT+1s). Faults may not overlap.
// Every time must fall within the run's duration.
func ParseFaults(spec string, duration time.Duration) ([]Fault, error) {
	var out []Fault
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		what, when, ok := strings.Cut(item, "@")
		if !ok {
			return nil, fmt.Errorf("fault %q: want KIND:TARGET@TIME, e.g. kill:broker@5s-7s, or power-loss@TIME", item)
		}
		kind, target, ok := strings.Cut(what, ":")
		if what == "power-loss" {
			kind, target, ok = what, "broker", true
		}
		if !ok || !faultKinds[kind] {
			return nil, fmt.Errorf("fault %q: the kind must be kill, pause, power-loss, partition, delay or reset", item)
		}
		if !validTarget(target) {
			return nil, fmt.Errorf("fault %q: target %q is not broker, storage, transport, replication, consumer, leader, follower or a node's id", item, target)
		}
		from, to, ranged := strings.Cut(when, "-")
		at, err := time.ParseDuration(from)
		if err != nil || at < 0 {
			return nil, fmt.Errorf("fault %q: bad time %q (a duration such as 5s)", item, from)
		}
		if kind == "power-loss" && (pluginTargets[target] || target == "consumer") {
			return nil, fmt.Errorf("fault %q: a power loss hits a node (broker, or on a cluster a node's id or leader), not %s", item, target)
		}
		if target == "consumer" && kind != "kill" {
			return nil, fmt.Errorf("fault %q: a consumer can only be killed", item)
		}
		if (kind == "partition" || kind == "delay" || kind == "reset") && (pluginTargets[target] || target == "consumer" || target == "broker") {
			return nil, fmt.Errorf("fault %q: a link fault names a node of a cluster (its id, or leader)", item)
		}
		f := Fault{Kind: kind, Target: target, At: at, Until: at}
		if (kind == "kill" && !pluginTargets[target] && target != "consumer") || kind == "pause" || kind == "partition" || kind == "delay" {
			f.Until = at + time.Second
		}
		if ranged {
			until, err := time.ParseDuration(to)
			if err != nil || until <= at {
				return nil, fmt.Errorf("fault %q: bad end %q (a duration after %s)", item, to, at)
			}
			if pluginTargets[target] && kind == "kill" {
				return nil, fmt.Errorf("fault %q: a plugin kill takes no end time (a killed plugin is restarted by its node)", item)
			}
			if kind == "reset" {
				return nil, fmt.Errorf("fault %q: a reset takes no end time (the links close at once and the peers reconnect)", item)
			}
			f.Until = until
		}
		if f.Until >= duration {
			return nil, fmt.Errorf("fault %q: ends at %s, not within the run's %s", item, f.Until, duration)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At < out[j].At })
	// Faults of one sort may not overlap; a link fault may overlap a
	// node's fault (the slave cut off while the master dies).
	for _, link := range []bool{false, true} {
		var prev *Fault
		for i := range out {
			if out[i].link() != link {
				continue
			}
			if prev != nil && out[i].At < prev.Until {
				return nil, fmt.Errorf("fault %s starts while %s lasts", out[i], *prev)
			}
			prev = &out[i]
		}
	}
	return out, nil
}

// DefaultFaults is the schedule of a run that names none: a storage kill at
// about a quarter of the run, the node killed at about half for a second,
// the consumers killed at about three fifths (with consumers), a transport
// kill at about three quarters, each moved by up to a tenth of the run by
// the seed.
func DefaultFaults(duration time.Duration, seed uint64, consumers bool) []Fault {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	jitter := func(frac float64) time.Duration {
		return time.Duration((frac + (r.Float64()-0.5)/10) * float64(duration)).Round(time.Millisecond)
	}
	broker := jitter(0.5)
	out := []Fault{
		{Kind: "kill", Target: "storage", At: jitter(0.25), Until: 0},
		{Kind: "kill", Target: "broker", At: broker, Until: broker + min(time.Second, duration/10)},
	}
	if c := jitter(0.62); consumers && c > broker+min(time.Second, duration/10) {
		out = append(out, Fault{Kind: "kill", Target: "consumer", At: c})
	}
	return append(out, Fault{Kind: "kill", Target: "transport", At: jitter(0.8), Until: 0})
}

// ForCluster aims a schedule made for one node (DefaultFaults) at a
// cluster: its node kill hits the leader of the moment ("broker" names no
// node of a cluster), its plugin kills stay as they are.
func ForCluster(fs []Fault) []Fault {
	out := make([]Fault, len(fs))
	for i, f := range fs {
		if f.Target == "broker" {
			f.Target = "leader"
		}
		out[i] = f
	}
	return out
}

func fixUntil(fs []Fault) []Fault {
	for i := range fs {
		if fs[i].Until < fs[i].At {
			fs[i].Until = fs[i].At
		}
	}
	return fs
}

// EnvPowerLoss names, in the environment of a node verify starts for a
// power-loss fault, the token file that lets the node's file store arm its
// power-loss hook (cmd/ferry: installFaults). The file is private (0600) and
// holds "PowerLossMagic PID NONCE", PID being the running ferry verify.
const EnvPowerLoss = "FERRY_VERIFY_POWER_LOSS"

// PowerLossMagic begins a power-loss token.
const PowerLossMagic = "ferry-verify-power-loss"
