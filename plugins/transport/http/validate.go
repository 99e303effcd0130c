package httptransport

import (
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ferrymq/ferry/core/sdk"
)

// maxNameBytes bounds a topic or group name taken from a request: the
// configured names are at most 64 characters, internal topics add a prefix
// such as %RETRY% to a group's name.
const maxNameBytes = 255

// checkRequest refuses a request whose path, query or Ferry-* headers are
// not valid UTF-8, before any handler runs: such a string cannot travel to
// the broker core (protobuf strings are UTF-8). The answer names the part
// and shows the bad bytes escaped. Called by the router for every request.
func checkRequest(r *http.Request) error {
	if !strings.HasPrefix(r.URL.Path, "/") {
		return badRequest("the path %q does not start with /", r.URL.Path)
	}
	if !utf8.ValidString(r.URL.Path) {
		return badRequest("the path %q is not valid UTF-8 (after percent-decoding)", r.URL.Path)
	}
	for k, vs := range r.URL.Query() {
		if !utf8.ValidString(k) {
			return badRequest("query parameter name %q is not valid UTF-8 (after percent-decoding)", k)
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return badRequest("query parameter %s=%q is not valid UTF-8 (after percent-decoding)", k, v)
			}
		}
	}
	for k, vs := range r.Header {
		if !strings.HasPrefix(k, "Ferry-") {
			continue // not forwarded to the broker
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return badRequest("header %s: %q is not valid UTF-8", k, v)
			}
		}
	}
	return nil
}

// checkName refuses a topic or group name that is empty, too long, not UTF-8
// or holds control characters; what says which name it is ("topic").
func checkName(what, s string) error {
	switch {
	case s == "":
		return badRequest("%s must not be empty", what)
	case len(s) > maxNameBytes:
		return badRequest("%s must be at most %d bytes, got %d", what, maxNameBytes, len(s))
	case !utf8.ValidString(s):
		return badRequest("%s %q is not valid UTF-8", what, s)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return badRequest("%s %q holds a control character", what, s)
	}
	return nil
}

// checkText refuses a string that is not valid UTF-8 (a key, an id, a
// header); what names it.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return badRequest("%s %q is not valid UTF-8", what, s)
	}
	return nil
}

// guard wraps the router: it answers 503 past max_connections and 400 to
// requests checkRequest refuses.
func (a *api) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.lim.guard(w); err != nil {
			fail(w, err)
			return
		}
		if err := checkRequest(r); err != nil {
			fail(w, err)
			return
		}
		// The core authenticates and authorizes: it gets what the
		// request says of its client (Authorization: Basic ..., the
		// verified client certificate, the address).
		creds := sdk.CredentialsOf(r.Header.Get("Authorization"), r.TLS, r.RemoteAddr)
		next.ServeHTTP(w, r.WithContext(sdk.WithClientCredentials(r.Context(), creds)))
	})
}
