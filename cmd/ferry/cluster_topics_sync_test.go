package main

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// On sync master–slave a topic change is answered once the slave applied
// it: right after `ferry topic create` exits 0 the slave lists the topic,
// with no --wait-for. With the slave frozen (SIGSTOP, still linked) an
// alter and a delete fail after the plugin's timeout (or, once the master dropped the silent
// link, at once) with an error saying
// the change is made on the master but not confirmed; thawed, the slave
// gets both.
func TestMasterSlaveSyncTopicChangeConfirmed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "sync", mb, mr, []string{sr}, "1s")
	slave := writeNode(t, "slave", "slave", "sync", sb, sr, []string{mr}, "1s")
	master.start(t, bin)
	slave.start(t, bin)
	eventually(t, topicWait, "slave linked to master", func() bool {
		st, err := clusterStatus(context.Background(), sr)
		return err == nil && st.LeaderConnected
	})

	for _, args := range [][]string{{"create", "clicks", "--queues", "3"}, {"create", "views", "--queues", "1"}} {
		if code, out := topicCLI(t, mb, args...); code != 0 {
			t.Fatalf("%v on the master: exit %d\n%s", args, code, out)
		}
	}
	if ts := nodeTopics(sb); ts["clicks"] != 3 || ts["views"] != 1 {
		t.Errorf("the slave lists %v right after the creates were answered, want clicks with 3 queues and views with 1", ts)
	}

	slave.signal(t, syscall.SIGSTOP)
	// Within the timeout (1s) while the master still counts the frozen
	// slave as linked; once it has been silent for 3s the link is
	// dropped and the answer says no slave is linked: both refuse to
	// answer OK, and say why.
	unconfirmed := func(out string) bool {
		return strings.Contains(out, "not confirmed by min_replicas (1) slaves within the timeout (1s)") ||
			strings.Contains(out, "0 slave(s) linked")
	}
	code, out := topicCLI(t, mb, "alter", "clicks", "--queues", "4")
	if code == 0 || !unconfirmed(out) || !strings.Contains(out, "is changed (alter) on the master") {
		t.Errorf("alter with the slave frozen: exit %d, %q; want a failure saying it is not confirmed", code, out)
	}
	t.Logf("alter with the slave frozen: %s", strings.TrimSpace(out))
	code, out = topicCLI(t, mb, "delete", "views", "--yes")
	if code == 0 || !unconfirmed(out) || !strings.Contains(out, "deleted on the master") {
		t.Errorf("delete with the slave frozen: exit %d, %q; want a failure saying it is not confirmed", code, out)
	}
	t.Logf("delete with the slave frozen: %s", strings.TrimSpace(out))
	if ts := nodeTopics(mb); ts["clicks"] != 4 || ts["views"] != 0 {
		t.Errorf("the master lists %v, want clicks with 4 queues and no views", ts)
	}
	slave.signal(t, syscall.SIGCONT)
	waitTopic(t, "slave", sb, "clicks", 4)
	waitTopic(t, "slave", sb, "views", 0)
	if code, out := topicCLI(t, mb, "alter", "clicks", "--queues", "5"); code != 0 {
		t.Errorf("alter with the slave thawed: exit %d\n%s", code, out)
	}
	if ts := nodeTopics(sb); ts["clicks"] != 5 {
		t.Errorf("the slave lists %v right after the alter was answered, want clicks with 5 queues", ts)
	}
}
