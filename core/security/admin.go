package security

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ferrymq/ferry/core/sdk"
)

// AuthorizeAdmin authenticates a request to the node's admin listener, by
// its HTTP Basic credentials or, under mutual TLS, its verified client
// certificate (as the transports do, with the same failed_auth limit),
// and checks its right: Get on Cluster for metrics and probes; the
// profiler (what shows the process's memory) only for super users. An
// allowed request is audited (adminRequest). Called by the admin listener
// for every request to an endpoint not in admin.open.
func (a *Auth) AuthorizeAdmin(r *http.Request, endpoint string, superOnly bool) error {
	p, err := a.Authenticate(sdk.CredentialsOf(r.Header.Get("Authorization"), r.TLS, r.RemoteAddr))
	if err != nil {
		return err
	}
	if superOnly {
		if !p.Super {
			a.denied(p, "admin "+endpoint, Cluster.String())
			return fmt.Errorf("%w: user %q may not use the admin listener's %s: it is for super users", sdk.ErrPermissionDenied, p.User, endpoint)
		}
	} else if err := a.Authorize(p, Get, Cluster); err != nil {
		return err
	}
	if superOnly {
		// Every profile request: it shows the process's memory.
		a.log.Info("audit: admin request", "user", p.User, "source", p.Addr, "endpoint", endpoint, "path", r.URL.Path)
	} else {
		a.adminRequest(p, endpoint)
	}
	return nil
}

// adminRequestEvery is how often a user's repeated reads of one admin
// endpoint from one source are logged: a Prometheus scrape every 15 s
// must not fill the log.
const adminRequestEvery = time.Minute

// adminRequests remembers when each user, source and endpoint was last
// logged, and how many requests were not.
type adminRequests struct {
	mu   sync.Mutex
	last map[string]*adminSeen
}

type adminSeen struct {
	at      time.Time
	skipped int
}

// maxAdminRequests bounds adminRequests; when full it starts anew.
const maxAdminRequests = 4096

// adminRequest logs an allowed read of the admin listener (metrics, a
// probe, a users or ACL list): the first of each user, source and
// endpoint, then at most one a minute with the count of those not logged
// (`repeated`).
func (a *Auth) adminRequest(p *Principal, endpoint string) {
	key := p.User + "\x00" + p.Addr.String() + "\x00" + endpoint
	now := time.Now()
	r := &a.adminReqs
	r.mu.Lock()
	if r.last == nil || len(r.last) >= maxAdminRequests {
		r.last = map[string]*adminSeen{}
	}
	s := r.last[key]
	if s != nil && now.Sub(s.at) < adminRequestEvery {
		s.skipped++
		r.mu.Unlock()
		return
	}
	skipped := 0
	if s != nil {
		skipped = s.skipped
	}
	r.last[key] = &adminSeen{at: now}
	r.mu.Unlock()
	a.log.Info("audit: admin request", "user", p.User, "source", p.Addr, "endpoint", endpoint, "repeated", skipped)
}
