package main

import (
	"context"
	"testing"

	"github.com/ferrymq/ferry/internal/ferrytest"
)

// On an async master–slave pair (real processes): the slave is SIGKILLed,
// and while it is down the master creates topic clicks, grows it and
// creates views. The slave, started again while the master is down too,
// holds neither (the control: nothing but the master's link can bring
// them, so the wait below would fail if the link did not); once the master
// is back and the slave linked, the slave lists both with their queues and
// takes their messages.
func TestMasterSlaveSlaveDownLearnsTopics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	mb, mr, sb, sr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	master := writeNode(t, "master", "master", "async", mb, mr, []string{sr}, "5s")
	slave := writeNode(t, "slave", "slave", "async", sb, sr, []string{mr}, "5s")
	master.start(t, bin)
	slave.start(t, bin)
	ctx := context.Background()
	linked := func() bool {
		st, err := clusterStatus(ctx, sr)
		return err == nil && st.LeaderConnected
	}
	eventually(t, topicWait, "slave linked to master", linked)

	slave.kill(t)
	t.Logf("%s killed the slave", stamp())
	for _, args := range [][]string{{"create", "clicks", "--queues", "2"}, {"alter", "clicks", "--queues", "3"}, {"create", "views", "--queues", "1"}} {
		if code, out := topicCLI(t, mb, args...); code != 0 {
			t.Fatalf("topic %v on the master: exit %d\n%s", args, code, out)
		}
	}
	sent := sendTopic(t, []string{mb}, "clicks", "c", 30)

	master.kill(t)
	t.Logf("%s killed the master", stamp())
	slave.start(t, bin)
	var ts map[string]int32
	eventually(t, topicWait, "the slave answers its topic list", func() bool { ts = nodeTopics(sb); return ts != nil })
	if _, ok := ts["clicks"]; ok {
		t.Fatalf("control: the slave, restarted with its master down, holds clicks already (%v): the wait below proves nothing", ts)
	}
	if _, ok := ts["views"]; ok {
		t.Fatalf("control: the slave, restarted with its master down, holds views already (%v)", ts)
	}

	master.start(t, bin)
	eventually(t, topicWait, "slave linked to the restarted master", linked)
	waitTopic(t, "slave", sb, "clicks", 3)
	waitTopic(t, "slave", sb, "views", 1)
	eventually(t, topicWait, "the slave holds the 30 messages of clicks", func() bool {
		return storedCount(sb, "clicks", 3) == int64(len(sent))
	})
}
