package config

import (
	"errors"
	"fmt"
	"github.com/ferrymq/ferry/core/names"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzLoadBytes feeds the loader arbitrary files: it never panics, every
// refusal is Problems with messages, and what it accepts keeps the rules
// checked on load (names, plugin types that are names, never paths). The
// seed corpus (testdata/ and a few inline files) runs as an ordinary test;
// `go test -fuzz FuzzLoadBytes ./core/config` explores further.
func FuzzLoadBytes(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	broken, _ := filepath.Glob("testdata/broken/*.yaml")
	for _, file := range append(files, broken...) {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"name: p\ntopics: [{name: t}]\n",
		"name: p\nplugins: {storage: {type: \"/../../evil\"}}\ntopics: [{name: t}]\n",
		"name: p\nplugins: {transport: {type: http, config: {listen: \"\xff\"}}}\ntopics: [{name: t}]\n",
		"name: \xff\ntopics: [{name: t, queues: 99999999999999999999}]\n",
		"a: &a [*a]\n",
		"name: p\ntopics: [{name: t}]\nflows: [{name: f, topic: t, stages: [{type: x, config: {a: [1, {b: null}]}}]}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tm := time.AfterFunc(3*time.Second, func() { panic(fmt.Sprintf("SLOWINPUT %q", data)) })
		defer tm.Stop()
		p, err := LoadBytes("fuzz.yaml", data)
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("Load failed without problems: %v", err)
			}
			for _, pr := range ps {
				if pr.Message == "" {
					t.Fatalf("a problem without a message at %q", pr.Path)
				}
			}
			return
		}
		if p == nil {
			t.Fatal("no pipeline and no error")
		}
		if !nameRule.MatchString(p.Name) || !utf8.ValidString(p.Name) {
			t.Fatalf("accepted the pipeline name %q", p.Name)
		}
		for _, typ := range []string{p.Plugins.Storage.Type, p.Plugins.Transport.Type, p.Plugins.Replication.Type} {
			if typ != "" && !PluginTypeRule.MatchString(typ) {
				t.Fatalf("accepted the plugin type %q", typ)
			}
		}
		for _, tp := range p.Topics {
			if names.Topic(tp.Name) != nil || tp.Queues < 1 || tp.Queues > maxQueues {
				t.Fatalf("accepted the topic %+v", tp)
			}
		}
	})
}
