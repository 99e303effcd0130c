package sdktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/internal/freeport"
)

// The consensus cases check a replication plugin of mode replicate_first
// (raft) against what sdk.Replication and sdk.ReplicaCore promise such a
// plugin: three members, each a plugin of its own serving a consensus test
// core (NewConsensusTestCore) that plays its broker.
//
//   - ConsensusElection: the members elect one leader (its core is told
//     leader, the others follower naming it, and its Status says leader);
//     when the leader goes, the two left elect another, in a later term
//     (Status.epoch), which takes a batch.
//   - ConsensusFollowerRefuses: Replicate on a follower fails with
//     sdk.ErrNotLeader (errors.Is across the boundary), and none of its
//     messages is stored on any member, while the leader's batch after it
//     reaches all three.
//   - ConsensusCommitThroughLog: every batch the leader answers OK is
//     stored on its core at the offsets the answer names, and all three
//     cores end with the same log, each message once; with both followers
//     gone (no quorum) a batch is never answered OK and is not stored on
//     the leader before it is committed.
//   - ConsensusSnapshotCatchUp (Snapshots): a follower that was away while
//     the log was compacted past what it had applied (log_first_index) is
//     caught up once it is back: its core ends with the leader's log, and
//     later batches reach it through the log.

// ConsensusMember is one member of a consensus group as ConsensusConfig
// gets it: free loopback addresses the harness picked.
type ConsensusMember struct {
	// ID is the member's node id: Environment.node, "node-<i>".
	ID string
	// Listen is its consensus address (raft: `listen`, a peer's `raft`).
	Listen string
	// Admin is its status and catch-up listener (raft: `admin`).
	Admin string
	// Broker is the broker address its core would have (raft: a peer's
	// `broker`); nothing listens there.
	Broker string
}

// ConsensusSection returns a ReplicationFeatures.ConsensusConfig that makes
// member i's section from section (JSON) by replacing $LISTEN with the
// member's consensus address, $ADMIN with its admin listener, $NODE with its
// node id and $MEMBERS (quoted or not) with every member as a JSON list of
// {"id", "raft", "admin", "broker"} (the raft plugin's peers). `ferry plugin
// test` makes a --config file's section holding $MEMBERS into a consensus
// plugin's with it.
func ConsensusSection(section []byte) func(i int, members []ConsensusMember) []byte {
	return func(i int, members []ConsensusMember) []byte {
		type peer struct {
			ID     string `json:"id"`
			Raft   string `json:"raft"`
			Admin  string `json:"admin"`
			Broker string `json:"broker"`
		}
		peers := []peer{}
		for _, m := range members {
			peers = append(peers, peer{m.ID, m.Listen, m.Admin, m.Broker})
		}
		p, _ := json.Marshal(peers) // strings only: cannot fail
		b := bytes.ReplaceAll(section, []byte(`"$MEMBERS"`), p)
		b = bytes.ReplaceAll(b, []byte("$MEMBERS"), p)
		b = bytes.ReplaceAll(b, []byte("$LISTEN"), []byte(members[i].Listen))
		b = bytes.ReplaceAll(b, []byte("$ADMIN"), []byte(members[i].Admin))
		return bytes.ReplaceAll(b, []byte("$NODE"), []byte(members[i].ID))
	}
}

// DefaultConsensusBound is how long the consensus cases give an election,
// a commit or a catch-up by default: elections on a loaded machine take
// seconds.
const DefaultConsensusBound = 30 * time.Second

func (f ReplicationFeatures) consensusBound() time.Duration {
	if f.ConsensusBound > 0 {
		return f.ConsensusBound
	}
	return DefaultConsensusBound
}

// consensusNodes is the size of the consensus cases' group.
const consensusNodes = 3

// commitBatches is how many batches ConsensusCommitThroughLog commits with
// every member up, alternating between the two queues: more than the
// entries after which the built-in raft type's test section compacts its
// log (4), so that compaction runs meanwhile too.
const commitBatches = 10

func needConsensus(f ReplicationFeatures) string {
	if f.ConsensusConfig == nil {
		return "a consensus group: needs each member's config section (ReplicationFeatures.ConsensusConfig; --config with $LISTEN, $ADMIN and $MEMBERS)"
	}
	return ""
}

