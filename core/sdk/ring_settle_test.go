package sdk

import (
	"context"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
	"github.com/ferrymq/ferry/core/ring"
)

// The host spins for a storage append's answer (Expect), and no longer once
// it came and nothing else is awaited: its reader's expectation is cleared
// (Settle) instead of lasting the whole appendExpect. With an append still
// waiting, the expectation stays (the control).
func TestStorageRingSettlesOnceAnswered(t *testing.T) {
	defer func(d time.Duration) { appendExpect = d }(appendExpect)
	appendExpect = time.Hour
	seg, err := ring.Create(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	host, err := ring.NewConn(seg, ring.Host, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plug, err := ring.NewConn(seg, ring.Plugin, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := NewStorageClient(nil)
	c.dp.conn = host
	c.startRing(host)
	defer func() { // the mapping stays until the test binary exits: a reader may still be leaving it
		host.Close()
		plug.Close()
	}()
	// The plugin: holds the first append's answer until told, answers
	// the rest at once.
	release := make(chan struct{})
	go func() {
		for n := 0; ; n++ {
			kind, id, _, err := plug.Read()
			if err != nil {
				return
			}
			if kind != KindAppend {
				continue
			}
			answer := &ferryv1.AppendResponse{Seq: id, Offsets: []int64{int64(n)}, Status: ferryv1.Status_STATUS_OK}
			if n == 0 {
				go func() {
					<-release
					_ = ringWrite(plug, KindAppend, id, answer)
				}()
				continue
			}
			_ = ringWrite(plug, KindAppend, id, answer)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	held, err := c.Append(ctx, []*Message{{Id: "a", Topic: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	quick, err := c.Append(ctx, []*Message{{Id: "b", Topic: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quick(ctx); err != nil {
		t.Fatal(err)
	}
	if host.Expecting() == 0 {
		t.Fatal("the spin for answers ended with an append still waiting for its own")
	}
	close(release)
	if _, err := held(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for host.Expecting() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the host still spins for answers after every append was answered")
		}
		time.Sleep(time.Millisecond)
	}
}
