package config

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ferrymq/ferry/core/sdk"
	"github.com/ferrymq/ferry/core/stage"
)

// PluginValidator checks plugin types and plugin config sections. The plugin
// host implements it: it launches the plugin and asks it over RPC. Its
// methods are called from one goroutine, one plugin section at a time.
type PluginValidator interface {
	// Known reports whether a plugin of kind ("storage", "transport",
	// "replication", "stage") and type exists (built in or found in dirs).
	Known(kind, typ string, dirs []string) bool
	// Types lists the known types of a kind, for problem messages.
	Types(kind string, dirs []string) []string
	// ValidateConfig asks the plugin to check its config section (JSON).
	// Problem paths are relative to the section. An error means the plugin
	// could not be asked (it failed to start, the call failed).
	ValidateConfig(ctx context.Context, kind, typ string, dirs []string, configJSON []byte) ([]sdk.Problem, error)
}

// pluginKinds are the plugin kinds of a pipeline, in the order
// ValidatePlugins checks them.
var pluginKinds = []string{"storage", "transport", "replication"}

// ValidatePlugins checks p's plugin sections with v: that each type exists
// (listing the known ones when it does not) and that each plugin accepts its
// config section. Problems carry full key paths
// ("plugins.storage.config.segment_bytes") and, for a pipeline from Load, the
// line of the key where the file has it. A section without a type, or whose
// type or config could not be decoded, is skipped: Load reports it.
func ValidatePlugins(ctx context.Context, p *Pipeline, v PluginValidator) Problems {
	src := p.src
	if src == nil {
		src = newSource(p.File)
	}
	var ps Problems
	for _, kind := range pluginKinds {
		ref := p.Plugins.ref(kind)
		base := "plugins." + kind
		if ref.Type == "" || src.failed(base+".type") || src.failed(base+".config") {
			continue // Load reports these; checking the default type would mislead
		}
		if !PluginTypeRule.MatchString(ref.Type) {
			// Never looked up, let alone run: it could name a file
			// anywhere. Load reports it.
			if p.src == nil {
				ps = append(ps, src.problem(base+".type", fmt.Sprintf("must be a plugin type name of lowercase letters, digits and '_', never a path; got %q", ref.Type)))
			}
			continue
		}
		if !v.Known(kind, ref.Type, p.Plugins.Dirs) {
			msg := fmt.Sprintf("unknown %s plugin type %q", kind, ref.Type)
			if known := v.Types(kind, p.Plugins.Dirs); len(known) > 0 {
				msg += " (known: " + strings.Join(known, ", ") + ")"
			}
			msg += fmt.Sprintf("; an external plugin is an executable named ferry-%s-%s in plugins.dirs %s", kind, ref.Type, lookedFor(kind, ref.Type, p.Plugins.Dirs))
			ps = append(ps, src.problem(base+".type", msg))
			continue
		}
		section := ref.Config
		if section == nil {
			section = map[string]any{}
		}
		js, err := json.Marshal(section)
		if err != nil {
			ps = append(ps, src.problem(base+".config", "cannot be passed to the plugin: "+err.Error()))
			continue
		}
		found, err := v.ValidateConfig(ctx, kind, ref.Type, p.Plugins.Dirs, js)
		if err != nil {
			ps = append(ps, src.problem(base+".type", fmt.Sprintf("%s plugin %q could not check its config: %v", kind, ref.Type, err)))
			continue
		}
		for _, f := range found {
			ps = append(ps, src.problem(joinPath(base+".config", f.Path), f.Message))
		}
	}
	ps = append(ps, validateStagePlugins(ctx, p, src, v)...)
	return sortProblems(ps)
}

// validateStagePlugins checks the stage plugins the flows name (stages of
// type plugin): that ferry-stage-TYPE is in plugins.dirs, and that the
// plugin accepts its config section (config.config). A stage whose section
// has problems of its own is skipped: Load reports them.
func validateStagePlugins(ctx context.Context, p *Pipeline, src *source, v PluginValidator) Problems {
	var ps Problems
	for i, f := range p.Flows {
		for j, s := range f.Stages {
			at := indexPath(indexPath("flows", i)+".stages", j)
			if s.Type != "plugin" || src.failed(at+".config") {
				continue
			}
			c, bad := stage.DecodePluginStage(s.Config)
			if bad != nil {
				continue
			}
			if !v.Known(sdk.KindStage, c.Plugin, p.Plugins.Dirs) {
				ps = append(ps, src.problem(at+".config.plugin", fmt.Sprintf("stage plugin %q not found: no executable ferry-%s-%s in plugins.dirs %s",
					c.Plugin, sdk.KindStage, c.Plugin, lookedFor(sdk.KindStage, c.Plugin, p.Plugins.Dirs))))
				continue
			}
			section := c.Config
			if section == nil {
				section = map[string]any{}
			}
			js, err := json.Marshal(section)
			if err != nil {
				ps = append(ps, src.problem(at+".config.config", "cannot be passed to the plugin: "+err.Error()))
				continue
			}
			found, err := v.ValidateConfig(ctx, sdk.KindStage, c.Plugin, p.Plugins.Dirs, js)
			if err != nil {
				ps = append(ps, src.problem(at+".config.plugin", fmt.Sprintf("stage plugin %q could not check its config: %v", c.Plugin, err)))
				continue
			}
			for _, pr := range found {
				ps = append(ps, src.problem(joinPath(at+".config.config", pr.Path), pr.Message))
			}
		}
	}
	return ps
}

// lookedFor names the files an external plugin was looked for in, for a
// problem message: "(looked for /opt/ferry/ferry-stage-x, …)". Relative
// plugin directories resolve against the working directory, as the plugin
// host resolves them.
func lookedFor(kind, typ string, dirs []string) string {
	if len(dirs) == 0 {
		return "(plugins.dirs is empty: no directory to look in)"
	}
	files := make([]string, len(dirs))
	for i, d := range dirs {
		f := filepath.Join(d, "ferry-"+kind+"-"+typ)
		if abs, err := filepath.Abs(f); err == nil {
			f = abs
		}
		files[i] = f
	}
	return "(looked for " + strings.Join(files, ", ") + ")"
}

// ref returns the plugin reference of a kind.
func (p *Plugins) ref(kind string) PluginRef {
	switch kind {
	case "storage":
		return p.Storage
	case "transport":
		return p.Transport
	case "replication":
		return p.Replication
	}
	return PluginRef{}
}
