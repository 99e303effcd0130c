package security

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/sdk"
)

// Live changes of a node's users and ACLs (`ferry user`, `ferry acl`,
// through the admin listener, admin_users.go).
//
// The node keeps them in LiveFile under its data directory: per user, its
// whole definition as the last change left it, or that it was deleted.
// At start the node reads its pipeline's users (inline and users_file),
// then applies that file over them, user by user: for a user named in both,
// the live state wins (and the node logs so); a user only in the pipeline
// is as the pipeline says, so adding a user to the pipeline still works.

// LiveFile is the live users' file, relative to the node's data directory.
const LiveFile = "security/users.json"

// ErrNoUser and ErrUserExists are the answers to a change naming a user
// that does not exist, or adding one that does.
var (
	ErrNoUser     = errors.New("no such user")
	ErrUserExists = errors.New("user already exists")
)

// LiveUsers is the node-held state of live user changes. Safe for
// concurrent use; changes are serialized.
type LiveUsers struct {
	path string

	mu      sync.Mutex
	entries map[string]*User // nil: deleted
}

// liveDoc is LiveFile's content.
type liveDoc struct {
	Version int         `json:"version"`
	Users   []liveEntry `json:"users"`
}

type liveEntry struct {
	Name    string `json:"name"`
	Deleted bool   `json:"deleted,omitempty"`
	User    *User  `json:"user,omitempty"`
}

// OpenLiveUsers reads dataDir's LiveFile; a missing file is no changes.
// A file that is not what the node wrote is an error naming it.
func OpenLiveUsers(dataDir string) (*LiveUsers, error) {
	l := &LiveUsers{path: filepath.Join(dataDir, LiveFile), entries: map[string]*User{}}
	b, err := os.ReadFile(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("live users: %w", err)
	}
	var doc liveDoc
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("live users %s: not a users file this node wrote: %v", l.path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("live users %s: version %d, this node reads version 1", l.path, doc.Version)
	}
	for i, e := range doc.Users {
		switch {
		case e.Deleted && e.User == nil:
			l.entries[e.Name] = nil
		case !e.Deleted && e.User != nil && e.User.Name == e.Name:
			u := *e.User
			l.entries[e.Name] = &u
		default:
			return nil, fmt.Errorf("live users %s: users[%d] (%q) must be a user of that name or deleted", l.path, i, e.Name)
		}
	}
	return l, nil
}

// Path is the file's path.
func (l *LiveUsers) Path() string { return l.path }

// Apply returns pipeline's users with the live changes over them, and the
// names of pipeline users the live state overrides. The result is checked
// as the pipeline's users are: a problem names LiveFile.
func (l *LiveUsers) Apply(pipeline []User) ([]User, []string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []User
	var overridden []string
	seen := map[string]bool{}
	for _, u := range pipeline {
		seen[u.Name] = true
		e, ok := l.entries[u.Name]
		switch {
		case !ok:
			out = append(out, u)
			continue
		case e != nil:
			out = append(out, *e)
		}
		overridden = append(overridden, u.Name)
	}
	names := make([]string, 0, len(l.entries))
	for n, e := range l.entries {
		if e != nil && !seen[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, *l.entries[n])
	}
	if ps := ValidateUsers(l.path+": users", out); len(ps) > 0 {
		return nil, nil, ps
	}
	return out, overridden, nil
}

