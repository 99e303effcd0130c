package security

import (
	"fmt"
	"net/http"

	"github.com/ferrymq/ferry/core/sdk"
)

// AuthorizeAdmin authenticates a request to the node's admin listener, by
// its HTTP Basic credentials or, under mutual TLS, its verified client
// certificate (as the transports do, with the same failed_auth limit),
// and checks its right: Get on Cluster for metrics and probes; the
// profiler (what shows the process's memory) only for super users. Called
// by the admin listener for every request to an endpoint not in
// admin.open.
func (a *Auth) AuthorizeAdmin(r *http.Request, endpoint string, superOnly bool) error {
	p, err := a.Authenticate(sdk.CredentialsOf(r.Header.Get("Authorization"), r.TLS, r.RemoteAddr))
	if err != nil {
		return err
	}
	if superOnly {
		if p.Super {
			return nil
		}
		a.denied(p, "admin "+endpoint, Cluster.String())
		return fmt.Errorf("%w: user %q may not use the admin listener's %s: it is for super users", sdk.ErrPermissionDenied, p.User, endpoint)
	}
	return a.Authorize(p, Get, Cluster)
}
