package sdktest

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// ReplicaTestCore is the broker core of one node of the replication suite: a
// log per queue in memory, kept across the node's plugin restarts in a case.
// Apply checks what sdk.ReplicaCore promises a master–slave plugin: the
// messages carry the master's offsets, and one that is not the queue's next
// offset fails the batch with ErrCorrupt (the logs diverged), nothing of it
// stored. The core of a consensus node (NewConsensusTestCore) stores what
// Apply gets at the queue's next offsets instead, as the broker does in mode
// replicate_first, skipping a message whose id the queue holds (the store's
// de-duplication).
type ReplicaTestCore struct {
	node, role string
	consensus  bool

	mu       sync.Mutex
	logs     map[queueKey][]*sdk.Message
	roles    []string
	lastRole *sdk.SetRoleRequest // the latest SetRole, nil before any
	refused  int                 // Apply calls refused as diverged
	reads    int                 // Read calls
	progress chan struct{}
}

// NewReplicaTestCore returns the core of node (its node id), telling the
// plugin role (sdk.RoleMaster or sdk.RoleSlave) in NodeInfo.
func NewReplicaTestCore(node, role string) *ReplicaTestCore {
	return &ReplicaTestCore{node: node, role: role, logs: map[queueKey][]*sdk.Message{}, progress: make(chan struct{})}
}

// NewConsensusTestCore returns the core of node in a consensus group (mode
// replicate_first): a follower until the plugin says otherwise.
func NewConsensusTestCore(node string) *ReplicaTestCore {
	c := NewReplicaTestCore(node, sdk.RoleFollower)
	c.consensus = true
	return c
}

var _ sdk.ReplicaCore = (*ReplicaTestCore)(nil)

// changedLocked wakes the waiters of progress.
func (c *ReplicaTestCore) changedLocked() {
	close(c.progress)
	c.progress = make(chan struct{})
}

// store appends msgs as the broker of a master does before Replicate: each
// gets its queue's next offset. It returns copies with the offsets set.
func (c *ReplicaTestCore) store(msgs []*sdk.Message) []*sdk.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*sdk.Message, len(msgs))
	for i, m := range msgs {
		k := queueKey{m.Topic, m.Queue}
		m = cloneMessage(m)
		m.Offset = int64(len(c.logs[k]))
		c.logs[k] = append(c.logs[k], m)
		out[i] = cloneMessage(m)
	}
	c.changedLocked()
	return out
}

func cloneMessage(m *sdk.Message) *sdk.Message {
	var hs map[string]string
	if len(m.Headers) > 0 {
		hs = make(map[string]string, len(m.Headers))
		maps.Copy(hs, m.Headers)
	}
	return &sdk.Message{Id: m.Id, Topic: m.Topic, Queue: m.Queue, Offset: m.Offset, Key: m.Key, Headers: hs, Body: append([]byte(nil), m.Body...),
		BornUnixNano: m.BornUnixNano, StoredUnixNano: m.StoredUnixNano}
}

// applyConsensus stores msgs at their queues' next offsets (Apply of a
// consensus core); a message whose id its queue holds keeps its offset.
func (c *ReplicaTestCore) applyConsensusLocked(msgs []*sdk.Message) []int64 {
	offs := make([]int64, len(msgs))
	for i, m := range msgs {
		k := queueKey{m.Topic, m.Queue}
		offs[i] = -1
		for o, have := range c.logs[k] {
			if have.Id == m.Id {
				offs[i] = int64(o)
			}
		}
		if offs[i] < 0 {
			m = cloneMessage(m)
			m.Offset = int64(len(c.logs[k]))
			offs[i] = m.Offset
			c.logs[k] = append(c.logs[k], m)
		}
	}
	c.changedLocked()
	return offs
}

// Apply appends a master's messages at the offsets they carry.
func (c *ReplicaTestCore) Apply(ctx context.Context, msgs []*sdk.Message) (sdk.ApplyWait, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.consensus {
		offs := c.applyConsensusLocked(msgs)
		return func(context.Context) ([]int64, error) { return offs, nil }, nil
	}
	next := map[queueKey]int64{}
	for _, m := range msgs {
		k := queueKey{m.Topic, m.Queue}
		n, ok := next[k]
		if !ok {
			n = int64(len(c.logs[k]))
		}
		if m.Offset != n {
			c.refused++
			err := fmt.Errorf("%w: sdktest core %s: message %s carries offset %d of %s/%d, whose next offset is %d (the logs diverged)",
				sdk.ErrCorrupt, c.node, m.Id, m.Offset, m.Topic, m.Queue, n)
			return func(context.Context) ([]int64, error) { return nil, err }, nil
		}
		next[k] = n + 1
	}
	offs := make([]int64, len(msgs))
	for i, m := range msgs {
		k := queueKey{m.Topic, m.Queue}
		offs[i] = int64(len(c.logs[k]))
		c.logs[k] = append(c.logs[k], cloneMessage(m))
	}
	c.changedLocked()
	return func(context.Context) ([]int64, error) { return offs, nil }, nil
}