// put records name's new state (nil: deleted; reset: no live state) and
// writes the file durably (a temporary file, fsync, rename, fsync of the
// directory) before it returns.
func (l *LiveUsers) put(name string, u *User, reset bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := make(map[string]*User, len(l.entries)+1)
	for k, v := range l.entries {
		next[k] = v
	}
	if reset {
		delete(next, name)
	} else {
		next[name] = u
	}
	doc := liveDoc{Version: 1}
	names := make([]string, 0, len(next))
	for n := range next {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if next[n] == nil {
			doc.Users = append(doc.Users, liveEntry{Name: n, Deleted: true})
		} else {
			doc.Users = append(doc.Users, liveEntry{Name: n, User: next[n]})
		}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := writeDurably(l.path, append(b, '\n')); err != nil {
		return fmt.Errorf("live users: %w", err)
	}
	l.entries = next
	return nil
}

// has reports whether name has a live state.
func (l *LiveUsers) has(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.entries[name]
	return ok
}

// writeDurably replaces path with b: the old content or the new one
// survives a crash, never a mix.
func writeDurably(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".users-*.json")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SetLive makes a's users changeable (Change), each change recorded in l
// first. Called once by the engine before the node serves.
func (a *Auth) SetLive(l *LiveUsers) { a.live = l }

// UserInfo is what `ferry user list` shows of a user: never its hash.
type UserInfo struct {
	Name        string   `json:"name"`
	Password    bool     `json:"password"`
	Certificate bool     `json:"certificate,omitempty"`
	Super       bool     `json:"super,omitempty"`
	Policies    []Policy `json:"policies,omitempty"`
	// From is where the user's definition comes from: "pipeline" or
	// "live" (LiveFile).
	From string `json:"from"`
}

// Users lists the configured users, by name (not the node's own).
func (a *Auth) Users() []UserInfo {
	m := *a.users.Load()
	out := make([]UserInfo, 0, len(m))
	for _, acc := range m {
		u := acc.user
		from := "pipeline"
		if a.live != nil && a.live.has(u.Name) {
			from = "live"
		}
		out = append(out, UserInfo{Name: u.Name, Password: u.PasswordHash != "", Certificate: u.Certificate, Super: u.Super, Policies: u.Policies, From: from})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// HashCost is the bcrypt cost of passwords set live: bcrypt's default, as
// `ferry user hash` makes them.
var HashCost = bcrypt.DefaultCost

// HashPassword is the password_hash of password, or why it cannot be one.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("the password is empty")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), HashCost)
	if err != nil {
		return "", err // bcrypt refuses passwords over 72 bytes
	}
	return string(h), nil
}

// change applies edit to user name's definition (nil: the user does not
// exist; edit returning nil deletes it), checks the result, records it
// in LiveFile and only then makes it the node's: the next request of any
// client is judged by it, and credentials verified before are verified
// again.
func (a *Auth) change(name string, edit func(*User) (*User, error)) error {
	if a.live == nil {
		return errors.New("this node's users cannot be changed live")
	}
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	cur := *a.users.Load()
	var old *User
	if acc := cur[name]; acc != nil {
		u := acc.user
		u.Policies = slices.Clone(u.Policies)
		old = &u
	}
	nu, err := edit(old)
	if err != nil {
		return err
	}
	var list []User
	for n, acc := range cur {
		if n != name {
			list = append(list, acc.user)
		}
	}
	if nu != nil {
		list = append(list, *nu)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	if ps := ValidateUsers("users", list); len(ps) > 0 {
		return fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, ps)
	}
	if !slices.ContainsFunc(list, func(u User) bool { return u.Super }) {
		return ErrLastSuper
	}
	users, err := compileUsers(list)
	if err != nil {
		return fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
	}
	if err := a.live.put(name, nu, false); err != nil {
		return err
	}
	a.swap(users)
	return nil
}

// swap makes users the node's and forgets every verified credential.
func (a *Auth) swap(users map[string]*account) {
	a.mu.Lock()
	a.users.Store(&users)
	clear(a.verified)
	a.gen++
	a.mu.Unlock()
}

// AddUser adds a user with password (hashed; "" for none, then
// certificate must be true).
func (a *Auth) AddUser(u User, password string) error {
	if password != "" {
		h, err := HashPassword(password)
		if err != nil {
			return fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
		}
		u.PasswordHash = h
	}
	return a.change(u.Name, func(old *User) (*User, error) {
		if old != nil {
			return nil, fmt.Errorf("%w: %q", ErrUserExists, u.Name)
		}
		return &u, nil
	})
}

// DeleteUser removes a user: its next request is refused.
func (a *Auth) DeleteUser(name string) error {
	return a.change(name, func(old *User) (*User, error) {
		if old == nil {
			return nil, fmt.Errorf("%w: %q", ErrNoUser, name)
		}
		return nil, nil
	})
}

// SetPassword replaces a user's password.
func (a *Auth) SetPassword(name, password string) error {
	h, err := HashPassword(password)
	if err != nil {
		return fmt.Errorf("%w: %v", sdk.ErrInvalidArgument, err)
	}
	return a.change(name, func(old *User) (*User, error) {
		if old == nil {
			return nil, fmt.Errorf("%w: %q", ErrNoUser, name)
		}
		old.PasswordHash = h
		return old, nil
	})
}

// AddPolicy appends an entry to a user's ACL.
func (a *Auth) AddPolicy(name string, p Policy) error {
	return a.change(name, func(old *User) (*User, error) {
		if old == nil {
			return nil, fmt.Errorf("%w: %q", ErrNoUser, name)
		}
		old.Policies = append(old.Policies, p)
		return old, nil
	})
}

// DeletePolicy removes the entries of a user's ACL equal to p (the same
// resources and actions in the same order, decision and sources; case of
// actions and decision aside); none is ErrNoPolicy.
func (a *Auth) DeletePolicy(name string, p Policy) error {
	return a.change(name, func(old *User) (*User, error) {
		if old == nil {
			return nil, fmt.Errorf("%w: %q", ErrNoUser, name)
		}
		n := len(old.Policies)
		old.Policies = slices.DeleteFunc(old.Policies, func(q Policy) bool { return samePolicy(p, q) })
		if len(old.Policies) == n {
			return nil, fmt.Errorf("%w: user %q has no entry %s", ErrNoPolicy, name, PolicyString(p))
		}
		return old, nil
	})
}

// ErrLastSuper refuses a change that would leave no super user.
var ErrLastSuper = errors.New("that would leave the node without a super user, and nobody could administer its users again")

// ErrNoPolicy: a user has no such ACL entry.
var ErrNoPolicy = errors.New("no such ACL entry")

func samePolicy(p, q Policy) bool {
	dec := func(s string) string {
		if s == "" {
			return "allow"
		}
		return strings.ToLower(s)
	}
	return slices.Equal(p.Resources, q.Resources) &&
		slices.EqualFunc(p.Actions, q.Actions, strings.EqualFold) &&
		dec(p.Decision) == dec(q.Decision) &&
		slices.Equal(p.SourceIPs, q.SourceIPs)
}

// PolicyString shows an ACL entry on one line.
func PolicyString(p Policy) string {
	d := p.Decision
	if d == "" {
		d = "Allow"
	}
	s := fmt.Sprintf("%s %s on %s", d, strings.Join(p.Actions, ","), strings.Join(p.Resources, ","))
	if len(p.SourceIPs) > 0 {
		s += " from " + strings.Join(p.SourceIPs, ",")
	}
	return s
}
