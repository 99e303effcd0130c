package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// Options is one verify run.
type Options struct {
	Pipeline string // the pipeline file of a single node
	// Pipelines, when more than one, are the files of a cluster's nodes
	// (raft, or a master and its slaves); Pipeline is then ignored.
	Pipelines []string
	// LinkDelay is what a delay fault adds on each link (default 100ms).
	LinkDelay time.Duration
	Exe       string        // the ferry binary that runs the node
	Topic     string        // default: the pipeline's first topic
	Duration  time.Duration // of the workload
	Producers int           // producers
	// Keys is how many keys each producer sends under, in turn (default
	// 1): a key is one producer's, so its order is the order sent.
	Keys     int
	Mode     string // their send mode: sync (default), async or oneway
	Inflight int    // async: messages in flight per producer (default 256)
	// Rate paces each producer at this many messages per second (open
	// loop: each send's latency counts from when it was due, so a broker
	// that falls behind shows it); 0 sends as fast as answers allow.
	Rate     float64
	Size     int     // message body bytes
	Faults   []Fault // nil: DefaultFaults
	Seed     uint64
	OutDir   string // where results.json, latency.png and node.log go; "" = a temporary dir, removed
	Groups   int    // consumer groups that consume during the run, each a ferry consume process
	Delivery string // their delivery: push or pull
	// DrainTimeout bounds each group's drain after the heal: a stored
	// message it has not delivered by then is missing (default 2m).
	DrainTimeout time.Duration
	Progress     io.Writer    // a line every few seconds; nil = none
	Logger       *slog.Logger // the producers' client's; nil = slog's default
	// TLS is what verify's clients present when the files' transports
	// serve TLS (--tls-ca, --tls-cert, --tls-key).
	TLS ClientTLS
	// Auth is the user verify's clients authenticate as when the files
	// have users (--user, --password-file).
	Auth ClientAuth
}

// Report is a run's whole result (results.json).
type Report struct {
	Pipeline string `json:"pipeline"`
	// Pipelines are a cluster run's files, one a node; Replication its
	// replication (raft, sync or async), Nodes their ids.
	Pipelines   []string `json:"pipelines,omitempty"`
	Replication string   `json:"replication,omitempty"`
	Nodes       []string `json:"nodes,omitempty"`
	// LostAtFailover of the lost messages were acknowledged by a master
	// that died before its slave was promoted: the lag async replication
	// may lose. FailoverLag is the longest time from such an ack to the
	// master's death: how far behind the slave was.
	LostAtFailover int           `json:"lost_at_failover"`
	FailoverLag    time.Duration `json:"failover_lag_ns"`
	RunID          string        `json:"run_id"`
	Seed           uint64        `json:"seed"`
	Topic          string        `json:"topic"`
	Storage        string        `json:"storage"`
	// User is who verify's clients authenticated as, on files with
	// users (security); empty on open nodes.
	User  string `json:"user,omitempty"`
	Flush string `json:"flush,omitempty"`
	// FlushInterval is the file store's flush_interval, with power-loss
	// faults: under flush async, what was acknowledged within it before
	// a power loss may be lost.
	FlushInterval time.Duration `json:"flush_interval_ns,omitempty"`
	// LostAtPowerLoss of the lost messages were acknowledged within
	// FlushInterval (plus PowerLossSlack) before a power loss: what flush
	// async permits. LossWindow is the longest such time.
	LostAtPowerLoss int            `json:"lost_at_power_loss"`
	LossWindow      time.Duration  `json:"loss_window_ns"`
	Duration        time.Duration  `json:"duration_ns"`
	Producers       int            `json:"producers"`
	Keys            int            `json:"keys_per_producer"`
	Mode            string         `json:"mode"`
	Rate            float64        `json:"rate,omitempty"`
	Size            int            `json:"size"`
	Faults          []FaultRecord  `json:"faults"`
	Result          *Result        `json:"result"`
	Groups          []*GroupResult `json:"groups"`
	// NodeStores are a cluster run's nodes' own stores, each read back
	// after healing (the leader's is Result).
	NodeStores []*NodeStore  `json:"node_stores,omitempty"`
	Verdict    string        `json:"verdict" jsonschema:"enum=pass,enum=fail"` // pass | fail
	Reasons    []string      `json:"reasons,omitempty"`
	LatencyP50 time.Duration `json:"latency_p50_ns"`
	LatencyP99 time.Duration `json:"latency_p99_ns"`
	LatencyMax time.Duration `json:"latency_max_ns"`
	// AckRate is the acknowledgements per second in each RateBucket of the
	// run, from its start.
	AckRate    []float64     `json:"ack_rate"`
	RateBucket time.Duration `json:"ack_rate_bucket_ns"`
	// Sends are every send's outcome, in start order, for the picture and
	// for a reader's own analysis.
	Sends []SendRecord `json:"sends"`
	Dir   string       `json:"-"`
}

