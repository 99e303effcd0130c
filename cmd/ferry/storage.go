package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/plugins/storage/file"
)

func init() { rootCmd.AddCommand(newStorageCmd()) }

func newStorageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "storage", Short: "Inspect a file store on disk"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check DIR",
		Short: "Check every record, header and index of a file store (read-only)",
		Long: `check reads a file store (storage plugin "file") without changing it: every
segment's header, every record's CRC and its queue offset, and every sealed
segment's index file against the log. DIR is the store directory or the
node's data_dir holding storage-file/.

It prints a report per segment and per queue, and what the store does with
each problem when it opens: a damaged header is rebuilt from the file name,
damaged records that valid ones follow are skipped (their offsets stay
unused and are read as CORRUPT), a torn tail of the newest segment is cut.
The exit status is 0 when nothing is wrong, 1 when something is, 2 when the
directory cannot be read. It can run while a broker has the store open; the
newest segment may then be changing as it is read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := file.Check(args[0])
			if err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			r.Write(cmd.OutOrStdout())
			if !r.OK() {
				return &exitError{code: 1, msg: fmt.Sprintf("storage check: %d problem(s) in %s", r.Problems(), r.Dir)}
			}
			return nil
		},
	})
	return cmd
}