func needSnapshots(f ReplicationFeatures) string {
	if why := needConsensus(f); why != "" {
		return why
	}
	if !f.Snapshots {
		return "the config does not make the plugin compact its log after a few entries (ReplicationFeatures.Snapshots; --snapshots)"
	}
	return ""
}

// consensusGroup is the members of a consensus case, each with its core.
type consensusGroup struct {
	h       ReplicationHarness
	bound   time.Duration
	members []ConsensusMember
	cores   []*ReplicaTestCore
	nodes   []*ServedReplication // nil: not running
}

func newConsensusGroup(h ReplicationHarness) (*consensusGroup, error) {
	addrs := h.Addrs()
	if len(addrs) < consensusNodes {
		return nil, fmt.Errorf("harness: %d addresses, the consensus cases need %d", len(addrs), consensusNodes)
	}
	g := &consensusGroup{h: h, bound: h.Features().consensusBound(), nodes: make([]*ServedReplication, consensusNodes)}
	extra, err := freeport.Addrs(2 * consensusNodes)
	if err != nil {
		return nil, err
	}
	for i := range consensusNodes {
		id := fmt.Sprint("node-", i)
		g.members = append(g.members, ConsensusMember{ID: id, Listen: addrs[i], Admin: extra[2*i], Broker: extra[2*i+1]})
		g.cores = append(g.cores, NewConsensusTestCore(id))
	}
	return g, nil
}

// startAll starts every member, side by side (a plugin process takes a
// while to start on a loaded machine).
func (g *consensusGroup) startAll() error {
	errs := make([]error, len(g.members))
	var wg sync.WaitGroup
	for i := range g.members {
		wg.Go(func() { errs[i] = g.start(i) })
	}
	wg.Wait()
	var skip error
	for i, err := range errs {
		switch _, ok := Skipped(err); {
		case ok:
			skip = err
		case err != nil:
			return err
		case g.nodes[i] == nil: // a Go harness's t.Fatal in Start
			return fmt.Errorf("%s did not start", g.members[i].ID)
		}
	}
	return skip
}

// start starts member i (again: on its data directory and its core), and
// skips the case for a plugin that is not of mode replicate_first.
func (g *consensusGroup) start(i int) error {
	n, err := g.h.Start(i, g.h.Features().ConsensusConfig(i, g.members), g.cores[i])
	if err != nil {
		return err
	}
	if m, ok := n.Replication.(sdk.ReplicationMode); ok {
		if mode := m.Mode(); mode != sdk.ModeReplicateFirst {
			n.Stop()
			return Skip("mode %q: the consensus cases are for replicate_first plugins", mode)
		}
	}
	g.nodes[i] = n
	return nil
}

func (g *consensusGroup) stop(i int) {
	if g.nodes[i] != nil {
		g.nodes[i].Stop()
		g.nodes[i] = nil
	}
}

func (g *consensusGroup) stopAll() {
	for i := range g.nodes {
		g.stop(i)
	}
}

func (g *consensusGroup) status(i int) (*sdk.ReplicationStatus, error) {
	ctx, cancel := ctxT()
	defer cancel()
	return g.nodes[i].Status(ctx)
}

