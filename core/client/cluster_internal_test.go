package client

import (
	"errors"
	"testing"

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
