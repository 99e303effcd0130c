package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/netfault"
)

// A cluster run: several pipeline files, each a node of one replicated
// cluster (a raft group, or a master and its slaves). Every node gets a data
// dir of its own and free loopback ports for its broker, its replication
// listener and (raft) its raft admin listener; the peer addresses in every
// file are rewritten to match. Each node reaches each other node's
// replication listener through a proxy of its own (netfault.Proxy), so
// verify can cut, black-hole, delay and reset the links of one node:
// px[i][j] carries node i's traffic to node j.

// member is one node of a cluster run.
type member struct {
	id    string
	role  string // master or slave (master–slave); "" in raft
	n     *node
	repl  string // its replication (raft traffic) listener
	admin string // raft: its admin listener (Status, catch-up)
	// peer is what verify's calls to its replication and admin
	// listeners present (peerCreds; nil: plaintext).
	peer credentials.TransportCredentials
	// down: killed for good (a failed-over master). down and role
	// change at a failover while link faults run: guarded by cluster.mu.
	down bool
}

// statusAddr is where the node answers ReplicaLink.Status.
func (m *member) statusAddr() string {
	if m.admin != "" {
		return m.admin
	}
	return m.repl
}

// cluster is a cluster run's nodes and the proxies between them.
type cluster struct {
	mode    string // raft, sync or async
	members []*member
	px      [][]*netfault.Proxy
	topic   *config.Pipeline // the first file's, for the topic and store
	// election is the longest election_timeout of a raft group's files.
	election time.Duration

	mu sync.Mutex // guards promoted and the members' down and role
	// promoted is the slave verify promoted after the master's death.
	promoted *member
}

// isDown says whether m was failed over and stays down.
func (c *cluster) isDown(m *member) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.down
}

