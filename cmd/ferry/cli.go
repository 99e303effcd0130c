package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ferrymq/ferry/core/client"
)

// DefaultBroker is the broker address of every command that talks to a
// broker (produce, consume, dlq, bench) when neither --broker nor
// FERRY_BROKER names one: the grpc transport of pipelines/quickstart.yaml
// and pipelines/broker.yaml.
const DefaultBroker = "127.0.0.1:7070"

// EnvBroker names the environment variable that gives those commands their
// broker address(es) when --broker is not set (comma-separated for a
// cluster, where the command takes one).
const EnvBroker = "FERRY_BROKER"

// brokerUsage is the help text of every --broker flag.
const brokerUsage = "broker address host:port of its grpc transport (default: $" + EnvBroker + ", else " + DefaultBroker + ")"

// tlsFlags are the TLS and credential flags of every command that talks
// to a broker.
type tlsFlags struct {
	on            bool
	ca, cert, key string
	user          string // --user, default $FERRY_USER
	passwordFile  string // --password-file; else $FERRY_PASSWORD
}

// Environment variables of the credential flags.
const (
	EnvUser     = "FERRY_USER"
	EnvPassword = "FERRY_PASSWORD"
)

func (t *tlsFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&t.on, "tls", false, "speak TLS to the broker, trusting the system's CAs (implied by --tls-ca, --tls-cert, --tls-key)")
	fs.StringVar(&t.ca, "tls-ca", "", "TLS: PEM file of the CA that signed the broker's certificate")
	fs.StringVar(&t.cert, "tls-cert", "", "TLS: this client's certificate (PEM), for a broker that requires mutual TLS")
	fs.StringVar(&t.key, "tls-key", "", "TLS: the key of --tls-cert (PEM)")
	fs.StringVar(&t.user, "user", os.Getenv(EnvUser), "authenticate as this user (default $"+EnvUser+"); the password comes from --password-file or $"+EnvPassword)
	fs.StringVar(&t.passwordFile, "password-file", "", "file whose first line is the password of --user (default: $"+EnvPassword+")")
}

// options are the client options the flags ask for; an error (exit status
// 2) when a password has no user, or a user no password.
func (t tlsFlags) options() ([]client.Option, error) {
	var opts []client.Option
	if t.on || t.ca != "" || t.cert != "" || t.key != "" {
		opts = append(opts, client.WithTLS(t.ca, t.cert, t.key))
	}
	password, given := os.LookupEnv(EnvPassword)
	if t.passwordFile != "" {
		b, err := os.ReadFile(t.passwordFile)
		if err != nil {
			return nil, &exitError{code: 2, msg: fmt.Sprintf("--password-file: %v", err)}
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password, given = strings.TrimSuffix(password, "\r"), true
	}
	switch {
	case t.user == "" && t.passwordFile != "":
		return nil, &exitError{code: 2, msg: "--password-file needs --user (or $" + EnvUser + ")"}
	case t.user != "" && !given:
		return nil, &exitError{code: 2, msg: "--user " + t.user + " needs a password: set $" + EnvPassword + " or give --password-file"}
	case t.user != "":
		opts = append(opts, client.WithCredentials(t.user, password))
	}
	return opts, nil
}

// brokersOf resolves a command's broker addresses: the --broker flag's
// values if it was set, else $FERRY_BROKER, else DefaultBroker. Commands call
// it at the start of their RunE. Blank entries are dropped; none left is an
// error naming where the addresses came from.
func brokersOf(cmd *cobra.Command, flagValues []string) ([]string, error) {
	from, vals := "--broker", flagValues
	if !cmd.Flags().Changed("broker") {
		from, vals = DefaultBroker, []string{DefaultBroker}
		if env, ok := os.LookupEnv(EnvBroker); ok {
			from, vals = "$"+EnvBroker, strings.Split(env, ",")
		}
	}
	var out []string
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, &exitError{code: 2, msg: from + " names no broker address"}
	}
	return out, nil
}

// brokerOf is brokersOf for commands that talk to one broker.
func brokerOf(cmd *cobra.Command, flagValue string) (string, error) {
	var vals []string
	if cmd.Flags().Changed("broker") {
		vals = []string{flagValue}
	}
	bs, err := brokersOf(cmd, vals)
	if err != nil {
		return "", err
	}
	if len(bs) > 1 {
		return "", &exitError{code: 2, msg: fmt.Sprintf("%s talks to one broker, got %d addresses (%s)", cmd.CommandPath(), len(bs), strings.Join(bs, ","))}
	}
	return bs[0], nil
}

// version is set at link time (go build -ldflags "-X main.version=v1.2.3");
// otherwise versionString takes it from the build info.
var version = ""

// versionString says which ferry this is: the version (set at link time,
// or the module version go install stamps, or "devel"), the VCS revision and
// time it was built from (+dirty for uncommitted changes), and the Go
// version. `ferry version`, `ferry --version` and `ferry --help` print it.
func versionString() string {
	v := version
	var rev, at string
	dirty := false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "devel"
	}
	var extra []string
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "+dirty"
		}
		extra = append(extra, "commit "+rev)
	}
	if at != "" {
		extra = append(extra, at)
	}
	extra = append(extra, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
	return v + " (" + strings.Join(extra, ", ") + ")"
}

func init() { rootCmd.AddCommand(newVersionCmd()) }

// newVersionCmd returns `ferry version`.
func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print ferry's version, the commit it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "ferry", versionString())
			return err
		},
	}
}

// helpCmd is `ferry help [COMMAND...]`: cobra's own prints the root's help
// and exits 0 for a command that does not exist.
var helpCmd = &cobra.Command{
	Use:   "help [command]",
	Short: "Help about any command",
	Args:  cobra.ArbitraryArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		c := cmd.Root()
		for _, w := range args {
			next, _, err := c.Find([]string{w})
			if err != nil || next == c {
				return unknownCommand(c, w)
			}
			c = next
		}
		return c.Help()
	},
}

func init() { rootCmd.SetHelpCommand(helpCmd) }

// strictArgs makes every command of the tree reject what it does not know,
// with a one-line error and a non-zero exit: a command that only groups
// subcommands (ferry plugin, dlq, cluster) gets "unknown command" for a
// word that is none of them (cobra would print its help and exit 0), and
// a runnable command that declares no argument rule takes no arguments.
// main calls it once, before Execute.
func strictArgs(cmd *cobra.Command) {
	switch {
	case cmd.HasSubCommands() && !cmd.Runnable():
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return cmd.Help()
		}
	case cmd.Args == nil && cmd.Runnable():
		cmd.Args = cobra.NoArgs
	}
	for _, c := range cmd.Commands() {
		strictArgs(c)
	}
}

// unknownCommand is the one-line error for a word that names no subcommand
// of cmd, with cobra's suggestions folded into it.
func unknownCommand(cmd *cobra.Command, word string) error {
	msg := fmt.Sprintf("unknown command %q for %q", word, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(word); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	msg += fmt.Sprintf("; its commands: %s (see '%s --help')", strings.Join(names, ", "), cmd.CommandPath())
	return &exitError{code: 2, msg: msg}
}
