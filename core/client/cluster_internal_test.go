package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// silentLeader spots a leader that other nodes name but that did not answer
// itself, and only that: a silent node nobody names, a named node that
// answered, or a node naming itself do not count.
func TestSilentLeader(t *testing.T) {
	a, b, c := &brokerConn{addr: "a:1"}, &brokerConn{addr: "b:1"}, &brokerConn{addr: "c:1"}
	brokers := []*brokerConn{a, b, c}
	// names answers as node self, leader of every queue of orders the
	// node at leader (self when leader == "").
	names := func(self, leader string) *ferryv1.MetadataResponse {
		r := &ferryv1.MetadataResponse{Brokers: []*ferryv1.BrokerInfo{{Address: self, Role: "follower"}}}
		idx := int32(0)
		if leader != "" {
			r.Brokers = append(r.Brokers, &ferryv1.BrokerInfo{Address: leader, Role: "leader"})
			idx = 1
		}
		r.Topics = []*ferryv1.TopicInfo{{Name: "orders", Queues: 2, Leaders: []int32{idx, idx}}}
		return r
	}
	silent := errors.New("no answer")
	for _, tc := range []struct {
		name  string
		resps []*ferryv1.MetadataResponse
		errs  []error
		want  bool
	}{
		{"followers name the silent leader", []*ferryv1.MetadataResponse{nil, names("b:1", "a:1"), names("c:1", "a:1")}, []error{silent, nil, nil}, true},
		{"the named leader answers", []*ferryv1.MetadataResponse{names("a:1", ""), names("b:1", "a:1"), names("c:1", "a:1")}, []error{nil, nil, nil}, false},
		{"a silent node nobody names", []*ferryv1.MetadataResponse{nil, names("b:1", "c:1"), names("c:1", "")}, []error{silent, nil, nil}, false},
		{"nobody answers", []*ferryv1.MetadataResponse{nil, nil, nil}, []error{silent, silent, silent}, false},
		{"one answering follower names it", []*ferryv1.MetadataResponse{nil, names("b:1", "a:1"), nil}, []error{silent, nil, silent}, true},
	} {
		if got := silentLeader("orders", brokers, tc.resps, tc.errs); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if silentLeader("payments", brokers, []*ferryv1.MetadataResponse{nil, names("b:1", "a:1"), nil}, []error{silent, nil, silent}) {
		t.Error("a leader named for another topic counted")
	}
}

// A message with a key or an id keeps the queue its selector chose when
// that queue's broker is down (per-key order, de-duplication by id); one
// without either goes to a queue on a broker that is up (the control: the
// failover the route offers is real).
func TestPickKeepsKeyedQueues(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close() // nothing listens there any more
	dial := func(addr string) *brokerConn {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return &brokerConn{addr: addr, conn: cc}
	}
	up, dead := dial(lis.Addr().String()), dial(deadAddr)
	dead.conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for s := dead.conn.GetState(); s != connectivity.TransientFailure; s = dead.conn.GetState() {
		if !dead.conn.WaitForStateChange(ctx, s) {
			t.Fatal("the connection to a closed port never failed")
		}
	}
	rt := &topicRoute{queues: []queueRoute{{broker: dead, queue: 0}, {broker: up, queue: 1}}}
	p := &Producer{opts: ProducerOptions{Selector: fixedQueue(0)}}
	for _, tc := range []struct {
		name string
		m    Message
		want int32
	}{
		{"no key, no id: moved to a broker that is up", Message{Topic: "t"}, 1},
		{"a key keeps its queue", Message{Topic: "t", Key: "k"}, 0},
		{"an id keeps its queue", Message{Topic: "t", ID: "order-1"}, 0},
	} {
		if got := p.pick(rt, &tc.m); got.queue != tc.want {
			t.Errorf("%s: queue %d, want %d", tc.name, got.queue, tc.want)
		}
	}
}

// fixedQueue selects queue q for every message.
type fixedQueue int32

func (q fixedQueue) Select(*Message, int32) int32 { return int32(q) }
