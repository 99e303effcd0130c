package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferry/core/security"
	"github.com/ferrymq/ferry/core/security/securitytest"
	"github.com/ferrymq/ferry/internal/ferrytest"
)

// A slave follows only a master its replication config's `masters` lists,
// as proved by the master's certificate, and a master steps down only to
// one: a real `ferry run` impostor, an honest holder of a certificate of
// the cluster CA (and the secret) for node "spare", runs as a master at a
// higher epoch at an address both nodes ask. With masters: [master,
// slave] the slave follows the master, both refuse the impostor naming
// both ids, and the master stays master. The control, without masters,
// shows the check is what stops it: the slave follows the impostor.
func TestSecureMasterSlaveFollowsOnlyItsMasters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := ferrytest.Binary(t)
	for _, tc := range []struct {
		name    string
		masters string // the masters key of the master's and slave's config
		follows string // the node the slave must follow
	}{
		{"listed", `masters: ["master", "slave"]`, "master"},
		{"control-unlisted", "", "spare"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := securitytest.NewCA(t, "cluster")
			secret := ca.Secret("cluster.secret", "s3cret-0123456789abcdef")
			mb, mr, sb, sr, xb, xr := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
			link := func(node string, masters bool) string {
				l := peerLink(ca.Issue(node, securitytest.Options{Peer: true}), ca.CertFile, secret)
				if masters && tc.masters != "" {
					l += ", " + tc.masters
				}
				return l
			}
			master := writeLinkedNode(t, "master", "master", "sync", mb, mr, []string{sr, xr}, link("master", true))
			slave := writeLinkedNode(t, "slave", "slave", "sync", sb, sr, []string{mr, xr}, link("slave", true))
			// The impostor: a node of the cluster CA that names itself
			// truly (spare), a master at epoch 9 where the others are at 0.
			spare := writeLinkedNode(t, "spare", "master", "sync", xb, xr, []string{mr, sr}, link("spare", false))
			dir := filepath.Join(filepath.Dir(spare.yaml), "data", "replication-sync")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"role":"master","epoch":9}`), 0o644); err != nil {
				t.Fatal(err)
			}
			ops := ca.Issue("ops", securitytest.Options{Peer: true})
			peers := mustPeerLink(t, security.PeerLink{TLS: security.PeerTLS{CertFile: ops.CertFile, KeyFile: ops.KeyFile, CAFile: ca.CertFile}, SecretFile: secret})
			ctx := context.Background()
			for _, n := range []*clusterNode{master, spare} {
				n.logLevel = "info"
				n.start(t, bin)
			}
			// Both masters up before the slave asks who is master.
			eventually(t, 60*time.Second, "both masters answering", func() bool {
				st1, err1 := clusterStatusVia(ctx, peers, mr)
				st2, err2 := clusterStatusVia(ctx, peers, xr)
				return err1 == nil && err2 == nil && st1.Role == "master" && st2.Role == "master"
			})
			slave.logLevel = "info"
			slave.start(t, bin)
			eventually(t, 60*time.Second, "the slave linked to a master", func() bool {
				st, err := clusterStatusVia(ctx, peers, sr)
				return err == nil && st.LeaderConnected
			})
			st, err := clusterStatusVia(ctx, peers, sr)
			if err != nil || st.LeaderNode != tc.follows {
				t.Fatalf("the slave follows %q (%v); want %q", st.GetLeaderNode(), err, tc.follows)
			}
			if tc.masters == "" {
				return // the control: the impostor is followed
			}
			refusal := `answers as master node \"spare\", which is not among the masters this node may follow (masters: \"master\", \"slave\")`
			waitOutput(t, slave, "the slave's refusal of the impostor, naming both", "replication link to peer refused", xr, refusal)
			waitOutput(t, master, "the master's refusal of the impostor, naming both", "replication link to peer refused", xr, refusal)
			// The master has asked its peers since (the refusal above), and
			// stayed master: it does not step down to the impostor's epoch.
			if st, err := clusterStatusVia(ctx, peers, mr); err != nil || st.Role != "master" {
				t.Errorf("the master is %q (%v) next to an unlisted master at a higher epoch; want it master", st.GetRole(), err)
			}
			if out := slave.out.String(); strings.Contains(out, "link to master spare") {
				t.Errorf("the slave linked to the impostor:\n%s", out)
			}
		})
	}
}
