package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// The status table: roles, messages, lag against the master, the link, and a
// master's replicas with a diverged one.
func TestClusterStatusTable(t *testing.T) {
	offs := func(ends ...int64) []*ferryv1.QueueOffsets {
		var out []*ferryv1.QueueOffsets
		for q, e := range ends {
			out = append(out, &ferryv1.QueueOffsets{Topic: "orders", Queue: int32(q), End: e})
		}
		return out
	}
	sts := []*ferryv1.ReplicationStatusResponse{
		{Node: "m", Role: "master", Mode: "sync", Epoch: 2, Address: "127.0.0.1:7171", Offsets: offs(10, 20),
			Replicas: []*ferryv1.ReplicaInfo{
				{Node: "s", Address: "127.0.0.1:7172", Connected: true, Lag: 5},
				{Node: "x", Address: "127.0.0.1:7173", Diverged: true, Detail: "refused: beyond the master's log"},
			}},
		{Node: "s", Role: "slave", Mode: "sync", Epoch: 2, Address: "127.0.0.1:7172", Offsets: offs(10, 15),
			LeaderNode: "m", LeaderAddress: "127.0.0.1:7171", LeaderConnected: true},
		nil,
	}
	errs := []error{nil, nil, errors.New("connection refused")}
	var out bytes.Buffer
	printClusterStatus(&out, []string{"127.0.0.1:7271", "127.0.0.1:7272", "127.0.0.1:7273"}, sts, errs)
	want := `REPLICATION     NODE  ROLE         MODE  EPOCH  BROKER          MESSAGES  LAG  MASTER
127.0.0.1:7271  m     master       sync  2      127.0.0.1:7171  30        -    -
127.0.0.1:7272  s     slave        sync  2      127.0.0.1:7172  25        5    m (127.0.0.1:7171), link up
127.0.0.1:7273  -     unreachable  -     -      -               -         -    connection refused

replicas of m:
NODE  BROKER          CONNECTED  LAG  STATE
s     127.0.0.1:7172  true       5    ok
x     127.0.0.1:7173  false      0    DIVERGED: refused: beyond the master's log
`
	if got := out.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
		t.Log(strings.ReplaceAll(got, " ", "·"))
	}
}

// `ferry cluster` finds every node's address in one node's pipeline file.
func TestClusterAddrsFromPipeline(t *testing.T) {
	for _, tc := range []struct {
		path string
		want string
	}{
		{"../../pipelines/cluster/master.yaml", "127.0.0.1:7271 127.0.0.1:7272"},
		{"../../pipelines/cluster/slave.yaml", "127.0.0.1:7272 127.0.0.1:7271"},
		{"../../pipelines/cluster/raft-2.yaml", "127.0.0.1:7482 127.0.0.1:7481 127.0.0.1:7483"},
	} {
		got, err := clusterAddrs(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: got %v, want %s", tc.path, got, tc.want)
		}
	}
	if l, err := replicationListen("../../pipelines/cluster/slave.yaml"); err != nil || l != "127.0.0.1:7272" {
		t.Errorf("slave's replication address: %q, %v", l, err)
	}
	if _, err := clusterAddrs("../../pipelines/quickstart.yaml"); err == nil || !strings.Contains(err.Error(), "no replication plugin") {
		t.Errorf("a pipeline without replication: %v", err)
	}
	if _, err := replicationListen("../../pipelines/cluster/raft-1.yaml"); err == nil || !strings.Contains(err.Error(), "raft elects") {
		t.Errorf("promote on raft: %v", err)
	}
}

// add-node and remove-node name what is missing or wrong, exit 2, and
// contact nothing.
func TestClusterMembersBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		text string
	}{
		{[]string{"cluster", "add-node"}, "name the new node: its pipeline file, or --admin, --broker, --id, --nodes, --raft"},
		{[]string{"cluster", "add-node", "--id", "r4", "--raft", "127.0.0.1:1"}, "name the new node: its pipeline file, or --admin, --broker, --nodes"},
		{[]string{"cluster", "add-node", "../../pipelines/cluster/slave.yaml"}, `plugins.replication.type is "sync": add-node is for raft groups`},
		{[]string{"cluster", "add-node", "../../pipelines/quickstart.yaml"}, `plugins.replication.type is "none": add-node is for raft groups`},
		{[]string{"cluster", "add-node", "--id", "r4", "--raft", "127.0.0.1:1", "--broker", "127.0.0.1:2", "--admin", "127.0.0.1:3", "--nodes", "127.0.0.1:4", "--peer-ca", "/nonexistent/ca.pem"}, "--peer-"},
		{[]string{"cluster", "remove-node"}, "accepts between 1 and 2 arg(s), received 0"},
		{[]string{"cluster", "remove-node", "r4"}, "name the group: a pipeline file of one of its nodes, or --nodes ADDR,ADDR,..."},
		{[]string{"cluster", "remove-node", "r4", "../../pipelines/quickstart.yaml"}, "no replication plugin"},
	} {
		t.Run(strings.Join(tc.args[1:], " "), func(t *testing.T) {
			out, errOut, code := runFerry(t, nil, tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.text) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want a non-zero exit and %q", code, out, errOut, tc.text)
			}
		})
	}
}
