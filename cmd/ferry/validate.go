package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/config"
)

func init() { rootCmd.AddCommand(newValidateCmd()) }

// newValidateCmd returns `ferry validate FILE...`.
func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check pipeline files, including each plugin's config, without running them",
		Long: `Validate loads each pipeline file with its FERRY_… environment overrides,
checks its structure, types, ranges, references and names, and asks each of
its plugins to check its own config section. It prints one line per problem,
FILE:LINE: PATH: MESSAGE, or "FILE: ok", and exits 1 if any file has a
problem. Nothing is started: no data directory is created, no port is bound.`,
		Args:         cobra.MinimumNArgs(1),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, files []string) error {
			v := newPluginValidator()
			bad := 0
			for _, file := range files {
				if !validateFile(cmd.Context(), cmd.OutOrStdout(), file, v) {
					bad++
				}
			}
			if bad > 0 {
				// The problems are on stdout already; exit 1 without more text.
				return &exitError{code: 1}
			}
			return nil
		},
	}
}

// validateFile checks one pipeline file with v, prints its problems or
// "FILE: ok" to w, and reports whether the file is ok.
func validateFile(ctx context.Context, w io.Writer, file string, v config.PluginValidator) bool {
	p, err := config.Load(file)
	var ps config.Problems
	if err != nil && !errors.As(err, &ps) {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			err = pe.Err
		}
		fmt.Fprintf(w, "%s: cannot read: %v\n", file, err)
		return false
	}
	if p != nil {
		// Even a pipeline with problems has its plugin sections checked,
		// so that one run shows everything to fix.
		ps = append(ps, config.ValidatePlugins(ctx, p, v)...)
	}
	if len(ps) == 0 {
		fmt.Fprintf(w, "%s: ok\n", file)
		return true
	}
	slices.SortStableFunc(ps, func(a, b config.Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Path, b.Path))
	})
	for _, pr := range ps {
		fmt.Fprintln(w, pr)
	}
	return false
}
