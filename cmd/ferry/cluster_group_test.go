package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/client"
	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// On a sync master–slave pair (real processes), a reset of a group's
// offsets on the master reaches the slave as every commit does; the slave
// refuses a reset and a group delete (not leader); a group delete on the
// master removes the group's offsets on the slave too.
func TestGroupResetReplicatesToSlave(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
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
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, mb)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.NewProducer(client.ProducerOptions{Timeout: 10 * time.Second})
	for i := range 40 {
		if r, err := p.SendSync(dctx, client.Message{Topic: "orders", Key: fmt.Sprintf("k%d", i), Body: fmt.Appendf(nil, "m%d", i)}); err != nil || r.Status != ferryv1.Status_STATUS_OK {
			t.Fatalf("send %d: %v %v", i, r, err)
		}
	}
	if got := consumeLines(t, bin, "--broker", mb, "--count", "40"); len(got) != 40 {
		t.Fatalf("consumed %d messages, want 40", len(got))
	}
	_, ends := groupOffsets(t, mb)
	q := int32(0)
	for ends[q] < 3 {
		q++
	}
	eventually(t, 60*time.Second, "the slave holds the group's commits", func() bool {
		committed, _ := groupOffsets(t, sb)
		return committed[q] == ends[q]
	})

	stdout, stderr, code := runFerry(t, nil, "group", "reset-offsets", offsetsGroup, "--topic", "orders", "--to-offset", "2", "--queues", fmt.Sprint(q), "--broker", mb)
	if code != 0 {
		t.Fatalf("reset on the master: exit %d\n%s%s", code, stdout, stderr)
	}
	eventually(t, 60*time.Second, "the reset reaches the slave", func() bool {
		committed, _ := groupOffsets(t, sb)
		return committed[q] == 2
	})
	for _, c := range []struct {
		broker string
		args   []string
		want   string
	}{
		{sb, []string{"group", "reset-offsets", offsetsGroup, "--topic", "orders", "--to-latest"}, "not leader"},
		{sb, []string{"group", "delete", offsetsGroup}, "not leader"},
	} {
		stdout, stderr, code := runFerry(t, nil, append(c.args, "--broker", c.broker)...)
		if code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("ferry %v on %s: exit %d, %q (stdout %q); want %q", c.args, c.broker, code, stderr, stdout, c.want)
		}
	}
	// A delete on the master deletes the group's offsets on the slave too.
	if stdout, stderr, code := runFerry(t, nil, "group", "delete", offsetsGroup, "--broker", mb); code != 0 {
		t.Fatalf("delete on the master: exit %d\n%s%s", code, stdout, stderr)
	}
	eventually(t, 60*time.Second, "the delete reaches the slave", func() bool {
		committed, _ := groupOffsets(t, sb)
		return committed[q] == -1
	})
}
