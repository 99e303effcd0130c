package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile replaces the file whole, with the mode asked for, and leaves no
// temporary file behind; a missing directory is an error, not a file
// written elsewhere.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"first", "second, longer than the first"} {
		if err := WriteFile(dir, "state.json", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only state.json", len(entries))
	}
	if err := WriteFile(filepath.Join(dir, "missing"), "x", nil, 0o600); err == nil {
		t.Fatal("a write into a missing directory succeeded")
	}
}
