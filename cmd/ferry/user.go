package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferrymq/ferry/core/security"
)

func init() { rootCmd.AddCommand(newUserCmd()) }

func newUserCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Make password hashes; add, remove and list the users of a running node",
	}
	cmd.AddCommand(newUserHashCmd(), newUserAddCmd(), newUserDeleteCmd(), newUserPasswdCmd(), newUserListCmd())
	return cmd
}

func newUserHashCmd() *cobra.Command {
	var cost int
	cmd := &cobra.Command{
		Use:   "hash",
		Short: "Print the bcrypt hash of a password read from stdin, for password_hash",
		Long: `Reads a password from stdin (its first line, without the line break) and
prints its bcrypt hash, which is what a user's password_hash in a pipeline's
security section or a users file holds: the password itself is never written
into YAML.

  ferry user hash < secret.txt
  printf '%s' "$PASSWORD" | ferry user hash`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cost < bcrypt.MinCost || cost > security.MaxHashCost {
				return &exitError{code: 2, msg: fmt.Sprintf("--cost must be between %d and %d, got %d", bcrypt.MinCost, security.MaxHashCost, cost)}
			}
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			password := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			if password == "" {
				return &exitError{code: 2, msg: "no password on stdin"}
			}
			hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
			if err != nil {
				// bcrypt refuses passwords over 72 bytes.
				return &exitError{code: 2, msg: err.Error()}
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(hash))
			return nil
		},
	}
	cmd.Flags().IntVar(&cost, "cost", bcrypt.DefaultCost, "bcrypt cost (each step doubles the time a check takes)")
	return cmd
}
