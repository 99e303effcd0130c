// Command ferry is Ferry's one binary: it runs and validates pipelines, serves
// the built-in plugins (re-executed by the plugin host), and holds the CLI
// tools.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

var rootCmd = &cobra.Command{
	Use:           "ferry",
	Short:         "Ferry: a plugin-based message pipeline",
	SilenceUsage:  true,
	SilenceErrors: true,
}

// exitError carries an exit status and is printed by main only if msg is set.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	rootCmd.Version = versionString()
	rootCmd.Long = "Ferry " + rootCmd.Version + `

Ferry is a plugin-based message broker: ` + "`ferry run`" + ` runs a broker node from a
YAML pipeline, with its storage, transport and replication plugins as
processes of their own; the other commands talk to a running broker (at
$` + EnvBroker + ` or ` + DefaultBroker + ` unless --broker says otherwise).`
	rootCmd.InitDefaultCompletionCmd() // added now, not by Execute, so that strictArgs covers it
	strictArgs(rootCmd)
	if err := rootCmd.Execute(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintln(os.Stderr, "ferry:", ee.msg)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(1)
	}
}
