package masterslave_test

import (
	"context"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/replication/masterslave"
)

// replicate_before_flush decides whether the broker ships a batch once it is
// written (apply_written) or once it is durable (apply_first, the default).
func TestReplicateBeforeFlushSetsMode(t *testing.T) {
	for _, tc := range []struct {
		config, want string
	}{
		{`{"listen": "127.0.0.1:0"}`, sdk.ModeApplyFirst},
		{`{"listen": "127.0.0.1:0", "replicate_before_flush": false}`, sdk.ModeApplyFirst},
		{`{"listen": "127.0.0.1:0", "replicate_before_flush": true}`, sdk.ModeApplyWritten},
	} {
		p := masterslave.New(masterslave.ModeSync)
		if err := p.Configure(context.Background(), []byte(tc.config), &sdk.Environment{DataDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
		if got := p.Mode(); got != tc.want {
			t.Errorf("%s: mode %q, want %q", tc.config, got, tc.want)
		}
		p.Close()
	}
	if ps := masterslave.New(masterslave.ModeSync).Validate([]byte(`{"listen": "127.0.0.1:0", "replicate_before_flush": "yes"}`)); ps == nil {
		t.Error("replicate_before_flush: \"yes\" was accepted")
	}
}
