package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferrymq/ferry/core/config"
	"github.com/ferrymq/ferry/core/pluginhost"
	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/plugins/builtin"
)

// builtins is the registry of the plugins compiled into this binary.
func builtins() *pluginhost.Registry { return builtin.Registry() }

// replicationNone is the replication type that needs no plugin process.
const replicationNone = "none"

func init() { rootCmd.AddCommand(newPluginCmd()) }

// newPluginCmd returns `ferry plugin`.
func newPluginCmd() *cobra.Command {
	pluginCmd := &cobra.Command{Use: "plugin", Short: "Work with plugins"}
	pluginCmd.AddCommand(&cobra.Command{
		Use:   "serve KIND/TYPE",
		Short: "Serve a built-in plugin (run by the plugin host, not by hand)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			kind, typ, ok := strings.Cut(args[0], "/")
			f := builtins().Builtin(kind, typ)
			if !ok || f == nil {
				return fmt.Errorf("no built-in plugin %q", args[0])
			}
			opts := sdk.ServeOpts{}
			impl := f()
			installFaults(impl)
			switch p := impl.(type) {
			case sdk.Storage:
				opts.Storage = p
			case sdk.Transport:
				opts.Transport = p
			case sdk.Replication:
				opts.Replication = p
			default:
				return fmt.Errorf("built-in plugin %q has no servable kind", args[0])
			}
			sdk.Serve(opts)
			return nil
		},
	})
	pluginCmd.AddCommand(newPluginTestCmd())
	return pluginCmd
}

// pluginValidator checks plugin types and config sections for `ferry
// validate`, asking each plugin over RPC in its own process.
type pluginValidator struct {
	reg *pluginhost.Registry
}

func newPluginValidator() config.PluginValidator { return &pluginValidator{reg: builtins()} }

func (v *pluginValidator) Known(kind, typ string, dirs []string) bool {
	if kind == sdk.KindReplication && typ == replicationNone {
		return true
	}
	return v.reg.Known(kind, typ, dirs)
}

func (v *pluginValidator) Types(kind string, dirs []string) []string {
	if kind == sdk.KindReplication {
		return append([]string{replicationNone}, v.reg.Types(kind, dirs)...)
	}
	return v.reg.Types(kind, dirs)
}

func (v *pluginValidator) ValidateConfig(ctx context.Context, kind, typ string, dirs []string, configJSON []byte) ([]sdk.Problem, error) {
	if kind == sdk.KindReplication && typ == replicationNone {
		if s := strings.TrimSpace(string(configJSON)); s != "" && s != "null" && s != "{}" {
			return []sdk.Problem{{Message: "replication type none takes no config"}}, nil
		}
		return nil, nil
	}
	host, err := pluginhost.New(v.reg, pluginhost.Options{Dirs: dirs, Logger: quietLogger()})
	if err != nil {
		return nil, err
	}
	defer host.Close()
	return host.Validate(ctx, kind, typ, configJSON)
}
