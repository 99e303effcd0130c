package broker

import (
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// An epoch starts, per queue, at the end before its first append; offsets
// answered in it carry the epoch and that start; a commit from before the
// epoch past the start is answered as the start, one made in it as it is.
func TestEpochStamp(t *testing.T) {
	e := newEpochs()
	if e.id == 0 {
		t.Fatal("epoch 0 means none")
	}
	// Nothing appended yet: the start is the queue's end.
	o := e.stamp("g", &sdk.QueueOffsets{Topic: "t", Queue: 0, Start: 0, End: 100, Committed: 140})
	if o.Epoch != e.id || o.EpochStart != 100 || o.Committed != 100 {
		t.Fatalf("before any append: %+v; want start 100 and the stale commit 140 answered as 100", o)
	}
	ends := func(refs []*sdk.QueueRef) ([]*sdk.QueueOffsets, error) {
		out := make([]*sdk.QueueOffsets, len(refs))
		for i, r := range refs {
			out[i] = &sdk.QueueOffsets{Topic: r.Topic, Queue: r.Queue, End: 100}
		}
		return out, nil
	}
	calls := 0
	counted := func(refs []*sdk.QueueRef) ([]*sdk.QueueOffsets, error) { calls++; return ends(refs) }
	msgs := []*sdk.Message{{Topic: "t", Queue: 0}, {Topic: "t", Queue: 0}, {Topic: "t", Queue: 1}}
	if err := e.begin(msgs, counted); err != nil || calls != 1 {
		t.Fatalf("begin: %v, %d calls", err, calls)
	}
	if err := e.begin(msgs, counted); err != nil || calls != 1 {
		t.Fatalf("a second begin asked the store again (%d calls)", calls)
	}
	// Appends since: the end grew; the start stays where the epoch began.
	o = e.stamp("g", &sdk.QueueOffsets{Topic: "t", Queue: 0, End: 180, Committed: 140})
	if o.EpochStart != 100 || o.Committed != 100 {
		t.Fatalf("after appends: %+v; want start 100, stale commit answered as 100", o)
	}
	e.commit("g", []*sdk.GroupOffset{{Topic: "t", Queue: 0, Offset: 150}})
	if o = e.stamp("g", &sdk.QueueOffsets{Topic: "t", Queue: 0, End: 180, Committed: 150}); o.Committed != 150 {
		t.Fatalf("a commit of this epoch: %+v; want 150 as committed", o)
	}
	if o = e.stamp("other", &sdk.QueueOffsets{Topic: "t", Queue: 0, End: 180, Committed: 90}); o.Committed != 90 {
		t.Fatalf("a commit below the start: %+v; want it kept", o)
	}
	if o = e.stamp("", &sdk.QueueOffsets{Topic: "t", Queue: 0, End: 180, Committed: -1}); o.Committed != -1 {
		t.Fatalf("no group: %+v", o)
	}
	if newEpochs().id == e.id {
		t.Fatal("two epochs with one id")
	}
}