// FaultRecord is a fault as it happened.
type FaultRecord struct {
	Fault
	// Injected and Healed are from the workload's start: the node was
	// serving again (broker), or the first send after the fault was
	// acknowledged (a plugin).
	Injected time.Duration `json:"injected_ns"`
	Healed   time.Duration `json:"healed_ns"`
	// Resumed is when a paused process was continued.
	Resumed time.Duration `json:"resumed_ns,omitempty"`
	// Node is the cluster node the fault hit (a leader as it was then).
	Node string `json:"node,omitempty"`
	// Failover: the master died for good and a slave was promoted
	// (master–slave); Detail is the promotion's answer.
	Failover bool   `json:"failover,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Error    string `json:"error,omitempty"`
}

// SendRecord is a Send in the report: times from the workload's start.
type SendRecord struct {
	ID      string        `json:"id"`
	Start   time.Duration `json:"start_ns"`
	Latency time.Duration `json:"latency_ns"`
	Outcome string        `json:"outcome" jsonschema:"enum=ok,enum=weak,enum=unknown,enum=refused,enum=oneway"`
	Status  string        `json:"status,omitempty"`
	Error   string        `json:"error,omitempty"`
}

// Run runs a verify: starts the node of o.Pipeline on a temporary data dir,
// drives the workload while the faults happen, heals, reads the topic back
// and checks it. The error is for a run that could not be made; a run that
// found a broken promise returns a Report whose Verdict is fail.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Duration <= 0 || o.Producers <= 0 || o.Size < 64 {
		return nil, fmt.Errorf("verify: duration, producers must be positive and size at least 64 bytes")
	}
	if o.Keys == 0 {
		o.Keys = 1
	}
	if o.Keys < 0 || o.Keys > 10000 {
		return nil, fmt.Errorf("verify: keys %d: want 1 to 10000 keys per producer", o.Keys)
	}
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		return nil, fmt.Errorf("verify: rate %v: want messages per second per producer, or 0 for as fast as answers allow", o.Rate)
	}
	dir := o.OutDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "ferry-verify")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	nodeDir, err := os.MkdirTemp(dir, "node")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(nodeDir) // the node's data; results stay
	var (
		p  *prepared
		cl *cluster
	)
	if len(o.Pipelines) > 1 {
		if cl, err = newCluster(o.Exe, o.Pipelines, nodeDir, dir); err != nil {
			return nil, err
		}
		defer cl.stop() // the nodes, their logs and the proxies
		p = cl.members[0].n.p
		o.Pipeline = strings.Join(o.Pipelines, " ")
	} else {
		if len(o.Pipelines) == 1 {
			o.Pipeline = o.Pipelines[0]
		}
		if p, err = prepare(o.Pipeline, nodeDir); err != nil {
			return nil, err
		}
	}
	topic := o.Topic
	if topic == "" {
		topic = p.pipeline.Topics[0].Name
	}
	if !hasTopic(p, topic) {
		return nil, fmt.Errorf("verify: the pipeline declares no topic %q", topic)
	}
	faults := o.Faults
	if faults == nil {
		faults = DefaultFaults(o.Duration, o.Seed, o.Groups > 0)
		if cl != nil {
			faults = ForCluster(faults)
		}
	}
	for _, f := range faults {
		if f.Target == "consumer" && o.Groups == 0 {
			return nil, fmt.Errorf("verify: fault %s: the run has no consumer groups (--groups)", f)
		}
	}
	if o.Delivery == "" {
		o.Delivery = "push"
	}
	if o.DrainTimeout < 0 {
		return nil, fmt.Errorf("verify: drain timeout %s: want a positive duration (or 0 for the default 2m)", o.DrainTimeout)
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 2 * time.Minute
	}
	switch o.Mode {
	case "":
		o.Mode = "sync"
	case "sync", "async", "oneway":
	default:
		return nil, fmt.Errorf("verify: send mode %q: want sync, async or oneway", o.Mode)
	}
	if o.Inflight <= 0 {
		o.Inflight = 256
	}
	faults = fixUntil(faults)
	if o.LinkDelay <= 0 {
		o.LinkDelay = 100 * time.Millisecond
	}
	for i, f := range faults {
		if f.Kind == "delay" {
			faults[i].Delay = o.LinkDelay
		}
		switch {
		case cl != nil:
			err = cl.check(f)
		case f.link():
			err = fmt.Errorf("verify: fault %s: a single node has no links between nodes (give every pipeline file of a cluster)", f)
		case !faultTargets[f.Target]:
			err = fmt.Errorf("verify: fault %s: target %q is not one of broker, storage, transport, replication, consumer (leader, follower and node ids name nodes of a cluster)", f, f.Target)
		case f.Target == "replication" && p.pipeline.Plugins.Replication.Type == "none":
			err = fmt.Errorf("verify: fault %s: the pipeline has no replication plugin process", f)
		}
		if err != nil {
			return nil, err
		}
	}
	if p.pipeline.Plugins.Storage.Type == "memory" {
		for _, f := range faults {
			if f.Target == "broker" || f.Target == "storage" {
				return nil, fmt.Errorf("verify: fault %s: the memory store keeps nothing across the death of its process, by design; verify a durable store (file), or name only transport faults", f)
			}
		}
	}
	rep := &Report{
		Pipeline: o.Pipeline, RunID: fmt.Sprintf("v%x", time.Now().UnixNano()&0xffffffffff), Seed: o.Seed,
		Topic: topic, Storage: p.pipeline.Plugins.Storage.Type, Duration: o.Duration, Producers: o.Producers, Keys: o.Keys, Mode: o.Mode, Rate: o.Rate, Size: o.Size, Dir: dir,
	}
	if f, ok := p.pipeline.Plugins.Storage.Config["flush"].(string); ok {
		rep.Flush = f
	}
	var (
		sys   system
		n     *node
		nodes []*node // the nodes a power loss may hit
	)
	if cl != nil {
		for _, m := range cl.members {
			nodes = append(nodes, m.n)
		}
	} else {
		if n, err = newNode(o.Exe, p, filepath.Join(dir, "node.log")); err != nil {
			return nil, err
		}
		nodes = []*node{n}
	}
	// Verify's clients speak the brokers' TLS (the same credentials for
	// every node).
	var ps []*prepared
	for _, nd := range nodes {
		ps = append(ps, nd.p)
	}
	tlsCreds, err := brokerTLS(o.TLS, ps)
	if err != nil {
		return nil, err
	}
	// And, when the files have users, authenticate as the user given.
	auth, err := brokerAuth(o.Auth, o.TLS, ps)
	if err != nil {
		return nil, err
	}
	for _, pp := range ps {
		pp.creds = brokerCreds{tls: tlsCreds, auth: auth}
	}
	if auth != nil || o.TLS.Cert != "" && p.pipeline.Security.Enabled() {
		rep.User = o.Auth.User
		if rep.User == "" {
			rep.User = "(the client certificate's)"
		}
	}
	for _, f := range faults {
		if f.Kind != "power-loss" {
			continue
		}
		for _, nd := range nodes {
			if st := nd.p.pipeline.Plugins.Storage.Type; st != "file" {
				return nil, fmt.Errorf("verify: fault %s needs the file store (its power-loss hook); the storage of node %q is %q", f, nd.p.pipeline.Node.ID, st)
			}
		}
		// One token for every node: each node's store arms its hook.
		token, err := powerLossToken(nodeDir)
		if err != nil {
			return nil, err
		}
		for _, nd := range nodes {
			nd.env = append(nd.env, EnvPowerLoss+"="+token)
		}
		rep.FlushInterval = flushInterval(p)
		break
	}
	if cl != nil {
		rep.Pipelines, rep.Replication = o.Pipelines, cl.mode
		for _, m := range cl.members {
			rep.Nodes = append(rep.Nodes, m.id)
		}
		sys = cl
		if err := cl.start(ctx); err != nil {
			return nil, err
		}
	} else {
		sys = n
		defer n.stop()
		if err := n.start(ctx); err != nil {
			return nil, err
		}
	}
	var copts []client.Option
	if p.creds.tls != nil {
		copts = append(copts, client.WithTLS(o.TLS.CA, o.TLS.Cert, o.TLS.Key))
	}
	if p.creds.auth != nil {
		copts = append(copts, client.WithCredentials(o.Auth.User, o.Auth.Password))
	}
	if o.Logger != nil {
		copts = append(copts, client.WithLogger(o.Logger))
	}
	c, err := client.DialCluster(ctx, sys.seeds(), copts...)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	clog, err := os.OpenFile(filepath.Join(dir, "consumers.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer clog.Close()
	var consumers []*consumer
	// A group's members join the node's broker; on a cluster the
	// leader's (the master's), and they follow it when it changes.
	broker := func() string { return p.addr }
	if cl != nil {
		broker = cl.leaderBroker(ctx)
	}
	fctx, stopFollow := context.WithCancel(ctx)
	var fwg sync.WaitGroup
	// Also on an early return: the followers end before the members stop.
	defer func() { stopFollow(); fwg.Wait() }()
	for g := range o.Groups {
		cs := newConsumer(o.Exe, broker, topic, fmt.Sprintf("%s-g%d", rep.RunID, g), o.Delivery, rep.RunID+"-", clog)
		cs.args, cs.env = o.TLS.consumeArgs(), o.Auth.consumeEnv()
		if err := cs.start(); err != nil {
			return nil, err
		}
		defer cs.stop()
		consumers = append(consumers, cs)
		if cl != nil {
			fwg.Add(1)
			go func() { defer fwg.Done(); cs.follow(fctx) }()
		}
	}

	rec := &recorder{}
	start := time.Now()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range o.Producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := work{c: c, run: rep.RunID, topic: topic, i: i, keys: o.Keys, size: o.Size, start: start, end: start.Add(o.Duration), rate: o.Rate, rec: rec}
			switch o.Mode {
			case "async":
				w.async(wctx, o.Inflight)
			case "oneway":
				w.oneway(wctx)
			default:
				w.sync(wctx)
			}
		}()
	}
	faultsDone := make(chan []FaultRecord, 1)
	go func() { faultsDone <- inject(wctx, sys, consumers, faults, start) }()
	if o.Progress != nil {
		go progress(wctx, o.Progress, rec, start, o.Duration)
	}
	wg.Wait()
	records := <-faultsDone
	cancel()

	// Heal: the node serves (a fault's restart is done), then read back.
	readAddr, err := sys.settle(ctx)
	if err != nil {
		return nil, fmt.Errorf("after the workload: %w", err)
	}
	stored, err := readBack(ctx, readAddr, p.creds, topic, rep.RunID+"-")
	if err != nil {
		return nil, err
	}
	// Every group drains: it must deliver every message the topic holds.
	// On a cluster its member consumes from the leader read back.
	stopFollow()
	fwg.Wait()
	if cl != nil {
		for _, cs := range consumers {
			if _, err := cs.move(); err != nil {
				return nil, fmt.Errorf("after the workload: group %s: %w", cs.group, err)
			}
		}
	}
	var dwg sync.WaitGroup
	for _, cs := range consumers {
		dwg.Add(1)
		go func() { defer dwg.Done(); cs.drain(ctx, stored, o.DrainTimeout) }()
	}
	dwg.Wait()
	sends := rec.all()
	for _, cs := range consumers {
		rep.Groups = append(rep.Groups, cs.result(stored, sends))
	}
	rep.Result = Check(sends, stored)
	rep.Faults = healedTimes(records, sends, start)
	if cl != nil {
		// Every node's own store: a loss only a follower has.
		rep.NodeStores = cl.readNodes(ctx, readAddr, topic, rep.RunID+"-", sends, rep.Result)
	}
	// Empty lists, not null: the schema wants arrays (a run without
	// groups or faults).
	if rep.Groups == nil {
		rep.Groups = []*GroupResult{}
	}
	if rep.Faults == nil {
		rep.Faults = []FaultRecord{}
	}
	summarize(rep, sends, start)
	return rep, nil
}

func hasTopic(p *prepared, name string) bool {
	for _, t := range p.pipeline.Topics {
		if t.Name == name {
			return true
		}
	}
	return false
}

// recorder collects the sends of every producer.
type recorder struct {
	mu    sync.Mutex
	sends []Send
}

func (r *recorder) add(s Send) {
	r.mu.Lock()
	r.sends = append(r.sends, s)
	r.mu.Unlock()
}

func (r *recorder) counts() (sent, ok, unknown int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sends {
		switch s.Outcome {
		case OutcomeOK:
			ok++
		case OutcomeUnknown:
			unknown++
		}
	}
	return len(r.sends), ok, unknown
}

func (r *recorder) all() []Send {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Send(nil), r.sends...)
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// work is one producer with a key of its own, sending until end.
type work struct {
	c     *client.Client
	run   string
	topic string
	i     int
	keys  int // keys per producer, each message the next in turn
	size  int
	start time.Time
	end   time.Time
	rate  float64 // messages per second; 0: closed loop
	rec   *recorder
}

// due waits until the seq-th message is due (with a rate) and returns when
// its send starts for the latency: when it was due, also if the producer
// is behind. Without a rate it is now.
func (w *work) due(ctx context.Context, seq int64) time.Time {
	if w.rate <= 0 {
		return time.Now()
	}
	at := w.start.Add(time.Duration(float64(seq) / w.rate * float64(time.Second)))
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return at
}

// producer names the producer in its messages' ids and keys.
func (w *work) producer() string { return fmt.Sprintf("%s-p%d", w.run, w.i) }

// key is the seq-th message's key: the producer's, or with several keys
// per producer the producer's k-th, in turn.
func (w *work) key(seq int64) string {
	if w.keys <= 1 {
		return w.producer()
	}
	return fmt.Sprintf("%s-k%d", w.producer(), seq%int64(w.keys))
}

// message returns the seq-th message: its id and its body carry the run,
// the producer and seq.
func (w *work) message(seq int64) client.Message {
	id := fmt.Sprintf("%s-%d", w.producer(), seq)
	body := make([]byte, w.size)
	copy(body, id)
	for j := len(id); j < w.size; j++ {
		body[j] = 'a' + byte((j+int(seq))%26)
	}
	return client.Message{ID: id, Topic: w.topic, Key: w.key(seq), Body: body}
}

// outcome records how a send ended.
func (w *work) outcome(s Send, res client.Result, err error) Send {
	switch {
	case err == nil && res.Status == ferryv1.Status_STATUS_OK:
		s.Outcome, s.Status, s.Queue, s.Offset = OutcomeOK, res.Status, res.Queue, res.Offset
	case err == nil:
		s.Outcome, s.Status, s.Queue, s.Offset = OutcomeWeak, res.Status, res.Queue, res.Offset
	case errors.Is(err, sdk.ErrInvalidArgument) || errors.Is(err, sdk.ErrNotFound):
		s.Outcome, s.Err = OutcomeRefused, err.Error()
	default:
		s.Outcome, s.Err = OutcomeUnknown, err.Error()
	}
	return s
}

// sync sends each message after the previous one was answered.
func (w *work) sync(ctx context.Context) {
	p := w.c.NewProducer(client.ProducerOptions{Selector: client.KeyHash()})
	for seq := int64(0); time.Now().Before(w.end) && ctx.Err() == nil; seq++ {
		m := w.message(seq)
		at := w.due(ctx, seq)
		if !at.Before(w.end) || ctx.Err() != nil {
			return
		}
		s := Send{ID: m.ID, Key: m.Key, Seq: seq, Start: at, Queue: -1, Offset: -1}
		res, err := p.SendSync(ctx, m)
		s.Latency = time.Since(s.Start)
		if err != nil && ctx.Err() != nil && time.Now().After(w.end) {
			return // the run ended during this send: not a send of the run
		}
		w.rec.add(w.outcome(s, res, err))
	}
}

// async keeps up to inflight messages in flight; a key's messages are
// stored in the order they were sent (one batch in flight per queue), so
// the order check holds for them too.
func (w *work) async(ctx context.Context, inflight int) {
	p := w.c.NewProducer(client.ProducerOptions{Selector: client.KeyHash(), MaxInflight: inflight})
	for seq := int64(0); time.Now().Before(w.end) && ctx.Err() == nil; seq++ {
		m := w.message(seq)
		at := w.due(ctx, seq)
		if !at.Before(w.end) || ctx.Err() != nil {
			break
		}
		s := Send{ID: m.ID, Key: m.Key, Seq: seq, Start: at, Queue: -1, Offset: -1}
		if err := p.SendAsync(ctx, m, func(res client.Result, err error) {
			s.Latency = time.Since(s.Start)
			w.rec.add(w.outcome(s, res, err))
		}); err != nil {
			if ctx.Err() != nil {
				break
			}
			s.Latency = time.Since(s.Start)
			w.rec.add(w.outcome(s, client.Result{}, err))
		}
	}
	// Every callback comes before Close returns (bounded: each send has
	// its timeout and retries).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	_ = p.Close(cctx)
}

// oneway sends without answers: it promises nothing; what is stored is
// still checked for duplicates and strangers.
func (w *work) oneway(ctx context.Context) {
	p := w.c.NewProducer(client.ProducerOptions{Selector: client.KeyHash()})
	for seq := int64(0); time.Now().Before(w.end) && ctx.Err() == nil; seq++ {
		m := w.message(seq)
		at := w.due(ctx, seq)
		if !at.Before(w.end) || ctx.Err() != nil {
			return
		}
		s := Send{ID: m.ID, Key: m.Key, Seq: seq, Start: at, Queue: -1, Offset: -1, Outcome: OutcomeOneway}
		_, err := p.SendOneway(ctx, m)
		s.Latency = time.Since(s.Start)
		if err != nil {
			s.Err = err.Error()
		}
		w.rec.add(s)
	}
}

// system is what a run drives: one node (node) or a cluster (cluster).
type system interface {
	// seeds are the brokers the producers dial.
	seeds() []string
	// start starts it and waits until it serves.
	start(ctx context.Context) error
	// fault injects f (any but a consumer kill) and, for a fault with an
	// end, waits for its end and heals; it fills r's times and error.
	fault(ctx context.Context, f Fault, start time.Time, r *FaultRecord)
	// settle waits after the workload until it serves, and returns the
	// broker to read the topic back from.
	settle(ctx context.Context) (string, error)
	stop()
}

// inject runs the fault schedule from start; it returns when every fault
// was injected and healed. Link faults (partition, delay, reset) run
// alongside the others: a link can be down while a node dies.
func inject(ctx context.Context, sys system, consumers []*consumer, faults []Fault, start time.Time) []FaultRecord {
	var (
		mu  sync.Mutex
		out []FaultRecord
		wg  sync.WaitGroup
	)
	one := func(f Fault) {
		select {
		case <-time.After(time.Until(start.Add(f.At))):
		case <-ctx.Done():
			return
		}
		r := FaultRecord{Fault: f, Injected: time.Since(start)}
		if f.Target == "consumer" {
			for _, c := range consumers {
				if err := c.kill(); err != nil {
					r.Error = err.Error()
				}
			}
			r.Healed = time.Since(start)
		} else {
			sys.fault(ctx, f, start, &r)
		}
		mu.Lock()
		out = append(out, r)
		mu.Unlock()
	}
	for _, f := range faults {
		if f.link() {
			wg.Add(1)
			go func() { defer wg.Done(); one(f) }()
		}
	}
	for _, f := range faults {
		if !f.link() {
			one(f)
		}
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Injected < out[j].Injected })
	return out
}

func (n *node) seeds() []string { return []string{n.p.addr} }

func (n *node) settle(ctx context.Context) (string, error) {
	return n.p.addr, n.waitServing(ctx, make(chan struct{}))
}

// fault injects a fault on the single node.
func (n *node) fault(ctx context.Context, f Fault, start time.Time, r *FaultRecord) {
	switch {
	case f.Kind == "pause":
		err := n.signal(f.Target, syscall.SIGSTOP)
		select {
		case <-time.After(time.Until(start.Add(f.Until))):
		case <-ctx.Done():
		}
		// Continued also when the stop failed (a half-stopped group).
		if cerr := n.signal(f.Target, syscall.SIGCONT); err == nil {
			err = cerr
		}
		if err != nil {
			r.Error = err.Error()
		}
		r.Resumed = time.Since(start)
	case f.link():
		r.Error = "a single node has no links between nodes: give every pipeline file of a cluster"
	case f.Target == "broker":
		kill := n.kill
		if f.Kind == "power-loss" {
			kill = n.powerLoss
		}
		if err := kill(); err != nil {
			r.Error = err.Error()
			return
		}
		select {
		case <-time.After(time.Until(start.Add(f.Until))):
		case <-ctx.Done():
		}
		if err := n.start(context.WithoutCancel(ctx)); err != nil {
			r.Error = "restart: " + err.Error()
		}
		r.Healed = time.Since(start)
	default:
		if _, err := n.killPlugin(f.Target); err != nil {
			r.Error = err.Error()
		}
		r.Injected = time.Since(start) // the process is gone
	}
}

// healedTimes sets the Healed of a plugin kill to the end of the first send
// that started after it and was acknowledged, and that of a pause to the
// first acknowledgement after the process was continued.
func healedTimes(rs []FaultRecord, sends []Send, start time.Time) []FaultRecord {
	for i := range rs {
		r := &rs[i]
		switch {
		case r.Kind == "pause":
			r.Healed = r.Resumed
			first := time.Duration(-1)
			for _, s := range sends {
				if end := s.Start.Add(s.Latency).Sub(start); s.Outcome == OutcomeOK && end >= r.Resumed && (first < 0 || end < first) {
					first = end
				}
			}
			if first >= 0 {
				r.Healed = first
			}
		case r.Kind == "kill" && pluginTargets[r.Target]:
			at := start.Add(r.Injected)
			r.Healed = r.Injected
			for _, s := range sends {
				if s.Outcome == OutcomeOK && s.Start.After(at) {
					r.Healed = s.Start.Add(s.Latency).Sub(start)
					break
				}
			}
		}
	}
	return rs
}

// ReadBack reads every message of topic with an id that starts with prefix,
// queue by queue from its start to its end, through the Broker API (plaintext,
// no credentials). It waits for the queues' ends to stand still first.
func ReadBack(ctx context.Context, addr, topic, prefix string) ([]Stored, error) {
	return readBack(ctx, addr, brokerCreds{}, topic, prefix)
}

// readBack is ReadBack with the credentials the broker wants (nil:
// plaintext).
func readBack(ctx context.Context, addr string, creds brokerCreds, topic, prefix string) ([]Stored, error) {
	cc, err := dialBroker(addr, creds)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rpc := ferryv1.NewBrokerClient(cc)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	md, err := rpc.Metadata(ctx, &ferryv1.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("read back: metadata: %w", err)
	}
	var refs []*ferryv1.QueueRef
	for _, t := range md.Topics {
		if t.Name == topic {
			for q := range t.Queues {
				refs = append(refs, &ferryv1.QueueRef{Topic: topic, Queue: q})
			}
		}
	}
	// Oneway sends end before the broker stores them: read once the
	// queues' ends stood still for a second (or after 30 s).
	var offs *ferryv1.GetOffsetsResponse
	ends := func() (string, error) {
		offs, err = rpc.GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Queues: refs})
		if err != nil {
			return "", fmt.Errorf("read back: offsets: %w", err)
		}
		var b strings.Builder
		for _, o := range offs.Offsets {
			fmt.Fprintf(&b, "%d/%d ", o.Queue, o.End)
		}
		return b.String(), nil
	}
	last, err := ends()
	if err != nil {
		return nil, err
	}
	for stable, deadline := time.Now(), time.Now().Add(30*time.Second); time.Since(stable) < time.Second && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		now, err := ends()
		if err != nil {
			return nil, err
		}
		if now != last {
			last, stable = now, time.Now()
		}
	}
	var out []Stored
	for _, o := range offs.Offsets {
		for pos := o.Start; pos < o.End; {
			resp, err := rpc.Fetch(ctx, &ferryv1.FetchRequest{Topic: topic, Positions: []*ferryv1.FetchPosition{{Queue: o.Queue, Offset: pos}}, MaxMessages: 1000, MaxWaitNanos: int64(time.Second)})
			if err != nil {
				return nil, fmt.Errorf("read back: queue %d at %d: %w", o.Queue, pos, err)
			}
			if len(resp.Messages) == 0 {
				if len(resp.Errors) > 0 {
					return nil, fmt.Errorf("read back: queue %d at %d: %v", o.Queue, pos, sdk.ErrorFromProto(resp.Errors[0].Error))
				}
				return nil, fmt.Errorf("read back: queue %d: nothing at %d before its end %d", o.Queue, pos, o.End)
			}
			for _, m := range resp.Messages {
				if m.Offset < pos {
					continue
				}
				if strings.HasPrefix(m.Id, prefix) {
					out = append(out, Stored{ID: m.Id, Key: m.Key, Queue: o.Queue, Offset: m.Offset})
				}
				pos = m.Offset + 1
			}
		}
	}
	return out, nil
}

// progress prints a line every 5 seconds until ctx ends.
func progress(ctx context.Context, w io.Writer, rec *recorder, start time.Time, d time.Duration) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sent, ok, unknown := rec.counts()
			fmt.Fprintf(w, "verify: %s of %s: sent %d, acked %d, unknown %d\n", time.Since(start).Round(time.Second), d, sent, ok, unknown)
		}
	}
}

// summarize fills the report's figures and verdict.
func summarize(rep *Report, sends []Send, start time.Time) {
	var lat []time.Duration
	rep.RateBucket = 250 * time.Millisecond
	buckets := int(rep.Duration/rep.RateBucket) + 1
	rep.AckRate = make([]float64, buckets)
	perBucket := float64(time.Second) / float64(rep.RateBucket)
	for _, s := range sends {
		r := SendRecord{ID: s.ID, Start: s.Start.Sub(start), Latency: s.Latency, Outcome: s.Outcome.String(), Error: s.Err}
		if s.Outcome == OutcomeOK || s.Outcome == OutcomeWeak {
			r.Status = s.Status.String()
		}
		rep.Sends = append(rep.Sends, r)
		if s.Outcome == OutcomeOK {
			lat = append(lat, s.Latency)
			if b := int(s.Start.Add(s.Latency).Sub(start) / rep.RateBucket); b >= 0 && b < buckets {
				rep.AckRate[b] += perBucket
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		rep.LatencyP50, rep.LatencyP99, rep.LatencyMax = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	res := rep.Result
	rep.Verdict = "pass"
	var afterID func(id string) string
	fail := func(format string, args ...any) {
		rep.Verdict = "fail"
		rep.Reasons = append(rep.Reasons, fmt.Sprintf(format, args...))
	}
	after := func(kind string) string {
		ex := res.Examples[kind]
		if len(ex) == 0 {
			return ""
		}
		id, _, _ := strings.Cut(ex[0], " ")
		return afterID(id)
	}
	afterID = func(id string) string {
		// Name the fault that preceded the message's ack.
		for _, s := range sends {
			if s.ID == id {
				var last string
				for _, f := range rep.Faults {
					if f.Injected <= s.Start.Sub(start)+s.Latency {
						last = f.String()
					}
				}
				if last != "" {
					return fmt.Sprintf(" (e.g. %s, acknowledged after %s)", id, last)
				}
				return fmt.Sprintf(" (e.g. %s, acknowledged before any fault)", id)
			}
		}
		return ""
	}
	if res.Lost > 0 {
		lost := map[string]bool{}
		for _, id := range res.LostIDs {
			lost[id] = true
		}
		var other []string
		if rep.Flush == "async" && rep.FlushInterval > 0 {
			rep.LostAtPowerLoss, rep.LossWindow, other = permittedLoss(rep, sends, lost, start)
		} else {
			other = res.LostIDs
		}
		if rep.Replication == "async" && len(other) > 0 {
			rep.LostAtFailover, rep.FailoverLag, other = failoverLoss(rep, sends, other, start)
		}
		if len(other) > 0 {
			why := "no fault of this run may lose one on this pipeline's settings"
			switch rep.Replication {
			case "raft":
				why = "raft replication commits on a quorum: no fault of this run may lose an acknowledged message"
			case "sync":
				why = "sync replication acknowledges OK only once a slave holds the message: no fault of this run may lose one"
			case "async":
				why = "async replication may lose only what a master acknowledged before it died and its slave was promoted"
			}
			example := afterID(other[0])
			if rep.Flush == "async" && rep.FlushInterval > 0 {
				why = fmt.Sprintf("flush async may lose at a power loss only what was acknowledged within flush_interval %s (+%s) before it", rep.FlushInterval, PowerLossSlack)
				if e := beforePowerLoss(rep, sends, other[0], start); e != "" {
					example = e
				}
			}
			fail("%d acknowledged message(s) lost: %s%s", len(other), why, example)
		}
	}
	judgeNodes(rep, sends, start, fail)
	if res.Duplicated > 0 {
		fail("%d message(s) stored more than once: retries carry their id and the store de-duplicates%s", res.Duplicated, after("duplicated"))
	}
	if res.Unexpected > 0 {
		fail("%d message(s) stored that no producer sent", res.Unexpected)
	}
	if res.OutOfOrder > 0 {
		fail("%d acknowledged message(s) of a key stored out of order", res.OutOfOrder)
	}
	if res.WrongOffset > 0 {
		fail("%d acknowledged message(s) stored at another offset than acknowledged%s", res.WrongOffset, after("wrong_offset"))
	}
	if res.RefusedStored > 0 {
		fail("%d refused message(s) stored anyway", res.RefusedStored)
	}
	powerLoss := false
	for _, f := range rep.Faults {
		powerLoss = powerLoss || f.Kind == "power-loss"
	}
	// A master–slave failover may drop what the dead master served and
	// its slave never got (async: its lag; sync: what it acknowledged
	// weaker than OK while the slave was away): a group may have
	// delivered it before. What of that was acknowledged OK is the
	// topic's loss, judged above.
	failover := false
	for _, f := range rep.Faults {
		failover = failover || f.Failover
	}
	for _, g := range rep.Groups {
		if g.Missing > 0 {
			fail("group %s never delivered %d stored message(s) (at least once)", g.Group, g.Missing)
		}
		if g.NotStored > 0 && !powerLoss && !failover {
			fail("group %s delivered %d message(s) the topic does not hold", g.Group, g.NotStored)
		}
		if g.Unexpected > 0 {
			fail("group %s delivered %d message(s) that no producer sent", g.Group, g.Unexpected)
		}
		if g.OutOfOrder > 0 {
			fail("group %s delivered %d acknowledged message(s) of a key for the first time after a later one", g.Group, g.OutOfOrder)
		}
	}
	if res.Acked == 0 && rep.Mode != "oneway" {
		fail("no send was acknowledged: the run proves nothing")
	}
	if res.Stored == 0 {
		fail("nothing the run sent is stored: the run proves nothing")
	}
	for _, f := range rep.Faults {
		if f.Error != "" {
			fail("fault %s was not injected: %s", f.Fault, f.Error)
		}
	}
}

// PowerLossSlack is added to the store's flush interval in what flush async
// may lose at a power loss: the fsync that covers an interval's writes
// starts at its end and takes a while.
const PowerLossSlack = 250 * time.Millisecond

// powerLossToken writes the private token file that lets the node's store
// arm its power-loss hook for this process (EnvPowerLoss).
func powerLossToken(dir string) (string, error) {
	var nonce [16]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "power-loss.token")
	line := fmt.Sprintf("%s %d %x\n", PowerLossMagic, os.Getpid(), nonce)
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// flushInterval is the file store's flush_interval in the pipeline, or its
// default (plugins/storage/file: DefaultFlushInterval).
func flushInterval(p *prepared) time.Duration {
	if v, ok := p.pipeline.Plugins.Storage.Config["flush_interval"].(string); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return 500 * time.Millisecond
}

// permittedLoss counts the lost sends that flush async permits: each was
// acknowledged within rep.FlushInterval+PowerLossSlack before a power loss.
// It returns that count and the longest time from such an ack to its power
// loss, and the ids of the losses it does not permit.
func permittedLoss(rep *Report, sends []Send, lost map[string]bool, start time.Time) (n int, window time.Duration, other []string) {
	for _, s := range sends {
		if !lost[s.ID] {
			continue
		}
		// The power loss that followed the ack: the first one the node
		// had not yet come back from when the ack arrived (an ack can
		// arrive just after the cut, on its way out before it).
		acked := s.Start.Add(s.Latency).Sub(start)
		ok := false
		for _, f := range rep.Faults {
			if f.Kind == "power-loss" && f.Healed >= acked {
				if w := max(f.Injected-acked, 0); w <= rep.FlushInterval+PowerLossSlack {
					ok = true
					window = max(window, w)
				}
				break
			}
		}
		if ok {
			n++
		} else {
			other = append(other, s.ID)
		}
	}
	return n, window, other
}

// failoverLoss counts the lost sends (ids) that async replication permits:
// each was acknowledged before a failover was done (by the master that
// died, before its slave was promoted). It returns that count, the longest
// time from such an ack to the master's death (how far the slave lagged),
// and the ids of the losses it does not permit.
func failoverLoss(rep *Report, sends []Send, ids []string, start time.Time) (n int, lag time.Duration, other []string) {
	lost := map[string]bool{}
	for _, id := range ids {
		lost[id] = true
	}
	for _, s := range sends {
		if !lost[s.ID] {
			continue
		}
		acked := s.Start.Add(s.Latency).Sub(start)
		ok := false
		for _, f := range rep.Faults {
			if f.Failover && f.Healed >= acked {
				ok = true
				lag = max(lag, f.Injected-acked)
				break
			}
		}
		if ok {
			n++
		} else {
			other = append(other, s.ID)
		}
	}
	return n, lag, other
}

// beforePowerLoss names, for the lost message id, the first power loss
// after its ack and how long before it the ack came: the fault that lost
// it. "" when no power loss followed its ack.
func beforePowerLoss(rep *Report, sends []Send, id string, start time.Time) string {
	for _, s := range sends {
		if s.ID != id {
			continue
		}
		acked := s.Start.Sub(start) + s.Latency
		for _, f := range rep.Faults {
			if f.Kind == "power-loss" && f.Injected >= acked {
				return fmt.Sprintf(" (e.g. %s, acknowledged %s before %s)", id, (f.Injected - acked).Round(time.Millisecond), f)
			}
		}
		return ""
	}
	return ""
}
