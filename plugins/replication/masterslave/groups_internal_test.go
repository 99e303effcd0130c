package masterslave

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/proto/ferryv1"
)

// The group deletions survive a new plugin process (kept in
// GroupDeletionsFile), with the ids made here; past maxGroupDeletions the
// oldest is forgotten; a slave makes a deletion id once; a file that does
// not decode is an error naming it.
func TestGroupDeletionsKept(t *testing.T) {
	dir := t.TempDir()
	p := New(ModeAsync)
	p.dir = dir
	p.mu.Lock()
	for i := range maxGroupDeletions + 2 {
		p.recordDeletionLocked("g"+string(rune('a'+i%26))+strings.Repeat("x", i/26), uint64(100+i), 2)
	}
	p.applied["ga"] = 100 // the oldest: dropped with its deletion
	p.applied["gb"] = 101 // dropped too (the two oldest)
	p.applied["gc"] = 102
	p.recordDeletionLocked("gc", 102, 2)
	if err := p.saveDeletionsLocked(); err != nil {
		t.Fatal(err)
	}
	p.mu.Unlock()
	if len(p.dels) != maxGroupDeletions {
		t.Errorf("%d deletions kept, want %d", len(p.dels), maxGroupDeletions)
	}
	if _, ok := p.dels["ga"]; ok {
		t.Errorf("the oldest deletion is kept past %d", maxGroupDeletions)
	}

	q := New(ModeAsync)
	q.dir = dir
	if err := q.loadDeletions(); err != nil {
		t.Fatal(err)
	}
	if len(q.dels) != maxGroupDeletions || q.dels["gc"].id != 102 || q.dels["gc"].ver == 0 || q.applied["gc"] != 102 {
		t.Errorf("after a restart: %d deletions, gc=%+v applied %d; want %d, id 102 with a version, applied 102", len(q.dels), q.dels["gc"], q.applied["gc"], maxGroupDeletions)
	}
	if got := q.deletionsSinceLocked(0); len(got) != maxGroupDeletions {
		t.Errorf("a new session would be sent %d deletions, want %d", len(got), maxGroupDeletions)
	}

	// A slave: a deletion it made is not made again; a new one is.
	q.masterDeletes([]*ferryv1.GroupDeletion{{Group: "gc", Id: 102}, {Group: "gd", Id: 999}})
	if len(q.delTodo) != 1 || q.delTodo[0] != "gd" {
		t.Errorf("deletions to make: %v, want [gd] (gc's id 102 was made already)", q.delTodo)
	}

	if err := os.WriteFile(filepath.Join(dir, GroupDeletionsFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := New(ModeAsync).withDir(dir).loadDeletions(); err == nil || !strings.Contains(err.Error(), GroupDeletionsFile) {
		t.Errorf("a file that does not decode: %v, want an error naming %s", err, GroupDeletionsFile)
	}
}

func (p *Plugin) withDir(dir string) *Plugin { p.dir = dir; return p }