// newCluster prepares the nodes of files under dir and their proxies, with
// a log per node (node-ID.log) in logDir.
func newCluster(exe string, files []string, dir, logDir string) (*cluster, error) {
	type orig struct {
		p     *config.Pipeline
		repl  string
		admin string
		peers []any
	}
	origs := make([]orig, len(files))
	c := &cluster{}
	ids := map[string]int{}
	for i, f := range files {
		p, err := config.Load(f)
		if err != nil {
			return nil, err
		}
		rt := p.Plugins.Replication.Type
		switch rt {
		case "raft", "sync", "async":
		default:
			return nil, fmt.Errorf("%s: plugins.replication.type is %q: a cluster run needs raft, sync or async replication in every file", f, rt)
		}
		if c.mode == "" {
			c.mode = rt
		} else if c.mode != rt {
			return nil, fmt.Errorf("%s: plugins.replication.type is %q, %s has %q: one cluster, one replication", f, rt, files[0], c.mode)
		}
		if j, dup := ids[p.Node.ID]; dup {
			return nil, fmt.Errorf("%s: node.id %q is also the id of %s", f, p.Node.ID, files[j])
		}
		ids[p.Node.ID] = i
		rc := p.Plugins.Replication.Config
		o := orig{p: p}
		o.repl, _ = rc["listen"].(string)
		o.admin, _ = rc["admin"].(string)
		o.peers, _ = rc["peers"].([]any)
		if o.repl == "" {
			return nil, fmt.Errorf("%s: plugins.replication.config.listen is not set", f)
		}
		if rt == "raft" {
			et := 500 * time.Millisecond // plugins/replication/raft's default
			if v, ok := rc["election_timeout"].(string); ok {
				if d, err := time.ParseDuration(v); err == nil {
					et = d
				}
			}
			c.election = max(c.election, et)
		}
		origs[i] = o
	}
	c.topic = origs[0].p
	if c.mode != "raft" {
		masters := 0
		for i, o := range origs {
			switch o.p.Node.Role {
			case "master":
				masters++
			case "slave":
			default:
				return nil, fmt.Errorf("%s: node.role is %q: master–slave replication needs a master and slaves", files[i], o.p.Node.Role)
			}
		}
		if masters != 1 {
			return nil, fmt.Errorf("%s: %d of the files are a master: want exactly one", strings.Join(files, ", "), masters)
		}
	}
	// The node each original replication address belongs to.
	byRepl := map[string]int{}
	for i, o := range origs {
		byRepl[o.repl] = i
	}
	// New addresses.
	for i, o := range origs {
		m := &member{id: o.p.Node.ID, role: o.p.Node.Role}
		var err error
		if m.peer, err = peerCreds(files[i], o.p.Plugins.Replication.Config); err != nil {
			return nil, err
		}
		if m.repl, err = freeAddr(); err != nil {
			return nil, err
		}
		if c.mode == "raft" {
			if m.admin, err = freeAddr(); err != nil {
				return nil, err
			}
		}
		c.members = append(c.members, m)
	}
	c.px = make([][]*netfault.Proxy, len(files))
	for i := range c.members {
		c.px[i] = make([]*netfault.Proxy, len(files))
		for j, to := range c.members {
			if i == j {
				continue
			}
			p, err := netfault.New(to.repl)
			if err != nil {
				c.closeProxies()
				return nil, err
			}
			c.px[i][j] = p
		}
	}
	// Every file is rewritten after all brokers have their addresses: a
	// raft peer entry names the other nodes' brokers.
	var brokers []string
	for range files {
		a, err := freeAddr()
		if err != nil {
			c.closeProxies()
			return nil, err
		}
		brokers = append(brokers, a)
	}
	for i, f := range files {
		m := c.members[i]
		ndir := filepath.Join(dir, m.id)
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			c.closeProxies()
			return nil, err
		}
		p, err := rewrite(f, ndir, func(_ *config.Pipeline, doc map[string]any) error {
			setPath(doc, []string{"plugins", "transport", "config", "listen"}, brokers[i])
			setPath(doc, []string{"plugins", "replication", "config", "listen"}, m.repl)
			var peers []any
			if c.mode == "raft" {
				setPath(doc, []string{"plugins", "replication", "config", "admin"}, m.admin)
				seen := map[string]bool{}
				for _, e := range origs[i].peers {
					pe, _ := e.(map[string]any)
					id, _ := pe["id"].(string)
					j, ok := ids[id]
					if !ok {
						return fmt.Errorf("%s: plugins.replication.config.peers names %q, which is the node.id of none of the files given", f, id)
					}
					seen[id] = true
					raft := m.repl
					if j != i {
						raft = c.px[i][j].Addr()
					}
					peers = append(peers, map[string]any{"id": id, "raft": raft, "broker": brokers[j], "admin": c.members[j].admin})
				}
				if len(seen) != len(files) {
					return fmt.Errorf("%s: plugins.replication.config.peers names %d of the %d nodes given: every voter, this node included", f, len(seen), len(files))
				}
			} else {
				for _, e := range origs[i].peers {
					a, _ := e.(string)
					j, ok := byRepl[a]
					if !ok {
						return fmt.Errorf("%s: plugins.replication.config.peers names %q, the replication listen address of none of the files given", f, a)
					}
					if j == i {
						return fmt.Errorf("%s: plugins.replication.config.peers names the node itself (%s)", f, a)
					}
					peers = append(peers, c.px[i][j].Addr())
				}
				if len(peers) == 0 {
					return fmt.Errorf("%s: plugins.replication.config.peers is empty", f)
				}
			}
			setPath(doc, []string{"plugins", "replication", "config", "peers"}, peers)
			return nil
		})
		if err != nil {
			c.closeProxies()
			return nil, err
		}
		p.addr = brokers[i]
		n, err := newNode(exe, p, filepath.Join(logDir, "node-"+m.id+".log"))
		if err != nil {
			c.closeProxies()
			return nil, err
		}
		m.n = n
	}
	return c, nil
}

func (c *cluster) closeProxies() {
	for _, row := range c.px {
		for _, p := range row {
			if p != nil {
				p.Close()
			}
		}
	}
}

func (c *cluster) seeds() []string {
	var s []string
	for _, m := range c.members {
		s = append(s, m.n.p.addr)
	}
	return s
}

// start starts every node and waits until each serves and the cluster has
// a leader (raft) or the slaves are linked to the master.
func (c *cluster) start(ctx context.Context) error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = m.n.start(ctx) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	_, err := c.waitLeader(ctx, 90*time.Second)
	return err
}

func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, m := range c.members {
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.n.signal("broker", syscall.SIGCONT); m.n.stop() }()
	}
	wg.Wait()
	c.closeProxies()
}

