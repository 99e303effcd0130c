package broker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

// topicRepl is a master–slave plugin that replicates topic metadata: it
// records each change with whether the master held the topic then.
type topicRepl struct {
	*fakeRepl
	b       *Broker
	mu      sync.Mutex
	changes []string
}

func (r *topicRepl) ReplicateTopics(_ context.Context, ch *sdk.TopicChange) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	held := false
	for _, t := range r.b.topicSet(nil) {
		held = held || t.Name == ch.Name
	}
	var set []string
	for _, t := range ch.Topics {
		set = append(set, t.Name)
	}
	r.changes = append(r.changes, ch.Op+" "+ch.Name+" held="+map[bool]string{true: "yes", false: "no"}[held]+" set="+strings.Join(set, ","))
	return nil
}

// On a master, a created topic is shipped (as the master's whole set)
// before the master serves it, a deleted one after it left; a slave refuses
// every topic change, naming its master.
func TestReplicatedTopicChangesOnMasterSlave(t *testing.T) {
	ctx := context.Background()
	r := &topicRepl{fakeRepl: &fakeRepl{status: ferryv1.Status_STATUS_OK}}
	m := newReplBroker(t, sdk.RoleMaster, r)
	r.b = m
	if _, err := m.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: "clicks", Queues: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 3}); err == nil || !strings.Contains(err.Error(), `topic "clicks" already exists`) {
		t.Errorf("a second create: %v", err)
	}
	if _, err := m.DeleteTopic(ctx, &sdk.DeleteTopicRequest{Name: "clicks"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"create clicks held=no set=clicks,orders", "alter clicks held=yes set=clicks,orders", "delete clicks held=no set=orders"}
	if strings.Join(r.changes, "|") != strings.Join(want, "|") {
		t.Errorf("shipped %q, want %q", r.changes, want)
	}

	s := newReplBroker(t, sdk.RoleSlave, &topicRepl{fakeRepl: &fakeRepl{status: ferryv1.Status_STATUS_OK}})
	if err := s.ReplicaCore().SetRole(ctx, &sdk.SetRoleRequest{Role: sdk.RoleSlave, LeaderNode: "m1", LeaderAddress: "127.0.0.1:7171"}); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 3})
	if !errors.Is(err, sdk.ErrNotLeader) || !strings.Contains(err.Error(), "m1 at 127.0.0.1:7171") {
		t.Errorf("create on a slave: %v, want not leader naming the master", err)
	}
}

// ApplyTopics is idempotent and keeps the node's pipeline as its baseline:
// a replicated delete of a declared topic, or a set without it, leaves it.
func TestApplyTopics(t *testing.T) {
	ctx := context.Background()
	b := New(Options{Node: "n1", DataDir: t.TempDir(), Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(newMemory(t)))
	if err := b.OpenTopics(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close(ctx)
	c := b.ReplicaCore()
	steps := []*sdk.TopicChange{
		{Op: sdk.TopicCreate, Name: "clicks", Queues: 3},
		{Op: sdk.TopicCreate, Name: "clicks", Queues: 3}, // again: nothing changes
		{Op: sdk.TopicAlter, Name: "clicks", Queues: 5},
		{Op: sdk.TopicAlter, Name: "clicks", Queues: 4}, // below: nothing changes
		{Op: sdk.TopicDelete, Name: "orders"},           // declared: kept
		{Op: sdk.TopicDelete, Name: "gone"},             // unknown: nothing
		{Op: sdk.TopicSet, Topics: []*sdk.ReplicatedTopic{{Name: "clicks", Queues: 5}, {Name: "views", Queues: 1}}},
	}
	for _, s := range steps {
		if err := c.ApplyTopics(ctx, s); err != nil {
			t.Fatalf("%v: %v", s, err)
		}
	}
	got := metadataTopics(t, b)
	if got["clicks"] != 5 || got["orders"] != 2 || got["views"] != 1 || len(got) != 3 {
		t.Errorf("topics %v, want clicks:5 orders:2 views:1", got)
	}
	if err := c.ApplyTopics(ctx, &sdk.TopicChange{Op: sdk.TopicSet, Topics: []*sdk.ReplicatedTopic{{Name: "views", Queues: 1}}}); err != nil {
		t.Fatal(err)
	}
	if got := metadataTopics(t, b); got["clicks"] != 0 || got["orders"] != 2 || len(got) != 2 {
		t.Errorf("after a set without clicks: %v", got)
	}
	if err := c.ApplyTopics(ctx, &sdk.TopicChange{Op: sdk.TopicCreate, Name: "bad name", Queues: 1}); !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("a bad name: %v", err)
	}
	info, err := c.NodeInfo(ctx)
	if err != nil || len(info.Topics) != 2 || info.Topics[0].Name != "orders" || info.Topics[1].Name != "views" {
		t.Errorf("NodeInfo topics %v, %v", info.GetTopics(), err)
	}
}

// With auto_create_topics on a replicated node, a producer's first send on
// the master creates the topic through the plugin; asked on a slave,
// Metadata creates nothing and answers as without the option (naming the
// master), so a client seeded with the slave routes to the master.
func TestAutoCreateReplicated(t *testing.T) {
	ctx := context.Background()
	for _, role := range []string{sdk.RoleMaster, sdk.RoleSlave} {
		r := &topicRepl{fakeRepl: &fakeRepl{status: ferryv1.Status_STATUS_OK}}
		b := New(Options{Node: "n1", Address: "127.0.0.1:1", Role: role, Topics: []Topic{{Name: "orders", Queues: 2}},
			AutoCreateQueues: 3, Replication: replSource{r}}, newSource(newMemory(t)))
		r.b = b
		b.Start()
		if role == sdk.RoleSlave {
			if err := b.ReplicaCore().SetRole(ctx, &sdk.SetRoleRequest{Role: sdk.RoleSlave, LeaderNode: "m1", LeaderAddress: "127.0.0.1:7171"}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{"clicks"}, AutoCreate: true})
		switch {
		case err != nil:
			t.Errorf("%s: Metadata with auto_create: %v", role, err)
		case role == sdk.RoleMaster && (len(resp.Topics) != 1 || resp.Topics[0].Queues != 3 || len(r.changes) != 1):
			t.Errorf("master: Metadata %v, shipped %q; want clicks created with 3 queues, shipped once", resp, r.changes)
		case role == sdk.RoleSlave && (len(resp.Topics) != 0 || len(r.changes) != 0 || len(resp.Brokers) != 2):
			t.Errorf("slave: Metadata %v, shipped %q; want nothing created, the master named", resp, r.changes)
		}
		_ = b.Close(ctx)
	}
}
