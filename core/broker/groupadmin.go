package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ferrymq/ferry/core/names"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// This file holds the broker's side of the consumer-group calls
// (sdk.GroupAdmin), which `ferry group` makes. The broker keeps no group
// record of its own: a group is its live members (groups), the offsets it
// committed (in the store) and the messages in its retry and dead-letter
// topics. So these calls read and change those.

var _ sdk.GroupAdmin = (*Broker)(nil)

// ListGroups is Broker.ListGroups: the pipeline's groups, those with live
// members, those seen since the start, and those with committed offsets in
// the store (when it lists them: sdk.GroupStore). The DLQ tools' cursors
// (named like a %DLQ% topic) are left out.
func (b *Broker) ListGroups(ctx context.Context, _ *sdk.ListGroupsRequest) (*sdk.ListGroupsResponse, error) {
	set := map[string]bool{}
	b.knownMu.Lock()
	for g := range b.known {
		set[g] = true
	}
	b.knownMu.Unlock()
	for _, g := range b.groups.names() {
		set[g] = true
	}
	stored, err := b.storedGroups(ctx)
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return nil, err
	}
	for _, g := range stored {
		set[g] = true
	}
	resp := &sdk.ListGroupsResponse{}
	for g := range set {
		if _, _, internal := sdk.InternalTopic(g); internal {
			continue
		}
		members := b.groups.describe(g)
		queues, err := b.groupQueues(ctx, g, members)
		if err != nil {
			return nil, err
		}
		s := &ferryv1.GroupSummary{Name: g, Members: int32(len(members))}
		for _, q := range queues {
			if len(s.Topics) == 0 || s.Topics[len(s.Topics)-1] != q.Topic {
				s.Topics = append(s.Topics, q.Topic)
			}
			s.Lag += q.Lag
		}
		resp.Groups = append(resp.Groups, s)
	}
	sort.Slice(resp.Groups, func(i, j int) bool { return resp.Groups[i].Name < resp.Groups[j].Name })
	return resp, nil
}

// storedGroups asks the store for the groups it holds offsets of;
// errors.ErrUnsupported from a store without sdk.GroupStore.
func (b *Broker) storedGroups(ctx context.Context) (out []string, err error) {
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	err = b.storageCall(cctx, func(s sdk.Storage) (err error) {
		gs, ok := s.(sdk.GroupStore)
		if !ok {
			return fmt.Errorf("%w: the store does not list consumer groups", errors.ErrUnsupported)
		}
		out, err = gs.StoredGroups(cctx)
		return err
	})
	return out, err
}

// groupQueues returns, sorted by topic and queue, every queue of the topics
// group consumes: those its live members name and those it committed
// offsets on (the group's internal topics apart), with the queue's offsets,
// the group's and its lag, and the member that reported holding it.
func (b *Broker) groupQueues(ctx context.Context, group string, members []*ferryv1.GroupMember) ([]*ferryv1.GroupQueue, error) {
	subscribed := map[string]bool{}
	holder := map[groupQueue]string{}
	for _, m := range members {
		for _, t := range m.Topics {
			subscribed[t] = true
		}
		for _, q := range m.Queues {
			holder[groupQueue{q.Topic, q.Queue}] = m.Id
		}
	}
	var refs []*sdk.QueueRef
	b.topicsMu.RLock()
	for _, t := range b.topics {
		if !t.internal {
			for q := range t.queues() {
				refs = append(refs, &sdk.QueueRef{Topic: t.name, Queue: q})
			}
		}
	}
	b.topicsMu.RUnlock()
	offs, err := b.storeOffsets(ctx, group, refs)
	if err != nil {
		return nil, err
	}
	for _, o := range offs {
		if o.Committed >= 0 {
			subscribed[o.Topic] = true
		}
	}
	var out []*ferryv1.GroupQueue
	for _, o := range offs {
		if !subscribed[o.Topic] {
			continue
		}
		out = append(out, &ferryv1.GroupQueue{Topic: o.Topic, Queue: o.Queue, Start: o.Start, End: o.End, Committed: o.Committed,
			Lag: lag(o), Member: holder[groupQueue{o.Topic, o.Queue}]})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Queue < out[j].Queue
	})
	return out, nil
}

