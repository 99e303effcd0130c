package security

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func hashOf(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// Live changes are kept across a reopen and applied over the pipeline's
// users, user by user; a damaged file is an error naming it.
func TestLiveUsersApply(t *testing.T) {
	HashCost = bcrypt.MinCost
	dir := t.TempDir()
	pipeline := []User{
		{Name: "root", PasswordHash: hashOf(t, "r"), Super: true},
		{Name: "a", PasswordHash: hashOf(t, "a")},
		{Name: "b", PasswordHash: hashOf(t, "b")},
		{Name: "untouched", Certificate: true},
	}
	live, err := OpenLiveUsers(dir)
	if err != nil {
		t.Fatal(err)
	}
	users, over, err := live.Apply(pipeline)
	if err != nil || len(users) != 4 || len(over) != 0 {
		t.Fatalf("no live state: %v %v %v", users, over, err)
	}
	auth, err := NewAuth(Config{Users: users}, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetLive(live)
	if err := auth.DeleteUser("a"); err != nil {
		t.Fatal(err)
	}
	if err := auth.AddPolicy("b", Policy{Resources: []string{"Topic:x"}, Actions: []string{"Pub"}}); err != nil {
		t.Fatal(err)
	}
	if err := auth.AddUser(User{Name: "c"}, "c-pw"); err != nil {
		t.Fatal(err)
	}
	if err := auth.DeleteUser("root"); !errors.Is(err, ErrLastSuper) {
		t.Fatalf("deleting the only super user: %v, want ErrLastSuper", err)
	}
	if err := auth.AddPolicy("c", Policy{Resources: []string{"Queue:x"}, Actions: []string{"Pub"}}); err == nil || !strings.Contains(err.Error(), "Queue:x") {
		t.Fatalf("a malformed entry: %v", err)
	}
	if err := auth.DeletePolicy("b", Policy{Resources: []string{"Topic:y"}, Actions: []string{"Pub"}}); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("deleting an entry b lacks: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LiveFile))
	if strings.Contains(string(b), "c-pw") {
		t.Fatalf("the password is in the live file:\n%s", b)
	}

	live2, err := OpenLiveUsers(dir)
	if err != nil {
		t.Fatal(err)
	}
	users, over, err = live2.Apply(pipeline)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]User{}
	for _, u := range users {
		got[u.Name] = u
	}
	if _, ok := got["a"]; ok {
		t.Errorf("a, deleted live, is back: %v", got)
	}
	if len(got["b"].Policies) != 1 || got["b"].Policies[0].Resources[0] != "Topic:x" {
		t.Errorf("b's live entry is lost: %+v", got["b"])
	}
	if bcrypt.CompareHashAndPassword([]byte(got["c"].PasswordHash), []byte("c-pw")) != nil {
		t.Errorf("c's password hash is not kept: %+v", got["c"])
	}
	if _, ok := got["untouched"]; !ok || strings.Join(over, ",") != "a,b" {
		t.Errorf("the pipeline's other users: %v, overridden %v", got, over)
	}

	if err := os.WriteFile(filepath.Join(dir, LiveFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLiveUsers(dir); err == nil || !strings.Contains(err.Error(), LiveFile) {
		t.Fatalf("a damaged file: %v, want an error naming %s", err, LiveFile)
	}
}
