package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// docFiles are README.md and every page of docs/, relative to this package.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files := append([]string{"../../README.md"}, pages...)
	if len(pages) < 10 {
		t.Fatalf("docs/ has %d pages: %v", len(pages), pages)
	}
	return files
}

// docCommand is one `ferry …` command found in a shell block of a doc.
type docCommand struct {
	where string   // FILE:LINE
	args  []string // after "ferry"
}

// shellCommands extracts the ferry commands of the ```sh blocks of a
// markdown text: each line (joined over trailing backslashes), cut at
// comments, split at |, &&, ; and a trailing &, keeping the pieces that
// begin with "ferry" (after any VAR=value assignments).
func shellCommands(name, text string) ([]docCommand, error) {
	var out []docCommand
	in := false
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "```") {
			in = !in && (l == "```sh" || l == "```bash" || l == "```shell")
			continue
		}
		if !in {
			continue
		}
		at := i + 1
		for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
			i++
			l = strings.TrimSuffix(l, `\`) + " " + strings.TrimSpace(lines[i])
		}
		words, err := shellWords(l)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, at, err)
		}
		var piece []string
		flush := func() {
			for len(piece) > 0 && strings.Contains(piece[0], "=") && !strings.HasPrefix(piece[0], "-") {
				piece = piece[1:] // VAR=value
			}
			if len(piece) > 0 && piece[0] == "ferry" {
				out = append(out, docCommand{where: fmt.Sprintf("%s:%d", name, at), args: piece[1:]})
			}
			piece = nil
		}
		for _, w := range words {
			switch w {
			case "|", "&&", ";", "&", "||":
				flush()
			default:
				piece = append(piece, w)
			}
		}
		flush()
	}
	return out, nil
}

// shellWords splits a line as the shell would for these docs: words
// separated by blanks, '…' and "…" quoting, a # starting a comment, and
// |, &, ; as words of their own.
func shellWords(l string) ([]string, error) {
	var words []string
	var cur strings.Builder
	have := false
	end := func() {
		if have {
			words = append(words, cur.String())
		}
		cur.Reset()
		have = false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(l[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated %c in %q", c, l)
			}
			cur.WriteString(l[i+1 : i+1+j])
			have = true
			i += j + 1
		case c == ' ' || c == '\t':
			end()
		case c == '#' && !have:
			end()
			return words, nil
		case c == '|' || c == '&' || c == ';':
			end()
			op := string(c)
			if i+1 < len(l) && (l[i+1] == '&' || l[i+1] == '|') && c != ';' {
				op += string(l[i+1])
				i++
			}
			words = append(words, op)
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	end()
	return words, nil
}

// checkCommand checks one documented command against ferry's command tree
// (rootCmd, with the argument rules main gives it), as the binary would
// parse it: it must name a command (no unknown subcommand, not a group
// alone), use only flags that command has, with values that parse, and
// pass as many arguments as the command takes. Flag values parsed stay in
// the tree (nothing runs); --help is reset after each command.
func checkCommand(args []string) error {
	strictOnce.Do(func() { strictArgs(rootCmd) })
	cmd, rest, err := rootCmd.Find(args)
	if err != nil {
		return err
	}
	cmd.InitDefaultHelpFlag()
	defer func() {
		if f := cmd.Flags().Lookup("help"); f != nil {
			_ = f.Value.Set("false")
		}
	}()
	if err := cmd.ParseFlags(rest); err != nil {
		return fmt.Errorf("ferry %s: %v", cmd.CommandPath(), err)
	}
	if help, _ := cmd.Flags().GetBool("help"); help {
		return nil
	}
	if cmd.HasSubCommands() {
		if pos := cmd.Flags().Args(); len(pos) > 0 {
			return fmt.Errorf("unknown command %q for %q", pos[0], cmd.CommandPath())
		}
		return fmt.Errorf("%q only groups commands: name one of them", cmd.CommandPath())
	}
	return cmd.ValidateArgs(cmd.Flags().Args())
}

var strictOnce sync.Once

// Every `ferry …` command in the shell blocks of README.md and docs/*.md
// parses as the binary would parse it (a real command, its flags, the
// number of arguments it takes), and every pipeline file such a command
// names exists. It does not run the commands (most need a running broker);
// TestBrokerAddressDefault, TestConsumeBody and the other tests of this
// package run the behaviour they document. curl commands are not checked.
func TestDocCommands(t *testing.T) {
	total := 0
	for _, f := range docFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := shellCommands(strings.TrimPrefix(f, "../../"), string(b))
		if err != nil {
			t.Error(err)
			continue
		}
		for _, c := range cmds {
			total++
			if err := checkCommand(c.args); err != nil {
				t.Errorf("%s: ferry %s: %v", c.where, strings.Join(c.args, " "), err)
			}
			for _, a := range c.args {
				if strings.HasPrefix(a, "pipelines/") && strings.HasSuffix(a, ".yaml") {
					if _, err := os.Stat(filepath.Join("../..", a)); err != nil {
						t.Errorf("%s: names %s: %v", c.where, a, err)
					}
				}
			}
		}
	}
	if total < 30 {
		t.Errorf("found only %d ferry commands in the docs' shell blocks", total)
	}
	t.Logf("%d documented ferry commands parse", total)
}

// The checker catches what it is for (a negative control): an unknown
// subcommand, an unknown flag, a bad flag value, extra or missing
// arguments, a group without a subcommand.
func TestDocCommandCheckerFails(t *testing.T) {
	for _, bad := range []string{
		"dlq lsit --group g",
		"consume --topic t --group g --bodee",
		"consume --topic t --group g --count many",
		"run a.yaml b.yaml",
		"run",
		"dlq show --group g",
		"cluster",
		"produce --topic t stray",
		"nosuch",
	} {
		if err := checkCommand(strings.Fields(bad)); err == nil {
			t.Errorf("ferry %s passed the checker", bad)
		}
	}
	for _, good := range []string{"consume --help", "dlq show --group g 0", "consume --topic t --group g --body --json", "run pipelines/broker.yaml", "version", "cluster status --nodes a,b"} {
		if err := checkCommand(strings.Fields(good)); err != nil {
			t.Errorf("ferry %s: %v", good, err)
		}
	}
	cmds, err := shellCommands("x.md", "```sh\nseq 3 | ferry produce --topic t --json   # a comment\nFERRY_X=1 ferry run \\\n  pipelines/broker.yaml &\ncurl -s x\n```\n```text\nferry not checked\n```\n")
	if err != nil || len(cmds) != 2 || strings.Join(cmds[0].args, " ") != "produce --topic t --json" || strings.Join(cmds[1].args, " ") != "run pipelines/broker.yaml" {
		t.Errorf("extracted %+v, %v", cmds, err)
	}
}

// linkRE matches a markdown link's target.
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// pendingDocs are pages other branches add (linked from here already).
var pendingDocs = map[string]bool{"ring-protocol.md": true, "storage-integrity.md": true, "http-limits.md": true}

// Every relative link in README.md and docs/ points at a file that exists
// (or at one of the pages other branches add), and every page of docs/ is
// in the README's map.
func TestDocLinks(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range docFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
			target, _, _ := strings.Cut(m[1], "#")
			if target == "" || strings.Contains(target, "://") {
				continue
			}
			path := filepath.Join(filepath.Dir(f), target)
			if _, err := os.Stat(path); err != nil && !pendingDocs[filepath.Base(path)] {
				t.Errorf("%s links to %s: %v", f, m[1], err)
			}
		}
		if name := filepath.Base(f); f != "../../README.md" && !strings.Contains(string(readme), "(docs/"+name+")") {
			t.Errorf("README.md's doc map does not link docs/%s", name)
		}
	}
	for p := range pendingDocs {
		if !strings.Contains(string(readme), "(docs/"+p+")") {
			t.Errorf("README.md's doc map does not link docs/%s", p)
		}
	}
}