// lag is what a group has still to consume of a queue: from its committed
// offset, or from the queue's start when it committed nothing (or below
// the start: retention removed the rest).
func lag(o *sdk.QueueOffsets) int64 {
	return o.End - max(o.Committed, o.Start)
}

// storeOffsets is the store's GetOffsets, bounded.
func (b *Broker) storeOffsets(ctx context.Context, group string, refs []*sdk.QueueRef) (offs []*sdk.QueueOffsets, err error) {
	if len(refs) == 0 {
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	err = b.storageCall(cctx, func(s sdk.Storage) (err error) {
		offs, err = s.GetOffsets(cctx, group, refs)
		return err
	})
	return offs, err
}

// internalSizes returns the messages held by group's retry and dead-letter
// topics.
func (b *Broker) internalSizes(ctx context.Context, group string) ([]*ferryv1.InternalTopicSize, error) {
	var out []*ferryv1.InternalTopicSize
	for _, name := range []string{sdk.RetryTopic(group), sdk.DLQTopic(group)} {
		_, queues, _ := sdk.InternalTopic(name)
		refs := make([]*sdk.QueueRef, queues)
		for q := range queues {
			refs[q] = &sdk.QueueRef{Topic: name, Queue: q}
		}
		offs, err := b.storeOffsets(ctx, "", refs)
		if err != nil {
			return nil, err
		}
		s := &ferryv1.InternalTopicSize{Topic: name}
		for _, o := range offs {
			s.Messages += o.End - o.Start
		}
		out = append(out, s)
	}
	return out, nil
}

// knownGroup checks group's name and that it exists (groupExists, or
// offsets in the store), else ErrNotFound.
func (b *Broker) knownGroup(ctx context.Context, group string) error {
	if err := names.Group(group); err != nil {
		return fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
	}
	if _, _, internal := sdk.InternalTopic(group); internal {
		return fmt.Errorf("%w: group %q: a name with a reserved prefix is a DLQ tool's cursor, not a consumer group", sdk.ErrInvalidArgument, group)
	}
	ok, err := b.groupExists(ctx, group)
	if err != nil || ok {
		return err
	}
	stored, err := b.storedGroups(ctx)
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	if slices.Contains(stored, group) {
		return nil
	}
	return fmt.Errorf("%w: unknown group %q (a group exists here once it has live members, committed offsets or messages in its retry or dead-letter topic)", sdk.ErrNotFound, group)
}

// DescribeGroup is Broker.DescribeGroup.
func (b *Broker) DescribeGroup(ctx context.Context, req *sdk.DescribeGroupRequest) (*sdk.DescribeGroupResponse, error) {
	if err := b.knownGroup(ctx, req.Group); err != nil {
		return nil, err
	}
	members := b.groups.describe(req.Group)
	queues, err := b.groupQueues(ctx, req.Group, members)
	if err != nil {
		return nil, err
	}
	internal, err := b.internalSizes(ctx, req.Group)
	if err != nil {
		return nil, err
	}
	resp := &sdk.DescribeGroupResponse{Group: req.Group, Members: members, Queues: queues, Internal: internal}
	resp.Ephemeral, resp.DeleteAtUnixNano = b.ephemeralState(req.Group)
	return resp, nil
}

// liveRefusal is the error for a change refused while group has members.
func liveRefusal(group string, live []string, what string) error {
	return fmt.Errorf("%w: group %q has %d live members (%s); stop them before you %s",
		sdk.ErrInvalidArgument, group, len(live), strings.Join(live, ", "), what)
}

// ResetOffsets is Broker.ResetOffsets. The new offsets are committed as a
// consumer commits them (CommitOffsets), so on a node with a replication
// plugin they replicate as every commit does; a node that does not take
// produce refuses (ErrNotLeader), as a commit there would not replicate.
func (b *Broker) ResetOffsets(ctx context.Context, req *sdk.ResetOffsetsRequest) (*sdk.ResetOffsetsResponse, error) {
	if b.repl != nil {
		if err := b.role.checkProduce(); err != nil {
			return nil, fmt.Errorf("%w: reset offsets on the node that takes produce, from where they replicate", err)
		}
	}
	if req.To == ferryv1.ResetTo_RESET_TO_UNSPECIFIED {
		return nil, fmt.Errorf("%w: reset offsets: say where to (earliest, latest, an offset or a time)", sdk.ErrInvalidArgument)
	}
	if err := b.knownGroup(ctx, req.Group); err != nil {
		return nil, err
	}
	if _, _, internal := sdk.InternalTopic(req.Topic); internal {
		return nil, fmt.Errorf("%w: topic %q is a consumer group's internal topic; its offsets are the consumers' own", sdk.ErrInvalidArgument, req.Topic)
	}
	t, err := b.topic(req.Topic)
	if err != nil {
		return nil, err
	}
	if live := b.groups.live(req.Group); len(live) > 0 && !req.Force {
		return nil, liveRefusal(req.Group, live, "reset its offsets, or force the reset (they keep their positions and commit them over it)")
	}
	queues := req.Queues
	if len(queues) == 0 {
		for q := range t.queues() {
			queues = append(queues, q)
		}
	}
	refs := make([]*sdk.QueueRef, len(queues))
	for i, q := range queues {
		if err := b.checkQueue(t, q); err != nil {
			return nil, err
		}
		if slices.Contains(queues[:i], q) {
			return nil, fmt.Errorf("%w: queue %d is listed twice", sdk.ErrInvalidArgument, q)
		}
		refs[i] = &sdk.QueueRef{Topic: t.name, Queue: q}
	}
	offs, err := b.storeOffsets(ctx, req.Group, refs)
	if err != nil {
		return nil, err
	}
	if len(offs) != len(refs) {
		return nil, fmt.Errorf("%w: storage answered %d offsets for %d queues", sdk.ErrUnavailable, len(offs), len(refs))
	}
	var byTime []int64
	if req.To == ferryv1.ResetTo_RESET_TO_TIME {
		if byTime, err = b.offsetsForTime(ctx, req.TimestampUnixNano, refs); err != nil {
			return nil, err
		}
	}
	resp := &sdk.ResetOffsetsResponse{}
	commit := make([]*sdk.GroupOffset, len(offs))
	for i, o := range offs {
		to := o.Start
		switch req.To {
		case ferryv1.ResetTo_RESET_TO_LATEST:
			to = o.End
		case ferryv1.ResetTo_RESET_TO_TIME:
			// Asked after GetOffsets: appends or retention since may
			// have moved the queue; the answer stays within what
			// GetOffsets saw, as every other reset does.
			to = min(max(byTime[i], o.Start), o.End)
		case ferryv1.ResetTo_RESET_TO_OFFSET:
			if req.Offset < o.Start || req.Offset > o.End {
				return nil, fmt.Errorf("%w: offset %d is outside queue %s/%d, which holds offsets %d to %d (reset to %d..%d, where %d is the next message's)",
					sdk.ErrInvalidArgument, req.Offset, t.name, o.Queue, o.Start, o.End-1, o.Start, o.End, o.End)
			}
			to = req.Offset
		}
		commit[i] = &sdk.GroupOffset{Topic: t.name, Queue: o.Queue, Offset: to}
		resp.Queues = append(resp.Queues, &ferryv1.ResetQueue{Topic: t.name, Queue: o.Queue, Previous: o.Committed, Committed: to})
	}
	if req.DryRun {
		return resp, nil
	}
	if err := b.commitOffsets(ctx, req.Group, commit, b.topicAt); err != nil {
		return nil, err
	}
	if b.repl != nil {
		if err := b.repl.commit(ctx, req.Group, 0, commit, false); err != nil {
			return nil, err
		}
	}
	b.log.Info("group offsets reset", "group", req.Group, "topic", t.name, "queues", len(commit), "to", req.To.String(), "force", req.Force)
	return resp, nil
}

// offsetsForTime asks the store for the first offset of each queue stored
// at or after unixNano (sdk.TimeSeeker); errors.ErrUnsupported from a
// store without the capability.
func (b *Broker) offsetsForTime(ctx context.Context, unixNano int64, refs []*sdk.QueueRef) (out []int64, err error) {
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	err = b.storageCall(cctx, func(s sdk.Storage) (err error) {
		ts, ok := s.(sdk.TimeSeeker)
		if !ok {
			return fmt.Errorf("%w: resetting offsets to a time: the store cannot seek by time (sdk.TimeSeeker); reset to an offset", errors.ErrUnsupported)
		}
		out, err = ts.OffsetsForTime(cctx, unixNano, refs)
		return err
	})
	if err != nil {
		if errors.Is(err, errors.ErrUnsupported) && !strings.Contains(err.Error(), "seek by time") {
			err = fmt.Errorf("resetting offsets to a time: the storage plugin cannot seek by time: %w", err)
		}
		return nil, err
	}
	if len(out) != len(refs) {
		return nil, fmt.Errorf("%w: storage answered %d offsets for %d queues", sdk.ErrUnavailable, len(out), len(refs))
	}
	return out, nil
}

// DeleteGroup is Broker.DeleteGroup: it removes the group's committed
// offsets from the store (sdk.GroupStore). It is refused while the group has
// live members on this node, unless forced. On a node with a replication
// plugin the deletion is made on every node (replicateGroupDelete).
func (b *Broker) DeleteGroup(ctx context.Context, req *sdk.DeleteGroupRequest) (*sdk.DeleteGroupResponse, error) {
	var gr sdk.GroupDeleteReplication
	first := false
	if b.repl != nil {
		if err := b.role.checkProduce(); err != nil {
			return nil, fmt.Errorf("consumer groups are deleted on the node that takes produce, from where the deletion replicates: %w", err)
		}
		var err error
		if gr, err = b.groupDeleteReplicator(); err != nil {
			return nil, err
		}
		if first, err = b.repl.replicateFirst(); err != nil {
			return nil, err
		}
	}
	if err := b.knownGroup(ctx, req.Group); err != nil {
		return nil, err
	}
	if live := b.groups.live(req.Group); len(live) > 0 && !req.Force {
		return nil, liveRefusal(req.Group, live, "delete it, or force the delete (they keep their positions and may commit them again)")
	}
	// After the commits under way, before any that comes meanwhile
	// (groupgate.go).
	open, err := b.gates.beginDelete(ctx, req.Group)
	if err != nil {
		return nil, err
	}
	defer open()
	// The generation after the deletion (groupgen.go): raised here before
	// the offsets go, so that no commit of the old generation is taken
	// once the gate opens; on raft by the log's entry, applied here too.
	cur, err := b.gens.get(req.Group)
	if err != nil {
		return nil, err
	}
	gen := cur + 1
	switch {
	case gr == nil:
		if err := b.gens.raise(req.Group, gen); err != nil {
			return nil, err
		}
		if err := b.deleteGroupOffsets(ctx, req.Group); err != nil {
			return nil, err
		}
	case first:
		// raft: through the log, applied on every node (this one
		// included, through ReplicaCore.DeleteGroupOffsets).
		if err := gr.ReplicateGroupDelete(ctx, req.Group, gen); err != nil {
			return nil, fmt.Errorf("group %q: %w", req.Group, err)
		}
	default:
		// master–slave: here first, then shipped to the slaves.
		if err := b.gens.raise(req.Group, gen); err != nil {
			return nil, err
		}
		if err := b.deleteGroupOffsets(ctx, req.Group); err != nil {
			return nil, err
		}
		if err := gr.ReplicateGroupDelete(ctx, req.Group, gen); err != nil {
			return nil, fmt.Errorf("group %q: its offsets are deleted on this node, but the deletion was not shipped to the slaves (delete it again): %w", req.Group, err)
		}
	}
	internal, err := b.internalSizes(ctx, req.Group)
	if err != nil {
		return nil, err
	}
	b.log.Info("group deleted", "group", req.Group, "force", req.Force, "replicated", gr != nil)
	return &sdk.DeleteGroupResponse{Internal: internal}, nil
}

// groupDeleteReplicator is the live plugin as a replicator of group
// deletions, or an error saying why a group cannot be deleted on this node.
func (b *Broker) groupDeleteReplicator() (sdk.GroupDeleteReplication, error) {
	impl, _, _ := b.repl.src.Current()
	if impl == nil {
		return nil, fmt.Errorf("%w: replication plugin is restarting", sdk.ErrUnavailable)
	}
	gr, ok := impl.(sdk.GroupDeleteReplication)
	if c, announces := impl.(interface{ ReplicatesGroupDeletes() bool }); ok && announces {
		ok = c.ReplicatesGroupDeletes()
	}
	if !ok {
		return nil, fmt.Errorf("%w: deleting a consumer group on this replicated node: its replication plugin does not replicate group deletions (replicates_group_deletes), and the replicas would keep the group's offsets", errors.ErrUnsupported)
	}
	return gr, nil
}

// deleteGroupOffsets deletes group's committed offsets on this node: from
// the store, from the groups seen since the start (unless the pipeline
// names it), and from what the replicator reports. Idempotent.
func (b *Broker) deleteGroupOffsets(ctx context.Context, group string) error {
	cctx, cancel := context.WithTimeout(ctx, storageCallTimeout)
	defer cancel()
	if err := b.storageCall(cctx, func(s sdk.Storage) error {
		gs, ok := s.(sdk.GroupStore)
		if !ok {
			return fmt.Errorf("%w: the store cannot delete a group's offsets", errors.ErrUnsupported)
		}
		return gs.DeleteGroupOffsets(cctx, group)
	}); err != nil {
		return err
	}
	if !slices.Contains(b.opts.Groups, group) {
		b.knownMu.Lock()
		delete(b.known, group)
		b.knownMu.Unlock()
	}
	if b.repl != nil {
		b.repl.forget(group)
	}
	return nil
}

// DeleteGroupOffsets deletes a group's offsets on this node, as replicated
// (sdk.ReplicaCore.DeleteGroupOffsets), after the commits of this node's
// clients under way (on a raft follower, until the leader answered their
// forward); commits arriving meanwhile are refused. The group's generation
// becomes generation if that is higher (0, from a deletion that carries
// none, leaves it), before its offsets go.
func (c replicaCore) DeleteGroupOffsets(ctx context.Context, group string, generation uint64) error {
	if err := names.Group(group); err != nil {
		return fmt.Errorf("%w: replicated group deletion: %v", sdk.ErrInvalidArgument, err)
	}
	// After this node's clients' commits under way (groupgate.go).
	open, err := c.b.gates.beginReplicatedDelete(ctx, group)
	if err != nil {
		return err
	}
	defer open()
	if err := c.b.gens.raise(group, generation); err != nil {
		return err
	}
	if err := c.b.deleteGroupOffsets(ctx, group); err != nil {
		return err
	}
	c.b.log.Info("group deleted (replicated)", "group", group, "generation", generation)
	return nil
}
