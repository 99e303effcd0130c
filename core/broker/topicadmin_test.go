package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/sdk"
)

func TestCreateTopicAndAddQueues(t *testing.T) {
	dir := t.TempDir()
	b := New(Options{Node: "n1", DataDir: dir, Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(newMemory(t)))
	if err := b.OpenTopics(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close(context.Background())
	ctx := context.Background()

	if err := b.NewTopic("Clicks.v1", 2); err != nil {
		t.Fatal(err)
	}
	// Producers write to every queue they know while queues are added.
	var wg sync.WaitGroup
	var produced atomic.Int64
	errs := make(chan error, 4)
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				md, err := b.Metadata(ctx, &sdk.MetadataRequest{Topics: []string{"Clicks.v1"}})
				if err != nil {
					errs <- err
					return
				}
				q := int32(i) % md.Topics[0].Queues
				_, err = b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: fmt.Sprint(w, "-", i), Topic: "Clicks.v1", Queue: q, Body: []byte("x")}}})
				if err != nil {
					errs <- err
					return
				}
				produced.Add(1)
			}
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); produced.Load() < 20; {
		if time.Now().After(deadline) {
			t.Fatal("producers stored nothing in 30 s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.AddQueues("Clicks.v1", 6); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("produce while queues were added: %v", err)
	}
	if _, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: "new-q", Topic: "Clicks.v1", Queue: 5, Body: []byte("x")}}}); err != nil {
		t.Fatalf("produce to an added queue: %v", err)
	}

	for _, c := range []struct {
		err  error
		is   error
		want string
	}{
		{b.NewTopic("Clicks.v1", 2), sdk.ErrInvalidArgument, `topic "Clicks.v1" already exists (with 6 queues)`},
		{b.NewTopic("orders", 2), sdk.ErrInvalidArgument, `topic "orders" already exists`},
		{b.NewTopic("bad name", 2), sdk.ErrInvalidArgument, `character ' ' at position 4`},
		{b.NewTopic("%DLQ%billing", 1), sdk.ErrInvalidArgument, `the prefix %DLQ% is reserved`},
		{b.NewTopic("many", MaxQueues+1), sdk.ErrInvalidArgument, `queues must be between 1 and 1024, got 1025`},
		{b.AddQueues("Clicks.v1", 3), sdk.ErrInvalidArgument, `topic "Clicks.v1" has 6 queues; it cannot shrink to 3`},
		{b.AddQueues("Clicks.v1", 6), sdk.ErrInvalidArgument, `already has 6 queues`},
		{b.AddQueues("nope", 6), sdk.ErrNotFound, `unknown topic "nope"`},
		{b.AddQueues(sdk.RetryTopic("g"), 40), sdk.ErrInvalidArgument, `internal topic`},
	} {
		if !errors.Is(c.err, c.is) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("error %v, want %v containing %q", c.err, c.is, c.want)
		}
	}

	// What was created and added is held by the node: a broker opened on
	// the same data dir serves it.
	b2, err := openTopics(t, dir, Topic{Name: "orders", Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := metadataTopics(t, b2); got["Clicks.v1"] != 6 || got["orders"] != 2 || len(got) != 2 {
		t.Fatalf("reopened node serves %v, want Clicks.v1:6 and orders:2", got)
	}
}

// Over the wire (sdk.TopicAdmin) the calls answer the topic as it now is; a
// node whose replication plugin does not replicate topic metadata refuses
// them with one clear error.
func TestTopicAdminCalls(t *testing.T) {
	ctx := context.Background()
	b := New(Options{Node: "n1", DataDir: t.TempDir(), Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(newMemory(t)))
	if err := b.OpenTopics(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close(ctx)
	c, err := b.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 3})
	if err != nil || c.Topic.GetName() != "clicks" || c.Topic.GetQueues() != 3 {
		t.Fatalf("CreateTopic = %v, %v", c, err)
	}
	a, err := b.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: "clicks", Queues: 5})
	if err != nil || a.Topic.GetQueues() != 5 {
		t.Fatalf("AlterTopic = %v, %v", a, err)
	}

	r := newReplBroker(t, sdk.RoleMaster, &fakeRepl{status: ferryv1.Status_STATUS_OK})
	_, err = r.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 3})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "does not replicate topic metadata") {
		t.Errorf("CreateTopic on a replicated node: %v", err)
	}
	if _, err := r.AlterTopic(ctx, &sdk.AlterTopicRequest{Name: "orders", Queues: 3}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("AlterTopic on a replicated node: %v", err)
	}
}

