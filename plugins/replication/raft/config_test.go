package raft

import (
	"strings"
	"testing"
	"time"
)

func TestConfigSnapshotKeysAndAdmin(t *testing.T) {
	const two = `"peers": [{"id": "a", "raft": "h:1", "broker": "h:2", "admin": "h:3"}, {"id": "b", "raft": "h:4", "broker": "h:5", "admin": "h:6"}]`
	for _, tc := range []struct {
		name, config string
		problems     []string // "path: message" prefixes, in order
	}{
		{"defaults", `{"listen": "h:1", "admin": "h:3", ` + two + `}`, nil},
		{"snapshot keys", `{"listen": "h:1", "admin": "h:3", ` + two + `, "trailing_logs": 0, "snapshot_threshold": 5, "snapshot_interval": "10ms"}`, nil},
		{"out of range", `{"listen": "h:1", "admin": "h:3", ` + two + `, "trailing_logs": -1, "snapshot_threshold": 0, "snapshot_interval": "1ms"}`,
			[]string{"trailing_logs: must be >= 0", "snapshot_threshold: must be >= 1", "snapshot_interval: must be >= 5ms"}},
		{"admin required with peers", `{"listen": "h:1", "peers": [{"id": "a", "raft": "h:1", "broker": "h:2"}, {"id": "b", "raft": "h:4", "broker": "h:5", "admin": "h:6"}]}`,
			[]string{"admin: is required", "peers[0].admin: is required"}},
		{"one node needs no admin", `{"listen": "h:1", "peers": [{"id": "a", "raft": "h:1", "broker": "h:2"}]}`, nil},
		{"wrong type", `{"listen": "h:1", "admin": "h:3", ` + two + `, "snapshot_threshold": "many"}`, []string{"snapshot_threshold"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, ps := decode([]byte(tc.config))
			if len(ps) != len(tc.problems) {
				t.Fatalf("problems %v, want %v", ps, tc.problems)
			}
			for i, p := range ps {
				if !strings.HasPrefix(p.Path+": "+p.Message, tc.problems[i]) {
					t.Errorf("problem %d: %s: %s, want %s", i, p.Path, p.Message, tc.problems[i])
				}
			}
			if tc.name == "defaults" && (cfg.TrailingLogs != defaultTrailingLogs || cfg.SnapshotThreshold != defaultSnapshotThreshold || time.Duration(cfg.SnapshotInterval) != 30*time.Second) {
				t.Errorf("defaults %d, %d, %v", cfg.TrailingLogs, cfg.SnapshotThreshold, cfg.SnapshotInterval)
			}
		})
	}
}