// Read reads a queue of the log.
func (c *ReplicaTestCore) Read(ctx context.Context, req *sdk.ReadRequest) (*sdk.ReadResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	log := c.logs[queueKey{req.Topic, req.Queue}]
	resp := &sdk.ReadResponse{Id: req.Id, Offsets: &sdk.QueueOffsets{Topic: req.Topic, Queue: req.Queue, End: int64(len(log)), Committed: -1}}
	limit := int(req.MaxMessages)
	if limit <= 0 {
		limit = 1024
	}
	for o := max(req.Offset, 0); o < int64(len(log)) && len(resp.Messages) < limit; o++ {
		resp.Messages = append(resp.Messages, cloneMessage(log[o]))
	}
	return resp, nil
}

// NodeInfo tells the node, its role and its queues' offsets.
func (c *ReplicaTestCore) NodeInfo(ctx context.Context) (*sdk.NodeInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Every node of the suite holds the one topic its cases use, as a
	// broker declaring it in its pipeline would.
	info := &sdk.NodeInfo{Node: c.node, Address: "broker-" + c.node, Role: c.role,
		Topics: []*sdk.ReplicatedTopic{{Name: replTopic, Queues: replQueues}}}
	for k, log := range c.logs {
		info.Offsets = append(info.Offsets, &ferryv1.QueueOffsets{Topic: k.topic, Queue: k.queue, End: int64(len(log)), Committed: -1})
	}
	sort.Slice(info.Offsets, func(i, j int) bool {
		if info.Offsets[i].Topic != info.Offsets[j].Topic {
			return info.Offsets[i].Topic < info.Offsets[j].Topic
		}
		return info.Offsets[i].Queue < info.Offsets[j].Queue
	})
	return info, nil
}

// SetRole records the plugin's role changes.
func (c *ReplicaTestCore) SetRole(ctx context.Context, req *sdk.SetRoleRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roles = append(c.roles, req.Role)
	c.lastRole = &sdk.SetRoleRequest{Role: req.Role, LeaderNode: req.LeaderNode, LeaderAddress: req.LeaderAddress}
	c.changedLocked()
	return nil
}

// ApplyTopics takes a change of the topic metadata: the suite's one topic
// is every node's own, so a change leaves it as it is (as a broker does with
// a topic its pipeline declares); the suite does not check topic
// replication.
func (c *ReplicaTestCore) ApplyTopics(ctx context.Context, change *sdk.TopicChange) error {
	return nil
}

// CommitOffsets takes a group's offsets (the suite does not check them).
func (c *ReplicaTestCore) CommitOffsets(ctx context.Context, group string, offsets []*sdk.GroupOffset) error {
	return nil
}

// DeleteGroupOffsets takes a group's deletion (the suite does not check it).
func (c *ReplicaTestCore) DeleteGroupOffsets(ctx context.Context, group string, generation uint64) error {
	return nil
}

// queueLog returns a copy of a queue's log.
func (c *ReplicaTestCore) queueLog(topic string, queue int32) []*sdk.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*sdk.Message(nil), c.logs[queueKey{topic, queue}]...)
}

// has reports whether the log holds msg (by id) at its offset.
func (c *ReplicaTestCore) has(m *sdk.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	log := c.logs[queueKey{m.Topic, m.Queue}]
	return m.Offset < int64(len(log)) && log[m.Offset].Id == m.Id
}

// latestRole returns the role the plugin last told the core ("" before any)
// and the leader it named.
func (c *ReplicaTestCore) latestRole() (role, leader string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastRole == nil {
		return "", ""
	}
	return c.lastRole.Role, c.lastRole.LeaderNode
}

// readCalls returns how many Read calls the core served.
func (c *ReplicaTestCore) readCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

// holdsID reports whether any queue of the log holds a message with id.
func (c *ReplicaTestCore) holdsID(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, log := range c.logs {
		for _, m := range log {
			if m.Id == id {
				return true
			}
		}
	}
	return false
}

// changes returns a channel closed at the core's next change.
func (c *ReplicaTestCore) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.progress
}
