package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// A consumer group that fails over to the slave resumes where it committed
// on the master: real `ferry run` processes (sync master–slave), messages
// produced to the master, part of them consumed and committed there with
// `ferry consume`, the master SIGKILLed, then the same group consumed from
// the slave (while the master is down, and after promoting the slave). No
// message before the commit point may come again; every one after it must.
func TestFaultGroupResumesOnSlaveAfterMasterKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	for _, promote := range []bool{false, true} {
		name := "slave"
		if promote {
			name = "promoted"
		}
		t.Run(name, func(t *testing.T) { groupFailover(t, promote) })
	}
}

const (
	offsetsMessages = 200 // produced to the master
	offsetsConsumed = 70  // consumed and committed there before the kill
	offsetsGroup    = "billing"
)

func groupFailover(t *testing.T, promote bool) {
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "sync", mb, mr, []string{sr}, "2s")
	slave := writeNode(t, "slave", "slave", "sync", sb, sr, []string{mr}, "2s")
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	eventually(t, 60*time.Second, "slave linked to master", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	})

	// Every message acked OK is on the slave too (sync).
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, mb)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second})
	for i := range offsetsMessages {
		r, err := p.SendSync(dctx, client.Message{Topic: "orders", Key: fmt.Sprintf("k%d", i), Body: fmt.Appendf(nil, "m%d", i)})
		if err != nil || r.Status != ferryv1.Status_STATUS_OK {
			t.Fatalf("send %d: %v %v", i, r, err)
		}
	}

	// Part of them consumed, and committed, on the master.
	first := consumeLines(t, bin, "--broker", mb, "--count", fmt.Sprint(offsetsConsumed))
	if len(first) != offsetsConsumed {
		t.Fatalf("first consumer printed %d messages, want %d", len(first), offsetsConsumed)
	}
	commit, ends := groupOffsets(t, mb)
	total := int64(0)
	for q, off := range commit {
		total += max(off, 0)
		if off > ends[q] {
			t.Fatalf("queue %d committed at %d beyond its end %d", q, off, ends[q])
		}
	}
	if total == 0 || total == offsetsMessages {
		t.Fatalf("the master's commit point %v (ends %v) does not split the log", commit, ends)
	}
	t.Logf("committed on the master: %v of ends %v", commit, ends)

	// The slave holds the group's offsets before the master dies (reported
	// without stopping, so that the consumer's fate below is seen too).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, _ := groupOffsets(t, sb)
		if fmt.Sprint(got) == fmt.Sprint(commit) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after 60s the slave has the group's offsets at %v, the master at %v", got, commit)
			break
		}
	}
	c.Close()
	master.kill(t)
	eventually(t, 30*time.Second, "slave sees its master gone", func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && !st.LeaderConnected
	})
	if promote {
		eventually(t, 30*time.Second, "master's replication plugin gone", func() bool {
			_, err := clusterStatus(ctx, mr)
			return err != nil
		})
		if out, err := exec.Command(bin, "cluster", "promote", "--node", sr).CombinedOutput(); err != nil {
			t.Fatalf("promote: %v\n%s", err, out)
		}
		eventually(t, 30*time.Second, "promoted slave is master", func() bool {
			st, err := clusterStatus(ctx, sr)
			return err == nil && st.Role == "master"
		})
	}

	// The same group on the slave resumes at the commit point.
	// It stops at the count expected (what it printed beyond that is not
	// seen), or once nothing came for 30 s: the idle clock starts with the
	// process, before it has joined, so it must outlast a slow start.
	second := consumeLines(t, bin, "--broker", sb, "--count", fmt.Sprint(offsetsMessages-total), "--idle", "30s")
	checkResumed(t, second, ends, commit, "the slave")
	t.Logf("from the slave: %d messages, want %d", len(second), offsetsMessages-total)
}

// checkResumed checks what a group consumed after a failover (from where):
// nothing before its commit point again, everything from it on.
func checkResumed(t *testing.T, got []consumedLine, ends, commit map[int32]int64, where string) {
	t.Helper()
	seen := map[int32]map[int64]bool{}
	for _, l := range got {
		if seen[l.Queue] == nil {
			seen[l.Queue] = map[int64]bool{}
		}
		seen[l.Queue][l.Offset] = true
	}
	for q, end := range ends {
		var before, missing []int64
		for off := range end {
			switch {
			case off < commit[q] && seen[q][off]:
				before = append(before, off)
			case off >= commit[q] && !seen[q][off]:
				missing = append(missing, off)
			}
		}
		if len(before) > 0 {
			t.Errorf("queue %d: %d message(s) before the commit point %d delivered again from %s: offsets %v", q, len(before), commit[q], where, before)
		}
		if len(missing) > 0 {
			t.Errorf("queue %d: %d message(s) from the commit point %d on never delivered from %s: offsets %v", q, len(missing), commit[q], where, missing)
		}
	}
}

// consumeLines runs `ferry consume --json` for the test's group on topic
// orders with the extra flags and returns what it printed.
func consumeLines(t *testing.T, bin string, flags ...string) []consumedLine {
	t.Helper()
	args := append([]string{"consume", "--topic", "orders", "--group", offsetsGroup, "--json"}, flags...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ferry %v: %v\n%s", args, err, stderr.String())
	}
	var out []consumedLine
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var l consumedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("consume printed %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// groupOffsets reads the test group's committed offset (-1: none) and the
// end of each queue of orders on a broker.
func groupOffsets(t *testing.T, broker string) (committed, ends map[int32]int64) {
	t.Helper()
	return groupOffsetsOf(t, broker, offsetsGroup)
}

// groupOffsetsOf is groupOffsets for another group.
func groupOffsetsOf(t *testing.T, broker, group string) (committed, ends map[int32]int64) {
	t.Helper()
	cc, err := grpc.NewClient(broker, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var refs []*ferryv1.QueueRef
	for q := range int32(4) {
		refs = append(refs, &ferryv1.QueueRef{Topic: "orders", Queue: q})
	}
	r, err := ferryv1.NewBrokerClient(cc).GetOffsets(ctx, &ferryv1.GetOffsetsRequest{Group: group, Queues: refs})
	if err != nil {
		t.Fatal(err)
	}
	committed, ends = map[int32]int64{}, map[int32]int64{}
	for _, o := range r.Offsets {
		committed[o.Queue], ends[o.Queue] = o.Committed, o.End
	}
	return committed, ends
}
