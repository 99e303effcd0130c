package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	koanfyaml "github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts the name of every environment variable that overrides a
// pipeline key.
const EnvPrefix = "FERRY_"

// Load reads, decodes and checks one pipeline file, with the FERRY_…
// environment overrides applied: structure, types, ranges, references and
// duplicates. It does not run plugins; see ValidatePlugins.
//
// The error is Problems when the file has problems, and then the pipeline is
// returned too, as far as it could be decoded (nil when the file is not a
// YAML mapping), so that a caller can run ValidatePlugins and report
// everything at once; such a pipeline must not be run. Other errors are the
// os errors of reading the file, which name the path.
func Load(path string) (*Pipeline, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return load(path, data, os.Environ)
}

// LoadBytes is Load of a file's contents; path names the file in problems.
func LoadBytes(path string, data []byte) (*Pipeline, error) {
	return load(path, data, os.Environ)
}

func load(path string, data []byte, environ func() []string) (*Pipeline, error) {
	src := newSource(path)
	root, ps := parseYAML(src, data)
	if ps != nil {
		return nil, sortProblems(ps)
	}
	indexLines(src, root, "", true)

	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(data), koanfyaml.Parser()); err != nil {
		return nil, sortProblems(yamlProblems(src, err))
	}
	ps = append(ps, loadEnv(k, src, environ)...)
	raw := k.Raw()
	markPresent(src, raw, "")

	p := Default()
	seedLists(&p, raw)
	dc := &mapstructure.DecoderConfig{
		DecodeHook:  strictTypes,
		ErrorUnused: true,
		TagName:     "koanf",
	}
	if err := k.UnmarshalWithConf("", &p, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		for _, dp := range decodeProblems(err) {
			ps = append(ps, src.problem(dp.Path, dp.Message))
			src.bad = append(src.bad, dp.Path)
		}
	}
	applyDerivedDefaults(&p, src)
	p.File = path
	p.src = src

	c := &checker{src: src}
	c.pipeline(&p)
	c.security(&p.Security, path)
	c.exposure(&p)
	ps = append(ps, c.problems...)
	if len(ps) > 0 {
		return &p, sortProblems(ps)
	}
	return &p, nil
}

// parseYAML parses data into a node tree and returns its top-level mapping,
// or the problems that make it no pipeline at all: syntax errors, an empty
// file, a top level that is not a mapping, more than one document.
func parseYAML(src *source, data []byte) (*yaml.Node, Problems) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return nil, Problems{src.problem("", "file is empty")}
	}
	// Read to the end, so that a syntax error anywhere in the file is found
	// before the shape of the first document is judged.
	extra := 0 // line of a second document that is not empty
	for err == nil {
		var next yaml.Node
		if err = dec.Decode(&next); err == nil && extra == 0 && !isEmptyDoc(&next) {
			extra = next.Line
		}
	}
	if !errors.Is(err, io.EOF) {
		return nil, yamlProblems(src, err)
	}
	if isEmptyDoc(&doc) {
		return nil, Problems{src.problem("", "file is empty")}
	}
	if extra > 0 {
		p := src.problem("", "a pipeline file holds one YAML document; found another")
		p.Line = extra
		return nil, Problems{p}
	}
	root := doc.Content[0]
	for root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	if root.Kind != yaml.MappingNode {
		p := src.problem("", "the top level must be a mapping of keys (name, topics, flows, …), got "+nodeKind(root))
		p.Line = root.Line
		return nil, Problems{p}
	}
	return root, nil
}

func isEmptyDoc(doc *yaml.Node) bool {
	if len(doc.Content) == 0 {
		return true
	}
	n := doc.Content[0]
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && (n.Value == "" || n.Value == "~" || n.Value == "null")
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", truncate(n.Value, 40))
		case "!!null":
			return "null"
		}
		return "the value " + truncate(n.Value, 40)
	}
	return "something else"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// yamlLine matches the "line N: " that yaml.v3 puts in its messages.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlProblems turns a yaml.v3 error (syntax errors, duplicate keys) into
// problems carrying the parser's line.
func yamlProblems(src *source, err error) Problems {
	var msgs []string
	if te := (*yaml.TypeError)(nil); errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var ps Problems
	for _, m := range msgs {
		m = strings.TrimSpace(m)
		p := src.problem("", "")
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			m = sm[2]
		}
		p.Message = "not valid YAML: " + strings.TrimPrefix(m, "yaml: ")
		ps = append(ps, p)
	}
	return ps
}

