package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
)

// commitRepl is an offset-replicating plugin that can also wait for a
// commit (sdk.OffsetCommitter): CommitOffsets records the call and answers
// err; unsupported makes it answer errors.ErrUnsupported (a plugin that did
// not announce the capability).
type commitRepl struct {
	offRepl
	cmu         sync.Mutex
	commits     []string
	err         error
	unsupported bool
}

var _ sdk.OffsetCommitter = (*commitRepl)(nil)

func (f *commitRepl) CommitOffsets(_ context.Context, group string, _ uint64, offs []*sdk.GroupOffset) error {
	f.cmu.Lock()
	defer f.cmu.Unlock()
	if f.unsupported {
		return fmt.Errorf("no: %w", errors.ErrUnsupported)
	}
	if f.err != nil {
		return f.err
	}
	f.commits = append(f.commits, offsetsString(group, offs))
	return nil
}

// With a plugin that waits for offsets, a commit on the node that takes
// produce is answered with the plugin's answer: an error fails the commit
// (naming it), and nothing is reported in the background. A plugin that
// answers errors.ErrUnsupported gets the background reports instead, and
// its commits succeed.
func TestCommitOffsetsWaitsForPlugin(t *testing.T) {
	r := &commitRepl{}
	src := &genSource{r: r, gen: 1}
	b := New(Options{Node: "n1", Role: sdk.RoleMaster, Topics: []Topic{{Name: "orders", Queues: 2}}, Replication: src}, newSource(newMemory(t)))
	b.Start()
	defer b.Close(context.Background())

	commitGroup(t, b, "g1", 3, 4)
	r.cmu.Lock()
	got := strings.Join(r.commits, " ")
	r.err = fmt.Errorf("%w: no leader", sdk.ErrNotLeader)
	r.cmu.Unlock()
	if got != "g1:orders/0=3,orders/1=4" {
		t.Fatalf("the plugin was asked to commit %q, want g1's offsets once", got)
	}
	err := b.CommitOffsets(context.Background(), &sdk.CommitOffsetsRequest{Group: "g1", Offsets: []*sdk.GroupOffset{{Topic: "orders", Queue: 0, Offset: 2}}})
	if !errors.Is(err, sdk.ErrNotLeader) || !strings.Contains(err.Error(), "not committed through replication") {
		t.Fatalf("commit while the plugin has no leader: %v, want ErrNotLeader saying it was not committed through replication", err)
	}
	if n := r.count(); n != 0 {
		t.Fatalf("%d background reports besides the waited commits", n)
	}

	r.cmu.Lock()
	r.err, r.unsupported = nil, true
	r.cmu.Unlock()
	commitGroup(t, b, "g2", 1, 2)
	waitUntil(t, "g2 reported in the background", func() bool { return r.last("g2") == "g2:orders/0=1,orders/1=2" })
}
