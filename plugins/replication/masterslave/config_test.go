package masterslave_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/security/securitytest"
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

// masters is refused where it cannot be proved (without tls, or with
// verify_node_id: false) and where an entry is not a node id or twice
// there, naming the key; with tls it is taken.
func TestMastersConfig(t *testing.T) {
	ca := securitytest.NewCA(t, "cluster")
	pair := ca.Issue("n1", securitytest.Options{Peer: true})
	tls := fmt.Sprintf(`"tls": {"cert_file": %q, "key_file": %q, "ca_file": %q`, pair.CertFile, pair.KeyFile, ca.CertFile)
	for _, tc := range []struct {
		name, config, problem string
	}{
		{"with tls", `{"listen": "127.0.0.1:0", ` + tls + `}, "masters": ["n1", "n2"]}`, ""},
		{"without tls", `{"listen": "127.0.0.1:0", "masters": ["n1"]}`, "masters: applies only with tls"},
		{"ids not verified", `{"listen": "127.0.0.1:0", ` + tls + `, "verify_node_id": false}, "masters": ["n1"]}`, "masters: applies only with tls"},
		{"not an id", `{"listen": "127.0.0.1:0", ` + tls + `}, "masters": ["n 1"]}`, `masters[0]: "n 1" is not a node id`},
		{"twice", `{"listen": "127.0.0.1:0", ` + tls + `}, "masters": ["n1", "n1"]}`, `masters[1]: node id "n1" is listed twice`},
	} {
		ps := masterslave.New(masterslave.ModeSync).Validate([]byte(tc.config))
		switch {
		case tc.problem == "" && ps != nil:
			t.Errorf("%s: %v", tc.name, ps)
		case tc.problem != "" && (ps == nil || !strings.Contains(ps.Error(), tc.problem)):
			t.Errorf("%s: %v; want %q", tc.name, ps, tc.problem)
		}
	}
}