// maxIndexedNodes bounds the nodes indexLines visits: aliases can make a
// small file a huge tree ("billion laughs"); yaml.v3 refuses such a file
// when it decodes it, and the lines past the bound are not needed then.
const maxIndexedNodes = 1 << 20

// indexLines records the line of every key path under n. Keys brought in by
// a merge key ("<<: *anchor") get the anchor's lines unless written here. An
// alias inside its own anchor ("a: &a [*a]") is not followed again: it
// recursed forever (decoding then reports it).
func indexLines(src *source, n *yaml.Node, path string, overwrite bool) {
	w := lineIndexer{src: src, active: map[*yaml.Node]bool{}}
	w.index(n, path, overwrite)
}

// lineIndexer is one walk of indexLines.
type lineIndexer struct {
	src     *source
	active  map[*yaml.Node]bool // anchors being walked through an alias
	visited int
}

func (w *lineIndexer) index(n *yaml.Node, path string, overwrite bool) {
	if w.visited++; w.visited > maxIndexedNodes {
		return
	}
	src := w.src
	set := func(p string, line int) {
		if _, ok := src.lines[p]; overwrite || !ok {
			src.lines[p] = line
		}
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil || w.active[n.Alias] {
			return
		}
		w.active[n.Alias] = true
		w.index(n.Alias, path, overwrite)
		delete(w.active, n.Alias)
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := indexPath(path, i)
			set(p, item.Line)
			w.index(item, p, overwrite)
		}
	case yaml.MappingNode:
		var merges []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if key.Value == "<<" && key.ShortTag() == "!!merge" {
				merges = append(merges, val)
				continue
			}
			p := joinPath(path, key.Value)
			set(p, key.Line)
			w.index(val, p, overwrite)
		}
		for _, m := range merges {
			if m.Kind == yaml.SequenceNode {
				for _, item := range m.Content {
					w.index(item, path, false)
				}
			} else {
				w.index(m, path, false)
			}
		}
	}
}

// markPresent records every key path of raw that holds a non-null value.
func markPresent(src *source, v any, path string) {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			if val != nil {
				p := joinPath(path, k)
				src.present[p] = true
				markPresent(src, val, p)
			}
		}
	case []any:
		for i, val := range v {
			if val != nil {
				p := indexPath(path, i)
				src.present[p] = true
				markPresent(src, val, p)
			}
		}
	}
}

// loadEnv merges the FERRY_… environment overrides into k; see the package
// doc for the rules.
func loadEnv(k *koanf.Koanf, src *source, environ func() []string) Problems {
	var ps Problems
	transform := func(name, value string) (string, any) {
		rest, _ := strings.CutPrefix(name, EnvPrefix)
		segs := strings.Split(strings.ToLower(rest), "__")
		if !slices.Contains(keysOf(reflect.TypeFor[Pipeline]()), segs[0]) {
			return "", nil // not a pipeline key: another part of Ferry reads it
		}
		t := reflect.TypeFor[Pipeline]()
		for i, s := range segs {
			if t == nil {
				break // unknown key: reported by the decoder
			}
			if t.Kind() == reflect.Slice {
				list := strings.Join(segs[:i], ".")
				p := src.problem(list, fmt.Sprintf("an environment variable cannot set one element of a list (%s); set the whole list, e.g. %s%s='[…]'",
					name, EnvPrefix, strings.ToUpper(strings.Join(segs[:i], "__"))))
				p.Line = 0
				ps = append(ps, p)
				return "", nil
			}
			if t.Kind() == reflect.Map {
				t = nil // free-form config: any key
				break
			}
			t = fieldType(t, s)
		}
		path := strings.Join(segs, ".")
		src.env[path] = name
		if t != nil && t.Kind() == reflect.String {
			return path, value
		}
		var v any
		if err := yaml.Unmarshal([]byte(value), &v); err != nil || v == nil {
			return path, value
		}
		return path, v
	}
	// Errors are impossible: the provider only reads the environment.
	_ = k.Load(env.Provider(".", env.Opt{Prefix: EnvPrefix, TransformFunc: transform, EnvironFunc: environ}), nil)
	return ps
}
