package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/telemetry"
	"github.com/ferrymq/ferry/core/telemetry/jaegertest"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// traceNodes appends a tracing block to each node's pipeline: every span to
// Jaeger, each node its own service name (prefix + "-" + node id).
func traceNodes(t *testing.T, j jaegertest.Jaeger, prefix string, nodes ...*clusterNode) {
	t.Helper()
	for _, n := range nodes {
		f, err := os.OpenFile(n.yaml, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintf(f, "tracing: {exporter: otlp, endpoint: %q, sample_ratio: 1, service_name: %s-%s}\n", j.OTLP, prefix, n.id)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// replicatedTrace sends one message with a sync send to broker (a leader's
// or master's), from a client that traces to Jaeger, and returns its id
// and its trace once every node's hops of it are in it: the receiving
// node's transport.receive, broker.append and replication.replicate, and a
// storage.append of each of the services (every node stores it).
func replicatedTrace(t *testing.T, j jaegertest.Jaeger, prefix, broker string, services []string) (string, *jaegertest.Trace) {
	t.Helper()
	ctx := context.Background()
	shutdown, err := telemetry.Setup(ctx, telemetry.Tracing{Exporter: telemetry.ExporterOTLP, Endpoint: j.OTLP, SampleRatio: 1, ServiceName: prefix + "-client"})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(ctx)
	cl, err := client.Dial(ctx, broker)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	sctx, span := telemetry.Tracer("test").Start(ctx, "test.send")
	res, err := cl.NewProducer(client.ProducerOptions{Timeout: 30 * time.Second}).SendSync(sctx, client.Message{Topic: "orders", Key: "k", Body: []byte("replicated")})
	span.End()
	if err != nil || res.Status.String() != "STATUS_OK" {
		t.Fatalf("send: %v, %v", res.Status, err)
	}
	if err := telemetry.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	traceID := span.SpanContext().TraceID().String()
	tr := j.WaitTrace(t, traceID, 60*time.Second, func(tr *jaegertest.Trace) bool {
		if len(tr.Named(telemetry.SpanReplicationReplicate)) == 0 || len(tr.Named(telemetry.SpanTransportReceive)) == 0 || len(tr.Named(telemetry.SpanBrokerAppend)) == 0 {
			return false
		}
		stored := map[string]bool{}
		for _, s := range tr.Named(telemetry.SpanStorageAppend) {
			stored[tr.Process(s).ServiceName] = true
		}
		return len(stored) == len(services)
	})
	t.Log("\n" + jaegertest.Describe(tr))
	return res.ID, tr
}

// replicationHopProblems says what is wrong with the replication of the
// message id in its trace tr. Its replication hop must be a span of the
// replication plugin (plugin tag plugin) of the node whose service is
// leader, under that node's broker.append, named for the message by the
// messaging conventions (system ferry, destination orders, the message's
// id); with beside, the leader's storage.append is under the same
// broker.append (a master stores as it ships; a raft leader stores the
// entry once committed). Each of the replicas (services) stored the message:
// a storage.append of it in their process.
func replicationHopProblems(tr *jaegertest.Trace, id, leader, plugin string, beside bool, replicas []string) []string {
	var problems []string
	var hops []*jaegertest.Span
	for _, s := range tr.Named(telemetry.SpanReplicationReplicate) {
		if tr.Process(s).ServiceName == leader {
			hops = append(hops, s)
		}
	}
	if len(hops) == 0 {
		return []string{fmt.Sprintf("no %s span of service %s in the trace", telemetry.SpanReplicationReplicate, leader)}
	}
	s := hops[0]
	if p, _ := tr.Process(s).Tag(string(telemetry.AttrPlugin)); p != plugin {
		problems = append(problems, fmt.Sprintf("%s is in the process of plugin %q, want %q", s.OperationName, p, plugin))
	}
	if p := tr.Parent(s); p == nil || p.OperationName != telemetry.SpanBrokerAppend || tr.Process(p).ServiceName != leader {
		got := "none"
		if p != nil {
			got = p.OperationName + " of " + tr.Process(p).ServiceName
		}
		problems = append(problems, fmt.Sprintf("%s's parent is %s, want %s of %s", s.OperationName, got, telemetry.SpanBrokerAppend, leader))
	} else if beside {
		found := false
		for _, sa := range tr.Named(telemetry.SpanStorageAppend) {
			found = found || sa.ParentID() == p.SpanID
		}
		if !found {
			problems = append(problems, fmt.Sprintf("no %s beside %s under the same %s", telemetry.SpanStorageAppend, s.OperationName, telemetry.SpanBrokerAppend))
		}
	}
	for k, v := range map[string]string{
		string(telemetry.AttrSystem):    telemetry.SystemFerry,
		string(telemetry.AttrTopic):     "orders",
		string(telemetry.AttrMessageID): id,
	} {
		if got, _ := s.Tag(k); got != v {
			problems = append(problems, fmt.Sprintf("%s has %s=%q, want %q", s.OperationName, k, got, v))
		}
	}
	for _, r := range replicas {
		found := false
		for _, sa := range tr.Named(telemetry.SpanStorageAppend) {
			got, _ := sa.Tag(string(telemetry.AttrMessageID))
			found = found || (tr.Process(sa).ServiceName == r && got == id)
		}
		if !found {
			problems = append(problems, fmt.Sprintf("no %s of message %s in replica %s", telemetry.SpanStorageAppend, id, r))
		}
	}
	return problems
}

// checkReplicationHop fails t with replicationHopProblems, and checks that
// the check can fail (negative controls on the same trace): another
// message's id, a node that holds no replication hop, a replica that is not
// in the trace, and the replication hop with its parent taken away.
func checkReplicationHop(t *testing.T, tr *jaegertest.Trace, id, leader, plugin string, beside bool, replicas []string) {
	t.Helper()
	for _, p := range replicationHopProblems(tr, id, leader, plugin, beside, replicas) {
		t.Error(p)
	}
	for what, p := range map[string][]string{
		"another message's id":       replicationHopProblems(tr, id+"-other", leader, plugin, beside, replicas),
		"a node without the hop":     replicationHopProblems(tr, id, leader+"-other", plugin, beside, replicas),
		"a replica not in the trace": replicationHopProblems(tr, id, leader, plugin, beside, append(replicas[:len(replicas):len(replicas)], leader+"-other")),
	} {
		if len(p) == 0 {
			t.Errorf("negative control: the check passes the trace for %s", what)
		}
	}
	orphan := *tr
	orphan.Spans = nil
	for _, s := range tr.Spans {
		if s.OperationName == telemetry.SpanReplicationReplicate {
			s.References = nil
		}
		orphan.Spans = append(orphan.Spans, s)
	}
	if p := replicationHopProblems(&orphan, id, leader, plugin, beside, replicas); !strings.Contains(strings.Join(p, "\n"), "parent is none") {
		t.Errorf("negative control: the check passes a replication hop without its parent: %v", p)
	}
}

// A message produced to a sync master–slave pair has its replication hop in
// its own trace: the master's replication plugin ships it under the
// master's broker.append, named by the messaging conventions, and the
// slave's storage.append of it is in the trace too.
func TestMasterSlaveReplicationInTrace(t *testing.T) {
	j := jaegertest.Require(t)
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "sync", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "sync", sb, sr, []string{mr}, "5s")
	prefix := fmt.Sprintf("ferry-ms-trace-%d", time.Now().UnixNano())
	traceNodes(t, j, prefix, master, slave)
	master.start(t, bin)
	slave.start(t, bin)
	eventually(t, 60*time.Second, "slave linked to master", func() bool {
		st, err := clusterStatus(context.Background(), sr)
		return err == nil && st.LeaderConnected
	})
	id, tr := replicatedTrace(t, j, prefix, mb, []string{prefix + "-master", prefix + "-slave"})
	checkReplicationHop(t, tr, id, prefix+"-master", "replication/sync", true, []string{prefix + "-slave"})
}

// A message produced to a 3-node raft cluster's leader has its replication
// hop in its own trace: the leader's raft plugin replicates it under the
// leader's broker.append, named by the messaging conventions, and each
// follower's storage.append of it is in the trace too.
func TestRaftReplicationInTrace(t *testing.T) {
	j := jaegertest.Require(t)
	bin := ferrytest.Binary(t)
	nodes := raftGroup(t, 3)
	prefix := fmt.Sprintf("ferry-raft-trace-%d", time.Now().UnixNano())
	for _, n := range nodes {
		traceNodes(t, j, prefix, n.clusterNode)
		n.start(t, bin)
	}
	leader, _ := waitLeader(t, nodes, "a raft leader")
	var services, followers []string
	for _, n := range nodes {
		services = append(services, prefix+"-"+n.id)
		if n != leader {
			followers = append(followers, prefix+"-"+n.id)
		}
	}
	id, tr := replicatedTrace(t, j, prefix, leader.broker, services)
	checkReplicationHop(t, tr, id, prefix+"-"+leader.id, "replication/raft", false, followers)
}