// DeleteTopic takes a topic out of routing and the topic metadata and its
// data and groups' offsets out of the store; it refuses internal, unknown
// and declared topics, topics groups consume (unless forced), and nodes
// whose replication plugin does not replicate topics. A topic created again with the name is empty.
func TestDeleteTopic(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := New(Options{Node: "n1", DataDir: dir, Topics: []Topic{{Name: "orders", Queues: 2}}}, newSource(newMemory(t)))
	if err := b.OpenTopics(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close(ctx)
	if _, err := b.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 2}); err != nil {
		t.Fatal(err)
	}
	send := func(id string) error {
		_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: id, Topic: "clicks", Queue: 1, Body: []byte("x")}}})
		return err
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := send(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.CommitOffsets(ctx, &sdk.CommitOffsetsRequest{Group: "billing", Offsets: []*sdk.GroupOffset{{Topic: "clicks", Queue: 1, Offset: 2}}}); err != nil {
		t.Fatal(err)
	}
	del := func(name string, force bool) error {
		_, err := b.DeleteTopic(ctx, &sdk.DeleteTopicRequest{Name: name, Force: force})
		return err
	}
	for _, c := range []struct {
		err  error
		is   error
		want string
	}{
		{del("clicks", false), sdk.ErrInvalidArgument, `topic "clicks" is consumed by group(s) billing`},
		{del("orders", true), sdk.ErrInvalidArgument, `declared in the pipeline's topics`},
		{del("%DLQ%billing", true), sdk.ErrInvalidArgument, `internal topic`},
		{del("nope", true), sdk.ErrNotFound, `unknown topic "nope"`},
	} {
		if !errors.Is(c.err, c.is) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%v, want %v with %q", c.err, c.is, c.want)
		}
	}
	resp, err := b.DeleteTopic(ctx, &sdk.DeleteTopicRequest{Name: "clicks", Force: true})
	if err != nil || strings.Join(resp.Groups, ",") != "billing" {
		t.Fatalf("forced DeleteTopic = %v, %v", resp, err)
	}
	if err := send("d"); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("produce to the deleted topic: %v, want not found", err)
	}
	tf, _, err := readTopicsFile(dir)
	if err != nil || len(tf.Topics) != 1 || tf.Topics[0].Name != "orders" {
		t.Errorf("topics.json after the delete: %+v, %v", tf, err)
	}
	if _, err := b.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 2}); err != nil {
		t.Fatal(err)
	}
	offs, err := b.GetOffsets(ctx, &sdk.GetOffsetsRequest{Group: "billing", Queues: []*sdk.QueueRef{{Topic: "clicks", Queue: 1}}})
	if err != nil || offs.Offsets[0].End != offs.Offsets[0].Start || offs.Offsets[0].Committed != -1 {
		t.Errorf("the topic created again: %v, %v; want empty, nothing committed", offs, err)
	}

	r := newReplBroker(t, sdk.RoleMaster, &fakeRepl{status: ferryv1.Status_STATUS_OK})
	if _, err := r.DeleteTopic(ctx, &sdk.DeleteTopicRequest{Name: "orders", Force: true}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("DeleteTopic on a replicated node: %v", err)
	}
}

// Produces under way when DeleteTopic takes the topic out of routing are
// answered before its data is deleted: nothing a producer was told was
// stored is left in the store after the delete, and every produce after it
// is refused.
func TestDeleteTopicWhileProducing(t *testing.T) {
	ctx := context.Background()
	mem := newMemory(t)
	b := New(Options{Node: "n1", DataDir: t.TempDir()}, newSource(mem))
	if err := b.OpenTopics(); err != nil {
		t.Fatal(err)
	}
	b.Start()
	defer b.Close(ctx)
	if _, err := b.CreateTopic(ctx, &sdk.CreateTopicRequest{Name: "clicks", Queues: 2}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var stored atomic.Int64
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := b.Produce(ctx, &sdk.ProduceRequest{Messages: []*sdk.Message{{Id: fmt.Sprintf("w%d-%d", w, i), Topic: "clicks", Queue: int32(i % 2), Body: []byte("x")}}})
				if err == nil {
					stored.Add(1)
				} else if !errors.Is(err, sdk.ErrNotFound) {
					t.Errorf("produce: %v", err)
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for stored.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := b.DeleteTopic(ctx, &sdk.DeleteTopicRequest{Name: "clicks"}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	offs, err := mem.GetOffsets(ctx, "", []*sdk.QueueRef{{Topic: "clicks", Queue: 0}, {Topic: "clicks", Queue: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		if o.End != o.Start {
			t.Errorf("after the delete the store holds %d messages of clicks/%d (of %d produced)", o.End-o.Start, o.Queue, stored.Load())
		}
	}
}
