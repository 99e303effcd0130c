package httptransport_test

import (
	"fmt"
	"strings"
	"testing"
)

// A puller over HTTP learns its group's generation from a pull of the
// group's committed offsets and from GET offsets, and carries it on its
// commit. A commit it made before the group's deletion that arrives after
// it is refused, 409 STALE_GENERATION naming the group and both
// generations, and does not bring the deleted group back; a commit of the
// new generation is taken. Control: the same late commit without a
// generation is taken and brings the group back with the old offset, so
// the check of the committed offset would fail without the generation.
func TestHTTPCommitCarriesGeneration(t *testing.T) {
	base := node(t)
	var prod struct{ Results []result }
	if code := call(t, "POST", base+"/v1/topics/logs/messages", "application/json",
		`{"messages":[{"body":"a"},{"body":"b"},{"body":"c"}]}`, nil, &prod); code != 200 || len(prod.Results) != 3 {
		t.Fatalf("produce: %d %+v", code, prod)
	}
	type pulled struct {
		Messages   []struct{ Offset int64 }
		Generation uint64
	}
	type offsets struct {
		Offsets    []struct{ Committed int64 }
		Generation uint64
	}
	pull := func() pulled {
		t.Helper()
		var p pulled
		if code := call(t, "GET", base+"/v1/topics/logs/messages?group=billing&max=10&wait=1s", "", "", nil, &p); code != 200 {
			t.Fatalf("pull: %d %+v", code, p)
		}
		return p
	}
	state := func() offsets {
		t.Helper()
		var o offsets
		if code := call(t, "GET", base+"/v1/groups/billing/offsets?topic=logs", "", "", nil, &o); code != 200 || len(o.Offsets) != 1 {
			t.Fatalf("offsets: %d %+v", code, o)
		}
		return o
	}
	commit := func(gen uint64, off int64) (int, apiErr) {
		t.Helper()
		var e apiErr
		body := fmt.Sprintf(`{"offsets":[{"topic":"logs","queue":0,"offset":%d}]`, off)
		if gen > 0 {
			body += fmt.Sprintf(`,"generation":%d`, gen)
		}
		return call(t, "POST", base+"/v1/groups/billing/offsets", "application/json", body+"}", nil, &e), e
	}
	del := func() {
		t.Helper()
		if code := call(t, "DELETE", base+"/v1/groups/billing", "", "", nil, nil); code != 200 {
			t.Fatalf("delete group: %d", code)
		}
	}

	p := pull()
	if len(p.Messages) != 3 || p.Generation != 1 {
		t.Fatalf("first pull: %+v, want 3 messages at generation 1", p)
	}
	if code, e := commit(p.Generation, 2); code != 200 {
		t.Fatalf("commit of generation 1: %d %+v", code, e)
	}
	if o := state(); o.Generation != 1 || o.Offsets[0].Committed != 2 {
		t.Fatalf("offsets after the commit: %+v, want committed 2 at generation 1", o)
	}
	del()
	// The puller's commit of what it pulled before the deletion.
	code, e := commit(p.Generation, 3)
	if code != 409 || e.Error.Code != "STALE_GENERATION" || !strings.Contains(e.Error.Message, `group "billing"`) ||
		!strings.Contains(e.Error.Message, "generation 1") || !strings.Contains(e.Error.Message, "generation 2") {
		t.Errorf("a commit of generation 1 after the deletion: %d %+v, want 409 STALE_GENERATION naming the group and generations 1 and 2", code, e)
	}
	if o := state(); o.Generation != 2 || o.Offsets[0].Committed != -1 {
		t.Errorf("after the deletion and the late commit: %+v, want no committed offset (-1) at generation 2", o)
	}
	// Pulled again: the new generation, from the queue's start; its
	// commit is taken.
	p = pull()
	if len(p.Messages) != 3 || p.Generation != 2 {
		t.Fatalf("pull after the deletion: %+v, want 3 messages at generation 2", p)
	}
	if code, e := commit(p.Generation, 1); code != 200 {
		t.Errorf("commit of generation 2: %d %+v", code, e)
	}
	if o := state(); o.Offsets[0].Committed != 1 {
		t.Errorf("after the commit of generation 2: %+v, want committed 1", o)
	}

	// Control: deleted again; the late commit without a generation is
	// not checked and brings the group back with its old offset.
	del()
	if code, e := commit(0, 3); code != 200 {
		t.Fatalf("control: a late commit without a generation: %d %+v, want 200", code, e)
	}
	if o := state(); o.Offsets[0].Committed != 3 {
		t.Errorf("control: after a late commit without a generation: %+v, want committed 3 (the deleted group back)", o)
	}
}