// waitLeader waits until the running members agree on one leader: its core
// was told leader and its Status says so, and every other running member's
// core was told follower naming it. It returns the leader.
func (g *consensusGroup) waitLeader() (int, error) {
	deadline := time.Now().Add(g.bound)
	var seen []string
	for {
		leaders, seen2 := []int{}, []string{}
		for i, n := range g.nodes {
			if n == nil {
				continue
			}
			role, leader := g.cores[i].latestRole()
			seen2 = append(seen2, fmt.Sprintf("%s: %q (leader %q)", g.members[i].ID, role, leader))
			if role == sdk.RoleLeader {
				leaders = append(leaders, i)
			}
		}
		seen = seen2
		if len(leaders) == 1 {
			l := leaders[0]
			agree := true
			for i, n := range g.nodes {
				if n == nil || i == l {
					continue
				}
				role, leader := g.cores[i].latestRole()
				agree = agree && role == sdk.RoleFollower && leader == g.members[l].ID
			}
			if agree {
				if st, err := g.status(l); err == nil && st.GetRole() == sdk.RoleLeader {
					return l, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("the members did not agree on one leader within %s (roles told to their cores: %s)", g.bound, strings.Join(seen, ", "))
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// replicateOn hands msgs to member i's Replicate and waits for the answer
// (an error of Replicate itself is returned as the answer's).
func (g *consensusGroup) replicateOn(i int, msgs []*sdk.Message) (sdk.Status, []int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), g.bound+CallTimeout)
	defer cancel()
	wait, err := g.nodes[i].Replicate(ctx, msgs)
	if err != nil {
		return 0, nil, err
	}
	st, offs, err := wait(ctx)
	if ctx.Err() != nil {
		return st, offs, fmt.Errorf("no answer from %s within %s: a producer would wait forever", g.members[i].ID, g.bound+CallTimeout)
	}
	return st, offs, err
}

// commit gets msgs answered OK by the group's leader, trying again (the
// same message ids) while leadership moves: the answer then is an error,
// outcome unknown. It checks that the answer names offsets at which the
// answering leader's core stores those messages, and returns the leader.
func (g *consensusGroup) commit(msgs []*sdk.Message) (int, error) {
	deadline := time.Now().Add(g.bound)
	for {
		l, err := g.waitLeader()
		if err != nil {
			return -1, err
		}
		st, offs, err := g.replicateOn(l, msgs)
		if err == nil && st == 1 {
			if len(offs) != len(msgs) {
				return l, fmt.Errorf("the leader %s answered OK with %d offsets for %d messages", g.members[l].ID, len(offs), len(msgs))
			}
			for j, m := range msgs {
				log := g.cores[l].queueLog(m.Topic, m.Queue)
				if offs[j] < 0 || offs[j] >= int64(len(log)) || log[offs[j]].Id != m.Id {
					return l, fmt.Errorf("the leader %s answered OK with offset %d for %s, which its core does not hold there (it holds %d messages of queue %d)",
						g.members[l].ID, offs[j], m.Id, len(log), m.Queue)
				}
			}
			return l, nil
		}
		if err == nil {
			return l, fmt.Errorf("the leader %s answered %v for %s, want STATUS_OK with every member up", g.members[l].ID, st, msgs[0].Id)
		}
		if !errors.Is(err, sdk.ErrNotLeader) && !errors.Is(err, sdk.ErrUnavailable) || time.Now().After(deadline) {
			return l, fmt.Errorf("the leader %s: Replicate of %s: %w", g.members[l].ID, msgs[0].Id, err)
		}
	}
}

// sameLogs waits until the running members' cores hold the same log in
// every queue of the suite's topic, message by message.
func (g *consensusGroup) sameLogs() error {
	deadline := time.Now().Add(g.bound)
	var diff string
	for {
		var ref *ReplicaTestCore
		diff = ""
		var chs []<-chan struct{}
		for i, n := range g.nodes {
			if n == nil {
				continue
			}
			chs = append(chs, g.cores[i].changes())
			if ref == nil {
				ref = g.cores[i]
				continue
			}
			for q := range int32(replQueues) {
				if d := memberDiff(ref, g.cores[i], q); d != "" && diff == "" {
					diff = d
				}
			}
		}
		if diff == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the members' logs are not the same after %s: %s", g.bound, diff)
		}
		select {
		case <-chs[0]:
		case <-time.After(50 * time.Millisecond): // another core changed
		}
	}
}

func testConsensusElection(h ReplicationHarness) error {
	g, err := newConsensusGroup(h)
	if err != nil {
		return err
	}
	defer g.stopAll()
	if err := g.startAll(); err != nil {
		return err
	}
	l, err := g.waitLeader()
	if err != nil {
		return err
	}
	st, err := g.status(l)
	if err != nil {
		return fmt.Errorf("the leader's Status: %w", err)
	}
	term := st.GetEpoch()
	g.stop(l)
	l2, err := g.waitLeader()
	if err != nil {
		return fmt.Errorf("after the leader %s stopped: %w", g.members[l].ID, err)
	}
	st2, err := g.status(l2)
	if err != nil {
		return fmt.Errorf("the new leader's Status: %w", err)
	}
	if st2.GetEpoch() <= term {
		return fmt.Errorf("the new leader %s reports term (epoch) %d, the old leader %s reported %d: a new election must be in a later term",
			g.members[l2].ID, st2.GetEpoch(), g.members[l].ID, term)
	}
	if _, err := g.commit(batch("after-failover", 0, 2)); err != nil {
		return fmt.Errorf("with two of three members (a quorum): %w", err)
	}
	return nil
}

func testConsensusFollowerRefuses(h ReplicationHarness) error {
	g, err := newConsensusGroup(h)
	if err != nil {
		return err
	}
	defer g.stopAll()
	if err := g.startAll(); err != nil {
		return err
	}
	// The refusals are tried again (new messages) when leadership moves
	// while they are sent, a few times: a loaded machine may hold a
	// leader's heartbeats past the election timeout.
	var refused []*sdk.Message
	const tries = 3
	for try := 1; ; try++ {
		l, err := g.waitLeader()
		if err != nil {
			return err
		}
		moved, err := g.refuseOnFollowers(l, try, &refused)
		if err != nil {
			return err
		}
		if moved == "" {
			break
		}
		if try == tries {
			return Skip("leadership moved while the followers were sent batches, %d times (last to %s): run the case again", tries, moved)
		}
	}
	after := batch("after-refusals", 0, 2)
	if _, err := g.commit(after); err != nil {
		return err
	}
	if err := g.sameLogs(); err != nil {
		return err
	}
	for i, c := range g.cores {
		for _, m := range refused {
			if c.holdsID(m.Id) {
				return fmt.Errorf("%s stores %s, which a follower refused: a refused batch must be stored nowhere", g.members[i].ID, m.Id)
			}
		}
	}
	return nil
}

// refuseOnFollowers sends a batch to each member but the leader l, and
// checks that each refuses it with sdk.ErrNotLeader; the refused messages
// are added to refused. It returns the member that took its batch because
// leadership had moved to it meanwhile ("" when none did).
func (g *consensusGroup) refuseOnFollowers(l, try int, refused *[]*sdk.Message) (string, error) {
	for i := range g.nodes {
		if i == l {
			continue
		}
		msgs := batch(fmt.Sprintf("refused-%s-%d", g.members[i].ID, try), 0, 2)
		st, _, err := g.replicateOn(i, msgs)
		switch {
		case err == nil && st == 1:
			// Leadership may have moved to i meanwhile (a loaded
			// machine): only then is OK right, and its batch may
			// be stored.
			if role, _ := g.cores[i].latestRole(); role != sdk.RoleLeader {
				return "", fmt.Errorf("the follower %s answered STATUS_OK for %s while %s leads: only the leader may take a batch", g.members[i].ID, msgs[0].Id, g.members[l].ID)
			}
			return g.members[i].ID, nil
		case err == nil:
			return "", fmt.Errorf("the follower %s answered %v for %s, want the error sdk.ErrNotLeader (a broker sends the producer to the leader on it)", g.members[i].ID, st, msgs[0].Id)
		case !errors.Is(err, sdk.ErrNotLeader):
			return "", fmt.Errorf("the follower %s refused %s with %q, which is not sdk.ErrNotLeader (errors.Is): a broker would not know to send the producer to the leader", g.members[i].ID, msgs[0].Id, err)
		}
		*refused = append(*refused, msgs...)
	}
	return "", nil
}

func testConsensusCommitThroughLog(h ReplicationHarness) error {
	g, err := newConsensusGroup(h)
	if err != nil {
		return err
	}
	defer g.stopAll()
	if err := g.startAll(); err != nil {
		return err
	}
	var sent []*sdk.Message
	for i := range commitBatches {
		msgs := batch(fmt.Sprintf("log-%d", i), int32(i%2), 3)
		if _, err := g.commit(msgs); err != nil {
			return fmt.Errorf("batch %d: %w", i, err)
		}
		sent = append(sent, msgs...)
	}
	if err := g.sameLogs(); err != nil {
		return err
	}
	// Each message once, none other (a retried batch is de-duplicated by
	// id, as a store does).
	for q := range int32(replQueues) {
		seen := map[string]int{}
		for _, m := range g.cores[0].queueLog(replTopic, q) {
			seen[m.Id]++
		}
		for _, m := range sent {
			if m.Queue == q && seen[m.Id] != 1 {
				return fmt.Errorf("queue %d holds %s %d times, want once", q, m.Id, seen[m.Id])
			}
			delete(seen, m.Id)
		}
		for id := range seen {
			return fmt.Errorf("queue %d holds %s, which no batch had", q, id)
		}
	}
	l, err := g.waitLeader()
	if err != nil {
		return err
	}
	for i := range g.nodes {
		if i != l {
			g.stop(i)
		}
	}
	msgs := batch("no-quorum", 0, 1)
	st, _, err := g.replicateOn(l, msgs)
	if err == nil && st == 1 {
		return fmt.Errorf("%s answered STATUS_OK for %s with both other members gone: nothing can commit without a quorum", g.members[l].ID, msgs[0].Id)
	}
	if err != nil && strings.HasPrefix(err.Error(), "no answer") {
		return err
	}
	if g.cores[l].holdsID(msgs[0].Id) {
		return fmt.Errorf("%s stored %s, which cannot have committed (no quorum): a consensus plugin stores a batch only once committed", g.members[l].ID, msgs[0].Id)
	}
	return nil
}

func testConsensusSnapshotCatchUp(h ReplicationHarness) error {
	g, err := newConsensusGroup(h)
	if err != nil {
		return err
	}
	defer g.stopAll()
	if err := g.startAll(); err != nil {
		return err
	}
	l, err := g.commit(batch("before", 0, 2))
	if err != nil {
		return err
	}
	if err := g.sameLogs(); err != nil {
		return err
	}
	f := (l + 1) % consensusNodes
	st, err := g.status(f)
	if err != nil {
		return fmt.Errorf("%s's Status: %w", g.members[f].ID, err)
	}
	applied := st.GetAppliedIndex()
	g.stop(f)
	// Commit until every member left compacted its log past what f had
	// applied: f can then only be caught up from a snapshot.
	deadline := time.Now().Add(g.bound)
	for n := 0; ; n++ {
		if _, err := g.commit(batch(fmt.Sprintf("away-%d", n), int32(n%2), 2)); err != nil {
			return fmt.Errorf("with %s away: %w", g.members[f].ID, err)
		}
		compacted, firsts := true, []string{}
		for i, node := range g.nodes {
			if node == nil {
				continue
			}
			st, err := g.status(i)
			if err != nil {
				return fmt.Errorf("%s's Status: %w", g.members[i].ID, err)
			}
			compacted = compacted && st.GetLogFirstIndex() > applied+1
			firsts = append(firsts, fmt.Sprintf("%s %d", g.members[i].ID, st.GetLogFirstIndex()))
		}
		if compacted {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %d batches the members' logs were not compacted past index %d, which %s had applied (log_first_index: %s): with Snapshots the config must make the plugin compact after a few entries and Status report log_first_index",
				n+1, applied, g.members[f].ID, strings.Join(firsts, ", "))
		}
	}
	if err := g.start(f); err != nil {
		return fmt.Errorf("%s again: %w", g.members[f].ID, err)
	}
	if err := g.sameLogs(); err != nil {
		return fmt.Errorf("%s back after its entries were compacted away: %w", g.members[f].ID, err)
	}
	if _, err := g.commit(batch("after", 1, 2)); err != nil {
		return err
	}
	return g.sameLogs()
}

// memberDiff says how b's log of queue q differs from a's ("" when they are
// the same).
func memberDiff(a, b *ReplicaTestCore, q int32) string {
	la, lb := a.queueLog(replTopic, q), b.queueLog(replTopic, q)
	for i := range min(len(la), len(lb)) {
		if la[i].Id != lb[i].Id {
			return fmt.Sprintf("queue %d: offset %d holds %s on %s, %s on %s", q, i, lb[i].Id, b.node, la[i].Id, a.node)
		}
	}
	if len(la) != len(lb) {
		return fmt.Sprintf("queue %d: %s holds %d messages, %s %d", q, b.node, len(lb), a.node, len(la))
	}
	return ""
}