// status asks m for its replication status.
func status1(ctx context.Context, addr string, creds credentials.TransportCredentials) (*ferryv1.ReplicationStatusResponse, error) {
	cc, err := dial(addr, creds)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return ferryv1.NewReplicaLinkClient(cc).Status(ctx, &ferryv1.ReplicationStatusRequest{})
}

// leader returns the node that leads now: the raft leader of the highest
// term, or the master (the promoted slave after a failover) once its
// slaves are linked to it; nil if none does.
func (c *cluster) leader(ctx context.Context) *member {
	var best *member
	var term uint64
	for _, m := range c.members {
		if c.isDown(m) {
			continue
		}
		st, err := status1(ctx, m.statusAddr(), m.peer)
		if err != nil {
			continue
		}
		if c.mode == "raft" {
			if st.Role == "leader" && (best == nil || st.Epoch > term) {
				best, term = m, st.Epoch
			}
			continue
		}
		if st.Role == "master" {
			best = m
		}
	}
	if best == nil || c.mode == "raft" {
		return best
	}
	// Master–slave: the live slaves are linked to it.
	for _, m := range c.members {
		if m == best || c.isDown(m) {
			continue
		}
		st, err := status1(ctx, m.statusAddr(), m.peer)
		if err != nil || !st.LeaderConnected {
			return nil
		}
	}
	return best
}

