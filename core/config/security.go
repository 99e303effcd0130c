package config

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	koanfyaml "github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"

	"github.com/ferrymq/ferry/core/security"
)

// security checks the security section and reads its users_file, whose
// users it appends to s.Users. Problems inside the users file name that
// file, its line and the key path in it.
func (c *checker) security(s *security.Config, pipelineFile string) {
	for _, pr := range s.Validate("security") {
		c.add(pr.Path, "%s", pr.Message)
	}
	if s.UsersFile == "" {
		if c.given("security.users") && len(s.Users) == 0 {
			c.add("security.users", "is empty: a node with a security section but no users refuses every client; remove the section for an open node")
		}
		return
	}
	path := s.UsersFile
	if !filepath.IsAbs(path) && pipelineFile != "" {
		path = filepath.Join(filepath.Dir(pipelineFile), path)
	}
	inline := map[string]bool{}
	for _, u := range s.Users {
		inline[u.Name] = true
	}
	users, ps := loadUsersFile(path, inline)
	if ps != nil {
		if _, err := os.Stat(path); err != nil {
			c.add("security.users_file", "%v", err)
			return
		}
		c.problems = append(c.problems, ps...)
		return
	}
	s.Users = append(s.Users, users...)
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// usersFile is the shape of a users file.
type usersFile struct {
	Users []security.User `koanf:"users"`
}

// loadUsersFile reads and checks a users file: a YAML mapping with the one
// key users, a list of users as in security.users.
func loadUsersFile(path string, inline map[string]bool) ([]security.User, Problems) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{{File: path, Message: err.Error()}}
	}
	src := newSource(path)
	root, ps := parseYAML(src, data)
	if ps != nil {
		return nil, ps
	}
	indexLines(src, root, "", true)
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(data), koanfyaml.Parser()); err != nil {
		return nil, yamlProblems(src, err)
	}
	var f usersFile
	dc := &mapstructure.DecoderConfig{DecodeHook: strictTypes, ErrorUnused: true, TagName: "koanf"}
	if err := k.UnmarshalWithConf("", &f, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		for _, dp := range decodeProblems(err) {
			if strings.HasPrefix(dp.Message, "unknown key") {
				dp.Message = unknownKey(joinPath("security", parentPath(dp.Path)))
			}
			ps = append(ps, src.problem(dp.Path, dp.Message))
		}
		return nil, ps
	}
	for _, pr := range security.ValidateUsers("users", f.Users) {
		ps = append(ps, src.problem(pr.Path, pr.Message))
	}
	for i, u := range f.Users {
		if inline[u.Name] {
			at := indexPath("users", i) + ".name"
			ps = append(ps, src.problem(at, "user "+quote(u.Name)+" is also defined in the pipeline's security.users"))
		}
	}
	if len(f.Users) == 0 && len(ps) == 0 {
		ps = append(ps, src.problem("users", "no users: a node whose users file is empty refuses every client"))
	}
	return f.Users, ps
}
