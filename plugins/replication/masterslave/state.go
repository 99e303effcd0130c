package masterslave

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"

	"github.com/ferrymq/ferry/internal/atomicfile"
)

// state is what a node persists: its role after a promotion or a step-down,
// and the highest epoch it has seen.
type state struct {
	Role  string `json:"role,omitempty"`
	Epoch uint64 `json:"epoch"`
}

const stateFile = "state.json"

func loadState(dir string) (state, error) {
	var s state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// saveState writes s durably (temp file, fsync, rename, fsync dir).
func saveState(dir string, s state) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, _ := json.Marshal(s)
	return atomicfile.WriteFile(dir, stateFile, b, 0o644)
}
