package security

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ferrymq/ferry/core/sdk"
)

// The admin actions of live user administration, as the audit log and a
// refusal name them. Each needs a super user: a user who may change users
// or ACLs can give itself any right, so they are not granted by policies.
const (
	ActionUserList     = "UserList"
	ActionUserAdd      = "UserAdd"
	ActionUserDelete   = "UserDelete"
	ActionUserPassword = "UserPassword"
	ActionACLList      = "AclList"
	ActionACLAdd       = "AclAdd"
	ActionACLDelete    = "AclDelete"
)

// maxAdminBody bounds a request body of the users API.
const maxAdminBody = 1 << 20

// UserRequest is the body of POST /v1/users and of PUT
// /v1/users/{name}/password (only Password).
type UserRequest struct {
	Name        string   `json:"name"`
	Password    string   `json:"password,omitempty"`
	Certificate bool     `json:"certificate,omitempty"`
	Super       bool     `json:"super,omitempty"`
	Policies    []Policy `json:"policies,omitempty"`
}

// UsersHandler serves the live user and ACL administration on the admin
// listener (`ferry user`, `ferry acl`):
//
//	GET    /v1/users                   the users (never a hash)
//	POST   /v1/users                   add one (UserRequest)
//	DELETE /v1/users/{name}            remove one
//	PUT    /v1/users/{name}/password   set its password ({"password": ...})
//	GET    /v1/users/{name}/acl        its ACL entries
//	GET    /v1/users/{name}/check      ?action=&resource=&source_ip=: would it be allowed (CheckResult)
//	POST   /v1/users/{name}/acl        add an entry (a Policy)
//	DELETE /v1/users/{name}/acl        remove the equal entries (a Policy)
//
// Every request authenticates as on the admin listener and needs a super
// user; each is logged as an admin action (or an access denied line).
func (a *Auth) UsersHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/users", a.adminCall(ActionUserList, func(r *http.Request) (string, any, error) {
		return "User:*", a.Users(), nil
	}))
	mux.HandleFunc("POST /v1/users", a.adminCall(ActionUserAdd, func(r *http.Request) (string, any, error) {
		var req UserRequest
		if err := readJSON(r, &req); err != nil {
			return "User:?", nil, err
		}
		err := a.AddUser(User{Name: req.Name, Certificate: req.Certificate, Super: req.Super, Policies: req.Policies}, req.Password)
		return "User:" + req.Name, nil, err
	}))
	mux.HandleFunc("DELETE /v1/users/{name}", a.adminCall(ActionUserDelete, func(r *http.Request) (string, any, error) {
		name := r.PathValue("name")
		return "User:" + name, nil, a.DeleteUser(name)
	}))
	mux.HandleFunc("PUT /v1/users/{name}/password", a.adminCall(ActionUserPassword, func(r *http.Request) (string, any, error) {
		name := r.PathValue("name")
		var req UserRequest
		if err := readJSON(r, &req); err != nil {
			return "User:" + name, nil, err
		}
		return "User:" + name, nil, a.SetPassword(name, req.Password)
	}))
	mux.HandleFunc("GET /v1/users/{name}/acl", a.adminCall(ActionACLList, func(r *http.Request) (string, any, error) {
		name := r.PathValue("name")
		for _, u := range a.Users() {
			if u.Name == name {
				return "User:" + name, u.Policies, nil
			}
		}
		return "User:" + name, nil, fmt.Errorf("%w: %q", ErrNoUser, name)
	}))
	mux.HandleFunc("GET /v1/users/{name}/check", a.adminCall(ActionACLCheck, func(r *http.Request) (string, any, error) {
		name := r.PathValue("name")
		q := r.URL.Query()
		res, err := a.Check(name, q.Get("action"), q.Get("resource"), q.Get("source_ip"))
		return "User:" + name, res, err
	}))
	for method, do := range map[string]struct {
		action string
		f      func(string, Policy) error
	}{"POST": {ActionACLAdd, a.AddPolicy}, "DELETE": {ActionACLDelete, a.DeletePolicy}} {
		mux.HandleFunc(method+" /v1/users/{name}/acl", a.adminCall(do.action, func(r *http.Request) (string, any, error) {
			name := r.PathValue("name")
			var p Policy
			if err := readJSON(r, &p); err != nil {
				return "User:" + name, nil, err
			}
			return "User:" + name, nil, do.f(name, p)
		}))
	}
	return mux
}

// readJSON decodes a request body, refusing unknown fields.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: the request body is not the JSON expected: %v", sdk.ErrInvalidArgument, err)
	}
	return nil
}

// adminCall authenticates and authorizes a request (a super user), runs
// do, audits it and answers: 200 with do's value as JSON, or the error
// with its status.
func (a *Auth) adminCall(action string, do func(r *http.Request) (resource string, v any, err error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(sdk.CredentialsOf(r.Header.Get("Authorization"), r.TLS, r.RemoteAddr))
		if err != nil {
			writeError(w, err)
			return
		}
		if !p.Super {
			resource := "User:*"
			if n := r.PathValue("name"); n != "" {
				resource = "User:" + n
			}
			a.denied(p, action, resource)
			writeError(w, fmt.Errorf("%w: user %q may not %s on %s: user and ACL administration is for super users", sdk.ErrPermissionDenied, p.User, action, resource))
			return
		}
		resource, v, err := do(r)
		result := "ok"
		if err != nil {
			result = err.Error()
		}
		if action != ActionUserList && action != ActionACLList && action != ActionACLCheck || err != nil {
			a.log.Info("audit: admin action", "user", p.User, "source", p.Addr, "action", action, "resource", resource, "result", result)
		} else {
			a.adminRequest(p, action)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if v == nil {
			v = map[string]string{"result": "ok"}
		}
		_ = json.NewEncoder(w).Encode(v)
	}
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, sdk.ErrUnauthenticated):
		code = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="ferry admin", charset="UTF-8"`)
	case errors.Is(err, sdk.ErrPermissionDenied):
		code = http.StatusForbidden
	case errors.Is(err, ErrNoUser), errors.Is(err, ErrNoPolicy):
		code = http.StatusNotFound
	case errors.Is(err, ErrUserExists), errors.Is(err, ErrLastSuper):
		code = http.StatusConflict
	case errors.Is(err, sdk.ErrInvalidArgument):
		code = http.StatusBadRequest
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintln(w, err)
}