func (c *cluster) waitLeader(ctx context.Context, d time.Duration) (*member, error) {
	deadline := time.Now().Add(d)
	for {
		if m := c.leader(ctx); m != nil {
			return m, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the cluster had no leader (raft) or linked master within %s (see the node logs)", d)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settle waits until every node that is up serves and the cluster has a
// leader, and returns the leader's broker.
func (c *cluster) settle(ctx context.Context) (string, error) {
	for _, m := range c.members {
		if c.isDown(m) {
			continue
		}
		if err := m.n.waitServing(ctx, make(chan struct{})); err != nil {
			return "", fmt.Errorf("node %s: %w", m.id, err)
		}
	}
	l, err := c.waitLeader(ctx, 90*time.Second)
	if err != nil {
		return "", err
	}
	return l.n.p.addr, nil
}

// leaderBroker returns what a consumer group's new member joins: the
// broker of the leader (raft) or master now, found within 30 s, else the
// last one found (the member then retries there, or exits and is started
// again).
func (c *cluster) leaderBroker(ctx context.Context) func() string {
	var (
		mu   sync.Mutex
		last = c.members[0].n.p.addr
	)
	return func() string {
		m, err := c.waitLeader(ctx, 30*time.Second)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			last = m.n.p.addr
		}
		return last
	}
}

// target resolves a fault's target to a node: leader (the leader now),
// follower (a node that follows it now: a raft follower, or a slave), a
// node's id, or a plugin kind (that plugin of the leader).
func (c *cluster) target(ctx context.Context, t string) (*member, error) {
	if t == "leader" || pluginTargets[t] {
		return c.waitLeader(ctx, 30*time.Second)
	}
	if t == "follower" {
		l, err := c.waitLeader(ctx, 30*time.Second)
		if err != nil {
			return nil, err
		}
		// The first live node after the leader in the files' order, so
		// that the same schedule hits the same node of a group whose
		// leader is the same.
		i := c.index(l)
		for k := 1; k < len(c.members); k++ {
			if m := c.members[(i+k)%len(c.members)]; !c.isDown(m) {
				return m, nil
			}
		}
		return nil, fmt.Errorf("no live node follows the leader %s", l.id)
	}
	for _, m := range c.members {
		if m.id == t {
			if c.isDown(m) {
				return nil, fmt.Errorf("node %s was failed over and stays down", m.id)
			}
			return m, nil
		}
	}
	return nil, fmt.Errorf("no node has id %q", t)
}

// check says whether the cluster can take fault f (before the run).
func (c *cluster) check(f Fault) error {
	switch {
	case f.Target == "consumer":
		return nil
	case f.Target == "broker":
		return fmt.Errorf("fault %s: a cluster has several brokers: name a node's id, or leader", f)
	case f.Kind == "power-loss" && (pluginTargets[f.Target] || f.Target == "consumer"):
		return fmt.Errorf("fault %s: a power loss hits a node: name its id, leader, follower, or all", f)
	case f.Kind == "power-loss" && f.Target == "all":
		return nil
	case f.Kind == "pause" && !pluginTargets[f.Target] && c.mode == "raft" && f.Until-f.At <= c.election:
		return fmt.Errorf("fault %s: the pause is not longer than the election timeout %s: the others would not elect another leader; make it longer", f, c.election)
	case f.Target == "leader" || f.Target == "follower" || pluginTargets[f.Target]:
		return nil
	}
	for _, m := range c.members {
		if m.id == f.Target {
			return nil
		}
	}
	var ids []string
	for _, m := range c.members {
		ids = append(ids, m.id)
	}
	return fmt.Errorf("fault %s: no node has id %q (the nodes: %s, or leader, or follower)", f, f.Target, strings.Join(ids, ", "))
}

// links calls fn on every proxy into and out of node i.
func (c *cluster) links(i int, fn func(*netfault.Proxy)) {
	for j := range c.members {
		if j != i {
			fn(c.px[i][j])
			fn(c.px[j][i])
		}
	}
}

func (c *cluster) index(m *member) int {
	for i, x := range c.members {
		if x == m {
			return i
		}
	}
	return -1
}

// fault injects f on the cluster.
func (c *cluster) fault(ctx context.Context, f Fault, start time.Time, r *FaultRecord) {
	if f.Kind == "power-loss" && f.Target == "all" {
		c.powerLossAll(ctx, f, start, r)
		return
	}
	m, err := c.target(ctx, f.Target)
	if err != nil {
		r.Error = err.Error()
		return
	}
	r.Node = m.id
	r.Injected = time.Since(start)
	waitUntil := func() {
		select {
		case <-time.After(time.Until(start.Add(f.Until))):
		case <-ctx.Done():
		}
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(m.n.logf, "--- ferry verify: "+format+" at %s\n", append(args, time.Now().Format(time.RFC3339Nano))...)
	}
	i := c.index(m)
	switch {
	case f.Kind == "partition":
		logf("partition: every link of %s black-holed", m.id)
		c.links(i, (*netfault.Proxy).Blackhole)
		waitUntil()
		c.links(i, (*netfault.Proxy).Heal)
		logf("partition of %s healed", m.id)
		r.Healed = time.Since(start)
	case f.Kind == "delay":
		logf("delay: every link of %s delayed %s", m.id, f.Delay)
		c.links(i, func(p *netfault.Proxy) { p.SetDelay(f.Delay) })
		waitUntil()
		c.links(i, func(p *netfault.Proxy) { p.SetDelay(0) })
		r.Healed = time.Since(start)
	case f.Kind == "reset":
		logf("reset: every link of %s closed", m.id)
		c.links(i, (*netfault.Proxy).Cut)
		c.links(i, (*netfault.Proxy).Heal)
		r.Healed = time.Since(start)
	case pluginTargets[f.Target] && f.Kind == "kill":
		if _, err := m.n.killPlugin(f.Target); err != nil {
			r.Error = err.Error()
		}
		r.Injected = time.Since(start)
	case f.Kind == "pause":
		target := "broker"
		if pluginTargets[f.Target] {
			target = f.Target
		}
		err := m.n.signal(target, syscall.SIGSTOP)
		waitUntil()
		if cerr := m.n.signal(target, syscall.SIGCONT); err == nil {
			err = cerr
		}
		if err != nil {
			r.Error = err.Error()
		}
		r.Resumed = time.Since(start)
	case f.Kind == "power-loss":
		// The node's machine loses power: its store drops what it did
		// not fsync, the node dies, and comes back at Until (a master
		// too: it reboots, it is not failed over).
		if err := m.n.powerLoss(); err != nil {
			r.Error = err.Error()
			return
		}
		waitUntil()
		if err := m.n.start(context.WithoutCancel(ctx)); err != nil {
			r.Error = "restart: " + err.Error()
		}
		r.Healed = time.Since(start)
	case f.Kind == "kill" && c.mode != "raft" && c.firstMaster(m):
		c.failover(ctx, m, start, r)
	case f.Kind == "kill":
		if err := m.n.kill(); err != nil {
			r.Error = err.Error()
			return
		}
		waitUntil()
		if err := m.n.start(context.WithoutCancel(ctx)); err != nil {
			r.Error = "restart: " + err.Error()
		}
		r.Healed = time.Since(start)
	default:
		r.Error = fmt.Sprintf("fault kind %s: not supported on a cluster", f.Kind)
	}
}

// powerLossAll is a power cut of every node at once (one site): each
// node's store drops what it did not fsync and the node dies, all at the
// same moment; they come back together at Until.
func (c *cluster) powerLossAll(ctx context.Context, f Fault, start time.Time, r *FaultRecord) {
	r.Node = "all"
	r.Injected = time.Since(start)
	var live []*member
	for _, m := range c.members {
		if !c.isDown(m) {
			live = append(live, m)
		}
	}
	each := func(fn func(*member) error) []string {
		errs := make([]error, len(live))
		var wg sync.WaitGroup
		for i, m := range live {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = fn(m) }()
		}
		wg.Wait()
		var out []string
		for i, err := range errs {
			if err != nil {
				out = append(out, live[i].id+": "+err.Error())
			}
		}
		return out
	}
	if errs := each(func(m *member) error { return m.n.powerLoss() }); len(errs) > 0 {
		r.Error = strings.Join(errs, "; ")
		return
	}
	select {
	case <-time.After(time.Until(start.Add(f.Until))):
	case <-ctx.Done():
	}
	if errs := each(func(m *member) error { return m.n.start(context.WithoutCancel(ctx)) }); len(errs) > 0 {
		r.Error = "restart: " + strings.Join(errs, "; ")
	}
	r.Healed = time.Since(start)
}

// failover is a master's death in master–slave replication, as when its
// machine dies: its links are cut (what it had written to them and its
// slave had not read is gone with it) as it is killed with SIGKILL, and it
// stays down. Verify promotes a slave (ReplicaLink.Promote, as ferry
// cluster promote does) once the slave sees its master gone; the producers
// follow the new master. Healed is when the promoted slave is master.
func (c *cluster) failover(ctx context.Context, m *member, start time.Time, r *FaultRecord) {
	i := c.index(m)
	c.links(i, (*netfault.Proxy).Cut)
	err := m.n.kill()
	c.mu.Lock()
	m.down = true
	c.mu.Unlock()
	if err != nil {
		r.Error = err.Error()
		return
	}
	r.Injected = time.Since(start)
	var slave *member
	c.mu.Lock()
	for _, s := range c.members {
		if !s.down && s.role == "slave" {
			slave = s
			break
		}
	}
	c.mu.Unlock()
	if slave == nil {
		r.Error = "no slave to promote"
		return
	}
	// The slave sees its master gone (bounded).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st, err := status1(ctx, slave.repl, slave.peer); err == nil && !st.LeaderConnected {
			break
		}
	}
	cc, err := dial(slave.repl, slave.peer)
	if err != nil {
		r.Error = err.Error()
		return
	}
	defer cc.Close()
	rpc := ferryv1.NewReplicaLinkClient(cc)
	var last error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// After 10 s of refusals (a sync slave lacking what its master
		// stored with a weaker answer than OK), force it: verify then
		// checks that nothing acknowledged OK is missing.
		force := time.Until(deadline) < 20*time.Second
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := rpc.Promote(pctx, &ferryv1.PromoteRequest{Force: force})
		cancel()
		if err == nil {
			fmt.Fprintf(slave.n.logf, "--- ferry verify: promoted %s (force %v): %s at %s\n", slave.id, force, resp.Detail, time.Now().Format(time.RFC3339Nano))
			r.Detail = fmt.Sprintf("%s promoted: %s", slave.id, resp.Detail)
			break
		}
		last = err
		if st, ok := status.FromError(err); !ok || st.Code() != codes.FailedPrecondition && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded {
			r.Error = "promote: " + err.Error()
			return
		}
		if time.Now().After(deadline) {
			r.Error = "promote: " + last.Error()
			return
		}
	}
	c.mu.Lock()
	slave.role = "master"
	c.promoted = slave
	c.mu.Unlock()
	if _, err := c.waitLeader(ctx, 30*time.Second); err != nil {
		r.Error = err.Error()
	}
	r.Healed = time.Since(start)
	r.Failover = true
}

// firstMaster says whether m is the cluster's original master and no
// failover happened yet: its kill is a failover.
func (c *cluster) firstMaster(m *member) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.role == "master" && c.promoted == nil
}
